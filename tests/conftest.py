"""Shared test setup: make ``tests/oracle.py`` importable as ``oracle`` from every test folder,
and run torch with one intra-op thread."""

import os
import sys
from collections.abc import Iterator

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The suite runs two workers on two cores; the tests' tensors are small, and
    oversubscribed torch threads made them up to ten times slower."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
