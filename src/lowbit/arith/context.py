"""``lb.precision(...)``: a context that sets the format and rounding of lowbit operations.

Inside the context every lowbit operation called without an explicit format uses the
context's; stochastic modes draw from one counter-based stream that advances by the number of
elements each operation rounds, so consecutive operations never reuse a draw and a rerun with
the same seed reproduces every bit.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lowbit.formats import Format, get_element_format
from lowbit.rounding.api import resolve_policy
from lowbit.rounding.modes import RoundMode, as_mode


@dataclass
class PrecisionContext:
    """The active arithmetic settings (``offset`` is the next unused random-draw index)."""

    fmt: Format
    mode: RoundMode = RoundMode.RNE
    seed: int = 0
    subnormals: bool = True
    overflow: str | None = None
    rand_bits: int | None = None
    offset: int = field(default=0)

    def take(self, n: int) -> int:
        """Reserve ``n`` draws; returns the first index."""
        start = self.offset
        self.offset += int(n)
        return start


_ACTIVE: contextvars.ContextVar[PrecisionContext | None] = contextvars.ContextVar(
    "lowbit_precision", default=None
)


def current() -> PrecisionContext | None:
    """The innermost active context, or ``None``."""
    return _ACTIVE.get()


@contextmanager
def precision(
    fmt: Format | str,
    mode: RoundMode | str = "rne",
    *,
    seed: int = 0,
    subnormals: bool = True,
    overflow: str | None = None,
    rand_bits: int | None = None,
) -> Iterator[PrecisionContext]:
    """Run lowbit operations in ``fmt`` with ``mode`` (nested contexts override outer ones).

    Example:
        >>> import lowbit as lb
        >>> with lb.precision("fp16"):
        ...     float(lb.arith.add(1.0, 2.0**-11))   # the tie 1 + 2^-11 rounds to even: 1.0
        1.0
    """
    f = get_element_format(fmt)
    resolve_policy(f, mode, overflow, subnormals, rand_bits)  # validate eagerly
    ctx = PrecisionContext(f, as_mode(mode), int(seed), subnormals, overflow, rand_bits)
    token = _ACTIVE.set(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.reset(token)
