"""Datasets: in-memory arrays, deterministic batch schedules, built-in and user data."""

from flowmatch.data.batch import ArrayDataset, Batch, BatchSchedule, Standardizer
from flowmatch.data.digits import digits_split_indices, load_digits
from flowmatch.data.files import (
    load_array_file,
    load_csv,
    load_image_folder,
    read_condition_file,
)
from flowmatch.data.labels import encode_labels
from flowmatch.data.registry import (
    BUILTIN_DATASETS,
    StandardizeMode,
    fit_standardizer,
    load_dataset,
    split_indices,
)
from flowmatch.data.toy import (
    CONDITIONAL_TOYS,
    TOY_DATASETS,
    TOY_NUM_CLASSES,
    sample_conditional_toy,
    sample_toy,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CONDITIONAL_TOYS",
    "TOY_DATASETS",
    "TOY_NUM_CLASSES",
    "ArrayDataset",
    "Batch",
    "BatchSchedule",
    "StandardizeMode",
    "Standardizer",
    "digits_split_indices",
    "encode_labels",
    "fit_standardizer",
    "load_array_file",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "read_condition_file",
    "sample_conditional_toy",
    "sample_toy",
    "split_indices",
]
