"""Argument checks shared by the model constructors."""

from __future__ import annotations

from collections.abc import Sequence


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive int (bools rejected), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: expected a positive int")
    return value


def int_tuple(name: str, value: int | Sequence[int], length: int | None = None) -> tuple[int, ...]:
    """A tuple of positive ints from an int (repeated ``length`` times) or a sequence."""
    if isinstance(value, int) and not isinstance(value, bool):
        if length is None:
            return (positive_int(name, value),)
        value = (value,) * length
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"{name}={value!r}: expected a sequence of positive ints") from None
    if length is not None and len(out) != length:
        raise ValueError(f"{name}={value!r}: expected {length} entries, got {len(out)}")
    for v in out:
        positive_int(name, v)
    return out
