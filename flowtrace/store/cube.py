"""A sample's row of a cube in memory: plain numpy arrays, stacked into an xarray Dataset once.

Measures fill a `SampleRecord` (no xarray in the hot path); the store stacks the records of a
flush into one Dataset along `sample`, with the `Schema` the measure declared: each variable's dims
after `sample`, its dtype and fill, and the coordinates that are the same for every sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

SAMPLE = "sample"

# Per-sample coordinates every cube carries, in this order, with their empty value.
SAMPLE_COORDS: dict[str, object] = {
    "task": "",
    "video": "",
    "question": "",
    "candidates": "[]",
    "answer": "",
    "answer_letter": "",
    "clean_pred": "",
    "clean_correct": False,
    "status": "failed",
    "engine": "",  # the knockout path that ran: fast, reference or both
    "engine_note": "",  # why the fast engine fell back to the reference path, if it did
    "reason": "",
}


@dataclass(frozen=True)
class Variable:
    dims: tuple[str, ...]  # after `sample`
    dtype: str  # numpy dtype name, or "str"
    fill: object  # the value of an unmeasured cell


@dataclass
class Schema:
    """What one kind of measure writes per sample."""

    variables: dict[str, Variable]
    coords: dict[str, Sequence[object]] = field(default_factory=dict)  # non-sample dims
    # False while a measure still learns its variables from the samples (a trace program before
    # its first result): the store holds such records back rather than fix the arrays too soon.
    complete: bool = True

    def sizes(self) -> dict[str, int]:
        return {name: len(values) for name, values in self.coords.items()}

    def shape(self, name: str) -> tuple[int, ...]:
        sizes = self.sizes()
        return tuple(sizes[d] for d in self.variables[name].dims)

    def empty(self, sample_id: str) -> SampleRecord:
        values = {}
        for name, var in self.variables.items():
            dtype = object if var.dtype == "str" else np.dtype(var.dtype)
            values[name] = np.full(self.shape(name), var.fill, dtype=dtype)
        return SampleRecord(sample_id, dict(SAMPLE_COORDS), values)


@dataclass
class SampleRecord:
    """One sample: its per-sample coordinates and its variables without the sample dim."""

    id: str
    coords: dict[str, object]
    values: dict[str, np.ndarray]
    # The schema its values follow, where the measure learns it from the samples (a trace
    # program); it travels with the record to a store in another process.
    schema: Schema | None = None

    @property
    def status(self) -> str:
        return str(self.coords["status"])


CLEAN_VARIABLES = {
    "clean_prob_pred": Variable((), "float32", np.nan),
    "clean_prob_true": Variable((), "float32", np.nan),
}


def stack(records: Sequence[SampleRecord], schema: Schema | None) -> xr.Dataset:
    """The records as one Dataset along `sample` (strings as variable-length objects). A record
    without a variable (a sample that failed before a trace program's first result) holds its
    fill value there."""
    schema = next((r.schema for r in reversed(records) if r.schema is not None), schema)
    data = {}
    for name, var in schema.variables.items():
        dtype = object if var.dtype == "str" else np.dtype(var.dtype)
        empty = np.full(schema.shape(name), var.fill, dtype=dtype)
        values = np.stack([r.values.get(name, empty) for r in records])
        data[name] = ((SAMPLE, *var.dims), values)
    coords: dict[str, object] = {SAMPLE: np.asarray([r.id for r in records], dtype=object)}
    for name, empty in SAMPLE_COORDS.items():
        dtype = bool if isinstance(empty, bool) else object
        coords[name] = (SAMPLE, np.asarray([r.coords[name] for r in records], dtype=dtype))
    for name, values in schema.coords.items():
        values = np.asarray(values)
        coords[name] = values.astype(object) if values.dtype.kind in "UO" else values
    return xr.Dataset(data, coords=coords)
