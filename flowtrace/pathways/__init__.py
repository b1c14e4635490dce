"""Effective pathways: derived from a flow map (derive), searched and selected on held-out
samples (discovery, selection, find_pathway, frontier, cells), attributed (attribution)."""
