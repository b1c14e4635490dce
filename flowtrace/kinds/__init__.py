"""The recipe kinds: each kind's declaration (`declarations`: what a recipe file writes) and what
it measures per sample (one module per kind; `common` for what they share; `trace` for the trace
programs' `Trace`). `flowtrace.pipeline.kinds` registers each declaration's measure."""
