"""Where a run's nnsight traces execute: here, on NDIF, or on a self-hosted nnsight server.

Recipes are trace programs, so moving them is a trace option: nnsight's `trace(..., remote=...)`
serializes the body of the `with model.trace(...)` block (its source plus the values it
references; the model itself travels as a key) and runs it where the model lives. The runner asks
`remote_trace_kwargs` once and `route_traces` binds the answer to the model wrapper's `trace`, so
an engine that calls `model.trace(**inputs)` needs no change to run remotely.

`--serve local` runs every trace through `ServerSimulation`: what a server does, in this process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import io
import linecache
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flowtrace.errors import FlowtraceError
from flowtrace.models import HUB_ID

if TYPE_CHECKING:
    from flowtrace.models import LoadedModel

SIMULATED = "local"  # --serve local: the server's side of a request, run in this process
# What an NDIF server has installed besides the standard library and nnsight's own dependencies
# (the list nnsight's LocalSimulationBackend keeps importable).
SERVER_MODULES = frozenset(
    {"torch", "numpy", "transformers", "accelerate", "diffusers", "einops", "peft", "nnsight"}
)
# Our own package is never on a server, even when it is pip-installed here.
PROJECT_MODULES = frozenset({"flowtrace"})


class NotServable(FlowtraceError, ModuleNotFoundError):
    """A trace body needs a module a server does not have (shown as one line by the CLI)."""


def remote_trace_kwargs(options: Any) -> tuple[dict[str, Any], str]:
    """The `model.trace(...)` options for `--remote` / `--serve`, and a label for provenance.
    `options`: the run's options (their `remote`, `serve` and `model`; pipeline.options.RunOptions).

    The label names where the traces ran (never the API key, which nnsight reads itself from
    NDIF_API_KEY or its own config file).
    """
    if not options.remote and options.serve is None:
        return {}, "local"
    if options.remote and options.serve is not None:
        raise FlowtraceError("--remote and --serve: choose one (NDIF, or your own server)")
    if options.executor != "serial":
        raise FlowtraceError(
            f"--executor {options.executor} with --remote/--serve: the server runs the model, so "
            "there are no local GPUs to shard over; drop --executor"
        )
    if options.serve == SIMULATED:
        return {"remote": SIMULATED}, "simulated-server"
    _check_hub_model(options.model, "--remote" if options.remote else f"--serve {options.serve}")
    if options.serve is not None:
        if not options.serve.startswith(("http://", "https://")):
            raise FlowtraceError(
                f"--serve {options.serve}: give the server's URL, e.g. http://gpu-box:5001 "
                "(or 'local' to simulate a server in this process)"
            )
        return {"remote": options.serve.rstrip("/")}, f"serve:{options.serve.rstrip('/')}"
    from nnsight import CONFIG

    if not CONFIG.API.APIKEY:
        raise FlowtraceError(
            "--remote: no NDIF API key; export NDIF_API_KEY=<your key> (from login.ndif.us) or "
            "store it once with python -c 'import nnsight; "
            'nnsight.CONFIG.set_default_api_key("<your key>")\''
        )
    return {"remote": True}, f"ndif:{CONFIG.API.HOST}"


def route_traces(loaded: LoadedModel, trace_kwargs: dict[str, Any]) -> None:
    """Make every `loaded.nnsight.trace(...)` run with `trace_kwargs`; `{}` restores local runs.

    Bound with functools.partial on the wrapper instance: a partial adds no Python frame, and
    nnsight finds the traced block by walking back from its `trace` call to the caller's frame.
    """
    wrapper = loaded.nnsight
    wrapper.__dict__.pop("trace", None)
    if not trace_kwargs:
        return
    if trace_kwargs.get("remote") == SIMULATED:
        trace_kwargs = {"backend": ServerSimulation(wrapper)}
    wrapper.trace = functools.partial(type(wrapper).trace, wrapper, **trace_kwargs)


def _check_hub_model(model: str, flag: str) -> None:
    # A server loads checkpoints by Hugging Face id; a local folder or the toy has no such name.
    if model == "toy" or Path(model).expanduser().exists() or not HUB_ID.match(model):
        raise FlowtraceError(
            f"{flag}: --model {model} is not a Hugging Face id; a server can only run a model it "
            "hosts, named by its id (e.g. --model llava-hf/LLaVA-NeXT-Video-7B-hf). "
            "To check a recipe against the remote path with a local model, use --serve local"
        )


class ServerSimulation:
    """An nnsight backend that plays both sides of a remote request in this process.

    nnsight's own `remote="local"` serializes the trace and deserializes it with local modules
    hidden, then runs the block against the caller's live objects. Two things a real server does
    differently slipped through it in our checks, so this backend does them as a server would:
    - modules of this project cannot be imported while the request is rebuilt, even where
      flowtrace is pip-installed (an editable install stays importable through its finder);
    - the rebuilt block runs on its own deserialized copies of the values it references, and
      only top-level variables marked with `.save()` come back (through torch.save, as a
      server's response does): a tensor saved into a list made outside the block is lost on a
      real server, and here too.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, tracer: Any) -> None:
        from nnsight.ndif import pull_env
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.tracer import _saves, save
        from nnsight.tracing.util import push

        pull_env()  # register local modules to travel by value, as the remote path does
        blob = RequestModel.serialize(tracer, compress=True)
        persistent = self.model._remoteable_persistent_objects()
        # deserialize() writes the block's source into linecache under the caller's file name:
        # keep the caller's real entry, as a separate server process would.
        filename = tracer.info.frame.f_code.co_filename
        kept = linecache.cache.get(filename)
        try:
            with _server_imports():
                request = RequestModel.deserialize(blob, persistent, compress=True)
        except ModuleNotFoundError as err:
            raise NotServable(
                f"--serve local: a trace in {filename} cannot run on a server: {err}",
                name=err.name,
            ) from None
        finally:
            if kept is not None:
                linecache.cache[filename] = kept
            else:
                linecache.cache.pop(filename, None)
        request.execute(request.info.code)
        # The block pushed its saved values into the rebuilt frame; send back those only.
        frame = request.info.frame.f_locals
        saved = {name: value for name, value in frame.items() if id(value) in _saves()}
        result = _over_the_wire(saved)
        for value in result.values():
            save(value)
        push(tracer.info.frame, result)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # route_traces binds this backend on the wrapper, so it sits in the wrapper's pickled
        # state; a server never calls it, and our class does not exist there: send a label.
        return (str, ("flowtrace server simulation",))


def _over_the_wire(values: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(values, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


class _ProjectBlocker(importlib.abc.MetaPathFinder):
    """Refuses to import this project's modules, the way a server without them would."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in PROJECT_MODULES:
            raise ModuleNotFoundError(
                f"no module {name!r} there; a trace body may hold only the model's modules, "
                "tensors and plain values: compute anything from flowtrace before the block "
                "(docs/scale.md, Remote)",
                name=name,
            )
        return None


@contextlib.contextmanager
def _server_imports() -> Iterator[None]:
    """Only what a server has: hide every other loaded module, block the project's own."""
    hidden = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if (root := name.split(".")[0]) not in SERVER_MODULES
        and root not in sys.stdlib_module_names
        and "nnsight" not in name
    }
    blocker = _ProjectBlocker()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        # A module imported anew while hidden must not replace the one the process runs on.
        sys.modules.update(hidden)
