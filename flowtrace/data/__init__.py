"""Datasets -> Samples -> frames: benchmark readers, reference frame sampling, synthetic QA."""

from flowtrace.data.reader import (
    READERS,
    REFERENCE_SEED,
    list_tasks,
    read_samples,
    subsample,
    task_counts,
    validate_sample,
)
from flowtrace.data.sample import FrameRule, Sample, SampleError
from flowtrace.data.sources import KINDS, DataSource, config_path, parse_data
from flowtrace.data.video import read_frames, sample_frames, segment_indices, stride_indices

__all__ = [
    "KINDS",
    "READERS",
    "REFERENCE_SEED",
    "DataSource",
    "FrameRule",
    "Sample",
    "SampleError",
    "config_path",
    "list_tasks",
    "parse_data",
    "read_frames",
    "read_samples",
    "sample_frames",
    "segment_indices",
    "stride_indices",
    "subsample",
    "task_counts",
    "validate_sample",
]
