"""Trace programs as a kind: each sample's `Trace` run through the program, its result checked
and recorded; a program that raises or returns what the store cannot hold fails that sample."""

from __future__ import annotations

import functools
import inspect
import linecache
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from flowtrace.data import Sample, SampleError
from flowtrace.engine import ReferenceEngine
from flowtrace.interventions import (
    Grid,
    as_conditions,
)
from flowtrace.kinds.common import Clean, Plan, Step
from flowtrace.kinds.declarations import TraceProgram
from flowtrace.kinds.trace import Trace
from flowtrace.models import LoadedModel, Prepared
from flowtrace.store.cube import CLEAN_VARIABLES, SAMPLE, SAMPLE_COORDS, Schema, Variable
from flowtrace.tokens.sweep import Sweep

# Names a program's result may not take: the cube's own per-sample coordinates and variables.
RESERVED = frozenset({SAMPLE, *SAMPLE_COORDS, *CLEAN_VARIABLES, "coords"})


# float32 holds every integer up to this exactly.
FLOAT32_EXACT = 2**24


class ProgramMeasure:
    """Runs a trace program per sample; its first sample fixes the arrays' dims, sizes and
    dtypes. A program that raises, or returns what the store cannot hold, fails that sample
    alone, with the reason."""

    def __init__(
        self,
        recipe: TraceProgram,
        loaded: LoadedModel,
        frames: int,
        samples: Sequence[Sample],
        seed: int,
        sweep: Sweep | None = None,
    ) -> None:
        """`samples`: every sample of the data, the pool counterfactual donors come from;
        `sweep`: the run's layer sweep (`Trace.window`)."""
        self.recipe, self.loaded, self.frames = recipe, loaded, frames
        self.samples, self.seed, self.sweep = list(samples), seed, sweep or Sweep()
        # Filled in place by the first sample, so stores holding this schema see it grow.
        self.schema = Schema(
            dict(CLEAN_VARIABLES), {k: list(v) for k, v in recipe.coords.items()}, complete=False
        )

    def plan(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Plan:
        """A program written as a generator runs here up to its `yield`: the conditions it
        yields join the pass's batch (and the next sample may start while they run). Any other
        program runs whole in `fill`."""
        if not yields(self.recipe.program):
            return Plan(fill_runs_model=True)
        trace = self._trace(prepared, sample, clean, engine)
        steps = self.recipe.program(trace)
        more, value = self._advance(steps, None)
        if not more:  # returned before any yield
            return Plan(context=(trace, None, value), fill_runs_model=False)
        laid = self._laid(value)
        knockouts = self._guard(lambda: trace.conditions(laid))
        return Plan(knockouts, (trace, steps, laid), fill_runs_model=False)

    def _trace(
        self, prepared: Prepared, sample: Sample, clean: Clean, engine: ReferenceEngine
    ) -> Trace:
        return Trace(
            sample=sample,
            inputs=prepared.inputs,
            layout=prepared.layout,
            loaded=self.loaded,
            answer_id=clean.pred,
            true_id=clean.true_id,
            clean_probs=clean.probs,
            frame_count=self.frames,
            seed=self.seed,
            engine=engine,
            others=self.samples,
            sweep=self.sweep,
        )

    def run_on(self, trace: Trace) -> Any:
        """The program on one sample's trace, start to end (what it yields runs at once), as
        the pass would record it: a notebook's or a test's way in."""
        if not yields(self.recipe.program):
            return self._guard(lambda: self.recipe.program(trace))
        steps = self.recipe.program(trace)
        return self._finish(trace, steps, *self._advance(steps, None))

    def _result(self, step: Step) -> Any:
        """The program's result for this sample: a plain program run whole; a generator sent
        the outcome of what it yielded to the pass."""
        if step.plan is None or step.plan.context is None:
            return self.run_on(self._trace(step.prepared, step.sample, step.clean, step.engine))
        trace, steps, laid = step.plan.context
        if steps is None:
            return laid  # the value returned before any yield
        # The pass's engine may hold the next sample by now: later runs get one of their own.
        trace.engine = None
        probs = step.probs if step.probs is not None else torch.zeros(0, 1)
        return self._finish(trace, steps, *self._advance(steps, trace.outcome(laid, probs)))

    def _finish(self, trace: Trace, steps: Any, more: bool, value: Any) -> Any:
        """Run each further yield at once until the program returns; its result."""
        while more:
            asked = self._laid(value)
            outcome = self._guard(lambda asked=asked: trace.run(asked))
            more, value = self._advance(steps, outcome)
        return value

    def _laid(self, asked: Any) -> Grid:
        if asked is None:
            raise SampleError(
                f"trace program {self.recipe.name} yielded None; yield the conditions to run "
                "(a t.grid(...), a list of interventions or one) and read the outcome it sends "
                "back: `out = yield t.grid(...)`"
            )
        return self._guard(lambda: as_conditions(asked))

    def _advance(self, steps: Any, value: Any) -> tuple[bool, Any]:
        """Resume a generator program: (True, what it yields next) or (False, its result)."""

        def step() -> tuple[bool, Any]:
            try:
                return True, steps.send(value)
            except StopIteration as returned:  # the program's `return`: no error
                return False, returned.value

        return self._guard(step)

    def _guard(self, call: Any) -> Any:
        """`call()`, under inference mode unless the program asks for gradients; any exception
        fails this sample with the program's own line in the reason."""
        try:
            if self.recipe.gradients:
                with torch.enable_grad():
                    return call()
            with torch.inference_mode():
                return call()
        except SampleError:
            raise
        except Exception as error:  # noqa: BLE001 - a user's program: any error fails the sample
            raise SampleError(_explain(self.recipe, error)) from error

    def fill(self, step: Step) -> None:
        """Run the program on this sample (or finish it); its arrays become the record's
        values."""
        record = step.record
        out = self._result(step)
        if not isinstance(out, Mapping) or not out:
            raise SampleError(
                f"trace program {self.recipe.name} returned {type(out).__name__}; return a dict "
                '{"name": (("dim", …), array)} or {"name": labelled xarray.DataArray}'
            )
        out = dict(out)
        coords = {dim: list(labels) for dim, labels in dict(out.pop("coords", {})).items()}
        parts = {name: _parts(self.recipe.name, name, value, coords) for name, value in out.items()}
        # Everything is checked before anything is recorded: a bad result leaves no half record.
        staged = dict(self.schema.coords)
        for dim, labels in coords.items():
            labels = [str(x) if isinstance(x, str) else x for x in labels]
            known = staged.get(dim)
            if known is not None and self.schema.complete and list(known) != labels:
                raise SampleError(
                    f"trace program {self.recipe.name}: dim {dim} is labelled {labels} for this "
                    f"sample, {list(known)} for the first; labels must not change"
                )
            staged[dim] = labels
        variables = dict(self.schema.variables)
        values = {}
        for name, (dims, array) in parts.items():
            variable = variables.get(name) or _declare(self.recipe.name, name, dims, array, staged)
            if variable.dims != dims:
                raise SampleError(
                    f"trace program {self.recipe.name}: {name} has dims {dims}, the first sample "
                    f"gave {variable.dims}"
                )
            shape = tuple(len(staged[d]) for d in dims)
            if array.shape != shape:
                raise SampleError(
                    f"trace program {self.recipe.name}: {name} has shape {array.shape} for this "
                    f"sample, {shape} for the first; every sample must give the same sizes"
                )
            values[name] = _stored(self.recipe.name, name, array, variable)
            variables[name] = variable
        self.schema.coords.update(staged)
        self.schema.variables.update(variables)
        record.values.update(values)
        self.schema.complete = True
        record.schema = self.schema


def yields(program: Any) -> bool:
    """Whether a program is written as a generator (its conditions then join the pass), seen
    through `functools.partial` and a callable object's `__call__`."""
    while isinstance(program, functools.partial):
        program = program.func
    if not inspect.isfunction(program) and not inspect.ismethod(program) and callable(program):
        program = program.__call__
    return inspect.isgeneratorfunction(program)


def _explain(recipe: TraceProgram, error: BaseException) -> str:
    """One line: the error, where in the recipe's own file it rose, and what to write instead
    where the cause is a known pitfall."""
    frames = traceback.extract_tb(error.__traceback__)
    code = getattr(recipe.program, "__code__", None)
    files = {recipe.source_file.split("#", 1)[0], code.co_filename if code else ""} - {""}
    own = [f for f in frames if f.filename in files]
    where = ""
    if own:
        frame = own[-1]
        code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
        where = f" at {frame.filename.rsplit('/', 1)[-1]}, line {frame.lineno}: {code}"
    text = str(error).splitlines()[0][:300] if str(error) else ""
    line = f"trace program {recipe.name} raised {type(error).__name__}: {text}{where}"
    hint = _hint(error, text)
    return f"{line} ({hint})" if hint else line


def _hint(error: BaseException, text: str) -> str:
    if isinstance(error, UnboundLocalError) or "not defined" in text and "save" in text:
        return (
            "a value made inside `with model.trace(...)` exists after the block only if it was "
            "saved: write `x = ….save()` or `xs = nnsight.save([])` and append to it, not a list "
            "comprehension of .save() calls; or use t.run(...), which needs no save"
        )
    if isinstance(error, TypeError) and "NoneType" in text and "subscript" in text:
        return (
            "attention modules return no weights under sdpa: read t.attention_mass(...), which "
            "computes them, or declare TraceProgram(..., attn='eager')"
        )
    if isinstance(error, RuntimeError) and "inference tensor" in text.lower():
        return "programs run under torch.inference_mode: declare TraceProgram(..., gradients=True)"
    if isinstance(error, RuntimeError) and "does not require grad" in text:
        return "programs run without gradients: declare TraceProgram(..., gradients=True)"
    return ""


def _declare(
    program: str,
    name: str,
    dims: tuple[str, ...],
    array: np.ndarray,
    coords: dict[str, list],
) -> Variable:
    """The variable a first result declares; numbered labels for dims the recipe left bare."""
    if name in RESERVED:
        raise SampleError(
            f"trace program {program}: a result may not be named {name!r} (the store's own "
            "per-sample field); rename it"
        )
    for dim, size in zip(dims, array.shape, strict=True):
        labels = coords.get(dim)
        if labels is None:  # numbered (a `layer` dim: the layer numbers)
            coords[dim] = list(range(size))
        elif len(labels) != size:
            raise SampleError(
                f"trace program {program}: {name}'s dim {dim} has {size} entries but its "
                f"coords name {len(labels)}"
            )
    kind = array.dtype.kind
    if kind == "b":
        return Variable(dims, "bool", False)
    if kind in "iu":
        return Variable(dims, "int64", -1)
    if kind in "USO":
        return Variable(dims, "str", "")
    if kind == "f":
        return Variable(dims, "float32", np.nan)
    raise SampleError(
        f"trace program {program}: {name} holds {array.dtype} values, which a store cannot "
        "hold; return floats, integers, booleans or strings"
    )


def _stored(program: str, name: str, array: np.ndarray, variable: Variable) -> np.ndarray:
    """`array` as the variable's dtype, refused where that would change a value."""

    def refuse(what: str) -> SampleError:
        return SampleError(
            f"trace program {program}: {name} is {variable.dtype} (its first sample's), but this "
            f"sample gives {what}; return one dtype for every sample"
        )

    kind = array.dtype.kind
    if variable.dtype == "str":
        if kind == "O" and not all(isinstance(x, str) for x in array.flat):
            raise refuse("objects that are not strings")
        if kind not in "USO":
            raise refuse(str(array.dtype))
        return array.astype(object)
    if kind in "USO":
        raise refuse("strings")
    if variable.dtype == "bool":
        if kind != "b" and not np.isin(array, (0, 1)).all():
            raise refuse(f"{array.dtype} values other than 0 and 1")
        return array.astype(bool)
    if variable.dtype == "int64":
        if kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise refuse("fractional or non-finite numbers")
        return array.astype(np.int64)
    if kind in "iu" and np.abs(array).max(initial=0) > FLOAT32_EXACT:
        raise refuse("integers too large for float32")
    return array.astype(np.float32)


def _parts(
    program: str, name: str, value: object, coords: dict[str, list]
) -> tuple[tuple[str, ...], np.ndarray]:
    """A result as (dims, numpy array); a DataArray brings its own dims and labels."""
    if isinstance(value, xr.DataArray):
        for dim in value.dims:
            if dim in value.coords and dim not in coords:
                coords[str(dim)] = list(value.coords[dim].values.tolist())
        dims, array = tuple(str(d) for d in value.dims), value.values
    else:
        try:
            dims, array = value  # type: ignore[misc]
            dims = (dims,) if isinstance(dims, str) else tuple(dims)
        except (TypeError, ValueError):
            raise SampleError(
                f"trace program {program}: {name} must be ((dim, …), array) or an "
                f"xarray.DataArray, got {type(value).__name__}"
            ) from None
    if isinstance(array, torch.Tensor):
        array = array.detach()
        array = (array.float() if array.is_floating_point() else array).cpu().numpy()
    try:
        array = np.asarray(array)
    except ValueError as error:
        raise SampleError(f"trace program {program}: {name} is not an array ({error})") from None
    if array.ndim != len(dims):
        raise SampleError(
            f"trace program {program}: {name} has {array.ndim} dims but names {len(dims)} {dims}"
        )
    if SAMPLE in dims:
        raise SampleError(f"trace program {program}: {name}: the runner adds the sample dim")
    return dims, array
