"""Datasets: in-memory arrays, deterministic batch schedules, built-in and user data."""

from flowmatch.data.batch import ArrayDataset, Batch, BatchSchedule, Standardizer

__all__ = ["ArrayDataset", "Batch", "BatchSchedule", "Standardizer"]
