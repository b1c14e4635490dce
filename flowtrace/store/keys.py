"""The names of a store's attributes, in one place: provenance writes them
(pipeline.provenance), a resume compares `RESUME_KEYS`, and the readers (figures, the summary,
the report) look them up by these names. docs/cubes.md says what each holds."""

# The recipe
RECIPE = "recipe"
RECIPE_KIND = "recipe_kind"
RECIPE_TITLE = "recipe_title"
RECIPE_SOURCE = "recipe_source"
CHART = "chart"  # the figure a recipe asks for (plots.register_chart), "" for its kind's own
EDGES = "edges"
GENERATE = "generate"
EVAL_ONLY = "eval_only"
OVERLAY_LAYERS = "overlay_layers"
# The model
MODEL = "model"
MODEL_REVISION = "model_revision"
ADAPTER = "adapter"
DTYPE = "dtype"
ATTN = "attn"
FRAMES = "frames"
POOLING = "pooling"
LORA = "lora"
# The data
DATA = "data"
DATA_ROOT = "data_root"
DATA_KIND = "data_kind"
SPLIT = "split"
TASKS = "tasks"
LIMIT = "limit"
RATIO = "ratio"
SAMPLE_MODE = "sample_mode"
# The sweep
WINDOW = "window"
WINDOW_DEFAULT = "window_default"
WINDOW_STYLE = "window_style"
SWEEP = "sweep"
HEADS = "heads"
# How it ran
ENGINE = "engine"
SEED = "seed"
EXECUTOR = "executor"
TRACES = "traces"
COMPILED_LAYERS = "compiled_layers"
FORMAT = "store_format"
# Software and machine
FLOWTRACE_VERSION = "flowtrace_version"
GIT_COMMIT = "git_commit"
DEVICE = "device"
TORCH = "torch"
TRANSFORMERS = "transformers"
NNSIGHT = "nnsight"
PYTHON = "python"
CREATED = "created"

# Attributes that must match for a run to continue an existing store.
RESUME_KEYS = (
    RECIPE, RECIPE_KIND, RECIPE_SOURCE, EDGES, MODEL, MODEL_REVISION, ADAPTER, DTYPE, ATTN, DATA,
    DATA_ROOT, TASKS, LIMIT, FRAMES, POOLING, WINDOW, WINDOW_STYLE, SWEEP, SAMPLE_MODE, EVAL_ONLY,
    ENGINE, SEED, OVERLAY_LAYERS, DATA_KIND, RATIO, HEADS, GENERATE, FORMAT,
)  # fmt: skip
