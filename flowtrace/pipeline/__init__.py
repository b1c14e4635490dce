"""The run as stages a reader can follow: options settled once (options), what each recipe kind
measures (kinds), the model and engine set up per process (analysis), samples decoded ahead of
the model (prefetch), every recipe's sample in one pass (passes), and where each store's
provenance comes from (provenance). `flowtrace.runner.run` strings them together."""
