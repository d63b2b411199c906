"""Run these tests' numba kernels on one thread.

The reference loops call ``lb.arith`` once per scalar; a ``parallel=True`` kernel launch per
call costs milliseconds on a loaded 2-core machine (pytest-xdist already uses both cores).
"""

from collections.abc import Iterator

import pytest

from lowbit.arith._emulate import serial_kernels


@pytest.fixture(autouse=True)
def _one_numba_thread() -> Iterator[None]:
    with serial_kernels():
        yield
