"""The three floating-point formats of Lee, Sharma & Aiken (HFP8-style, Sun et al. 2019).

The paper simulates its formats with a patched QPyTorch (``FP_e_m_b``: ``e`` exponent bits, ``m``
mantissa bits, an *extra* exponent bias ``b`` that scales every value by ``2**-b``) in which
no code is reserved for inf/NaN: the all-ones exponent holds finite values. In lowbit terms
that is ``FloatFormat(e, m, bias=2**(e-1) - 1 + b, special="none")``:

==========  ==========================  =====  =============================  ================
name        lowbit format               bits   max finite                     used for
==========  ==========================  =====  =============================  ================
fp_6_9      ``FloatFormat(6, 9, 31)``   16     2^32·(2 − 2^-9) ≈ 8.6e9        high precision
fp_4_3_4    ``FloatFormat(4, 3, 11)``   8      2^4·(2 − 2^-3) = 30            low P and Y
fp_5_2      ``FloatFormat(5, 2, 15)``   8      2^16·(2 − 2^-2) = 114688       low GY
==========  ==========================  =====  =============================  ================

``fp_4_3_4`` is the standard 1-4-3 format (bias 7, no inf/NaN) times ``2**-4``: it holds 1.0
exactly, its smallest normal is ``2**-10`` and its largest value 30. The extra bias moves the
range down to where weights and activations live.

The formats are added to the lowbit registry on import (names ``fp_6_9``, ``fp_4_3_4``,
``fp_5_2`` and the repository's spellings ``FP_6_9_0``, ``FP_4_3_4``, ``FP_5_2_0``, any case),
so that :class:`lowbit.nn.QuantConfig` accepts them by name.

:func:`overflow_threshold` is the smallest magnitude that round-to-nearest-even carries past
the largest finite value (the paper's overflow threshold: 31 for ``fp_4_3_4``): the midpoint
between the largest value and the next power of two, where the tie goes to the even
neighbour, which is outside the format.
"""

from __future__ import annotations

from fractions import Fraction

from lowbit.formats import FloatFormat, register_format
from lowbit.formats import get_format as _get_format

#: high precision: every tensor that is not demoted (16 bits)
HIGH = FloatFormat(6, 9, bias=31, special="none", name="fp_6_9")
#: low precision of weights (P) and activations (Y): 1-4-3 with extra exponent bias 4
LOW = FloatFormat(4, 3, bias=11, special="none", name="fp_4_3_4")
#: low precision of activation gradients (GY): 1-5-2
LOW_GRAD = FloatFormat(5, 2, bias=15, special="none", name="fp_5_2")

FORMATS: dict[str, FloatFormat] = {f.name: f for f in (HIGH, LOW, LOW_GRAD)}
_ALIASES = {"fp_6_9": ("fp_6_9_0",), "fp_4_3_4": (), "fp_5_2": ("fp_5_2_0",)}


def _register() -> None:
    """Add the formats to lowbit's name registry (idempotent), so that ``get_format("fp_4_3_4")``
    (and with it QuantConfig, JSON and TOML round trips) resolves them."""
    for name, fmt in FORMATS.items():
        register_format(fmt, *_ALIASES[name])


_register()


def overflow_threshold_exact(fmt: FloatFormat) -> Fraction:
    """Exact :func:`overflow_threshold`: ``2**emax · (2 − 2**-(man_bits+1))``."""
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a FloatFormat, got {type(fmt).__name__}")
    return fmt.max_exact + Fraction(2) ** (fmt.emax - fmt.man_bits - 1)


def overflow_threshold(fmt: FloatFormat | str) -> float:
    """Smallest ``|x|`` that round-to-nearest-even takes past ``fmt.max`` (an overflow).

    Values with ``|x| >= overflow_threshold(fmt)`` saturate (or become inf) when rounded to
    ``fmt``; the overflow rule counts them. ``fp_4_3_4``: 31, ``fp_5_2``: 122880.

    Raises:
        TypeError: ``fmt`` is not a float format.
    """
    f = _get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(f, FloatFormat):
        raise TypeError(f"overflow_threshold needs a float format, got {f!r}")
    return float(overflow_threshold_exact(f))


def format_label(fmt: FloatFormat | str) -> str:
    """Sign-exponent-mantissa label (``"1-4-3"``) with the extra bias when there is one."""
    f = _get_format(fmt) if isinstance(fmt, str) else fmt
    if not isinstance(f, FloatFormat):
        raise TypeError(f"format_label needs a float format, got {f!r}")
    extra = f.bias - ((1 << (f.exp_bits - 1)) - 1)  # type: ignore[operator]
    label = f"1-{f.exp_bits}-{f.man_bits}"
    return label + (f" b{extra}" if extra else "")


__all__ = [
    "FORMATS",
    "HIGH",
    "LOW",
    "LOW_GRAD",
    "format_label",
    "overflow_threshold",
    "overflow_threshold_exact",
]
