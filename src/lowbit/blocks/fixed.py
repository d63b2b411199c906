"""Fixed-point quantization Q(int_bits, frac_bits): a thin wrapper over :func:`lowbit.round`.

A signed Q(i, f) value is a two's complement integer of ``1 + i + f`` bits times ``2**-f``:
the grid ``[-2**i, 2**i - 2**-f]`` in steps of ``2**-f``; unsigned drops the sign bit
(``[0, 2**i - 2**-f]``). Out-of-range results saturate to the ends of the range or wrap
modulo ``2**(bits - f)`` (two's complement overflow), as ``overflow`` says.
"""

from __future__ import annotations

from typing import Any

from lowbit.formats import FixedFormat
from lowbit.rounding.api import round as lb_round
from lowbit.rounding.modes import RoundMode

_OVERFLOWS = ("saturate", "wrap")


def quantize_fixed(
    x: Any,
    int_bits: int,
    frac_bits: int,
    *,
    signed: bool = True,
    overflow: str = "saturate",
    mode: RoundMode | str = "rne",
    seed: int | None = None,
    rand_bits: int | None = None,
) -> Any:
    """Round ``x`` onto the fixed-point grid Q(int_bits, frac_bits).

    Args:
        x: numpy array, Python float or list, torch tensor or jax array (float dtypes).
        int_bits: integer bits, sign excluded (≥ 0).
        frac_bits: fraction bits (the grid step is ``2**-frac_bits``; may be negative).
        signed: two's complement with an extra sign bit, or unsigned.
        overflow: ``"saturate"`` (clamp to the range; ±inf too) or ``"wrap"`` (two's
            complement wrap-around; ±inf become NaN).
        mode: rounding mode (any :class:`RoundMode`).
        seed: seed for stochastic modes (draws follow ``x``'s flat C order).
        rand_bits: resolution of SR draws / width of ``sr_bits`` noise.

    Returns:
        The rounded values with ``x``'s backend, dtype, shape and device (fixed point has one
        zero: ``-0`` becomes ``+0``; NaN stays NaN).

    Raises:
        ValueError: invalid widths (1..53 total bits) or ``overflow`` not in
            ``("saturate", "wrap")``.
        TypeError: non-integer widths or unsupported input.
    """
    if overflow not in _OVERFLOWS:
        raise ValueError(f"overflow={overflow!r}; accepted: 'saturate', 'wrap'")
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {signed!r}")
    fmt = FixedFormat(int_bits, frac_bits, signed)
    return lb_round(x, fmt, mode, overflow=overflow, seed=seed, rand_bits=rand_bits)


__all__ = ["quantize_fixed"]
