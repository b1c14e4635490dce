"""Datasets -> Samples -> frames: TVBench/MVBench folders, reference sampling, synthetic QA."""

from flowtrace.data.reader import list_tasks, read_samples, validate_sample
from flowtrace.data.sample import Sample, SampleError
from flowtrace.data.video import read_frames, segment_indices

__all__ = [
    "Sample",
    "SampleError",
    "list_tasks",
    "read_frames",
    "read_samples",
    "segment_indices",
    "validate_sample",
]
