"""Token groups and what a knockout cuts between them: the prompt's layout, edge expressions,
the layer sweep, and the shares of attention edges a plan keeps."""
