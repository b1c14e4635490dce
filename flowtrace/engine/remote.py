"""Where a run's nnsight traces execute: here, on NDIF, or on a self-hosted nnsight server.

Recipes are trace programs, so moving them is a trace option: nnsight's `trace(..., remote=...)`
serializes the body of the `with model.trace(...)` block (its source plus the values it
references; the model itself travels as a key) and runs it where the model lives. The runner asks
`remote_trace_kwargs` once and `route_traces` binds the answer to the model wrapper's `trace`, so
an engine that calls `model.trace(**inputs)` needs no change to run remotely.

`serve=local` runs every trace through `ServerSimulation`: what a server does, in this process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import io
import linecache
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch

from flowtrace.errors import FlowtraceError

if TYPE_CHECKING:
    from flowtrace.models import LoadedModel

SIMULATED = "local"  # serve=local: the server's side of a request, run in this process
# What an NDIF server has installed besides the standard library and nnsight's own dependencies
# (the list nnsight's LocalSimulationBackend keeps importable).
SERVER_MODULES = frozenset(
    {"torch", "numpy", "transformers", "accelerate", "diffusers", "einops", "peft", "nnsight"}
)
# Our own package is never on a server, even when it is pip-installed here.
PROJECT_MODULES = frozenset({"flowtrace"})


class NotServable(FlowtraceError, ModuleNotFoundError):
    """A trace body needs a module a server does not have (shown as one line by the CLI)."""


class TraceTarget(Protocol):
    """Where a run's traces go: its `remote` and `serve` settings (pipeline.options.RunOptions),
    checked there (`check_options`) before they come here."""

    remote: bool
    serve: str | None


def remote_trace_kwargs(target: TraceTarget) -> tuple[dict[str, Any], str]:
    """The `model.trace(...)` options for remote (NDIF) or serve (a server, or `local` simulated),
    and a label for provenance.

    The label names where the traces ran (never the API key, which nnsight reads itself from
    NDIF_API_KEY or its own config file).
    """
    if not target.remote and target.serve is None:
        return {}, "local"
    if target.serve == SIMULATED:
        return {"remote": SIMULATED}, "simulated-server"
    if target.serve is not None:
        return {"remote": target.serve.rstrip("/")}, f"serve:{target.serve.rstrip('/')}"
    from nnsight import CONFIG

    if not CONFIG.API.APIKEY:
        raise FlowtraceError(
            "remote=True: no NDIF API key; export NDIF_API_KEY=<your key> (from login.ndif.us) or "
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
                f"serve=local: a trace in {filename} cannot run on a server: {err}",
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
