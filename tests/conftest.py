"""Test-wide settings: one CPU thread (CI has 2 cores and runs tests in one process)."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("FLOWMATCH_CACHE", os.path.join(os.path.dirname(__file__), ".cache"))


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator."""
    return torch.Generator().manual_seed(0)
