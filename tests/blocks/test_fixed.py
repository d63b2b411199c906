"""Fixed point Q(i, f) against a Python-int two's complement oracle."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from _mx_oracle import round_int

from lowbit.blocks import quantize_fixed


def oracle(x: float, i: int, f: int, signed: bool, overflow: str, mode: str) -> float:
    """Round x * 2^f to an integer, then saturate or wrap it as a two's complement code."""
    bits = i + f + (1 if signed else 0)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if np.isnan(x):
        return float("nan")
    if np.isinf(x):
        if overflow == "wrap":
            return float("nan")
        return float((hi if x > 0 else lo) / Fraction(2) ** f)
    k = round_int(Fraction(x) * Fraction(2) ** f, mode)
    if overflow == "saturate":
        k = max(lo, min(hi, k))
    else:
        k = (k - lo) % 2**bits + lo  # two's complement wrap (unsigned: modulo 2^bits)
    return float(k / Fraction(2) ** f)


@pytest.mark.parametrize("i,f", [(0, 7), (3, 4), (7, 0), (2, 12), (4, -1)])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "ru", "rd", "ro"])
def test_vs_twos_complement_oracle(i: int, f: int, signed: bool, overflow: str, mode: str) -> None:
    rng = np.random.default_rng(i * 100 + f + len(mode))
    x = rng.standard_normal(300) * 2.0 ** (i + 1)
    x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 2.0 ** (i + 3)]
    x[6:20] = (np.arange(14) - 7) * 2.0 ** (-f - 1)  # exact ties
    got = quantize_fixed(x, i, f, signed=signed, overflow=overflow, mode=mode)
    want = np.array([oracle(float(v), i, f, signed, overflow, mode) for v in x])
    np.testing.assert_array_equal(got, want)
    assert not np.signbit(got[~np.isnan(got)]).any() or signed  # one zero: no -0 results
    assert not np.signbit(got[1])


def test_backends_and_errors() -> None:
    x = np.linspace(-9, 9, 37, dtype=np.float32)
    ref = quantize_fixed(x, 3, 2)
    assert ref.dtype == np.float32 and ref.max() == 7.75 and ref.min() == -8.0
    # 9 is code 36 of a 6-bit two's complement grid: wraps to 36 - 64 = -28, i.e. -7
    assert quantize_fixed(x, 3, 2, overflow="wrap")[-1] == -7.0
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(quantize_fixed(torch.from_numpy(x), 3, 2).numpy(), ref)
    with pytest.raises(ValueError, match="overflow"):
        quantize_fixed(x, 3, 2, overflow="clip")
    with pytest.raises(ValueError):
        quantize_fixed(x, 60, 2)
    with pytest.raises(TypeError):
        quantize_fixed(x, 3, 2, signed=1)  # type: ignore[arg-type]
