"""The formats of Lee et al.: every code enumerated and decoded by hand (fractions), against
lowbit's format objects, its rounding and the overflow threshold."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

import lowbit as lb
from lowbit.formats import FloatFormat, get_format
from lowbit.methods.assign import HIGH, LOW, LOW_GRAD, overflow_threshold


def hand_values(exp_bits: int, man_bits: int, extra_bias: int) -> list[Fraction]:
    """Every code of a QPyTorch-style ``FP_e_m_b`` format: the standard IEEE-bias layout with
    no inf/NaN code (the top exponent holds finite values), times ``2**-extra_bias``."""
    bias = 2 ** (exp_bits - 1) - 1
    out = []
    for sign in (1, -1):
        for e in range(2**exp_bits):
            for m in range(2**man_bits):
                if e == 0:  # subnormal
                    mag = Fraction(m, 2**man_bits) * Fraction(2) ** (1 - bias)
                else:
                    mag = (1 + Fraction(m, 2**man_bits)) * Fraction(2) ** (e - bias)
                out.append(sign * mag * Fraction(2) ** -extra_bias)
    return out


CASES = [(LOW, 4, 3, 4), (LOW_GRAD, 5, 2, 0)]


@pytest.mark.parametrize(("fmt", "e", "m", "b"), CASES, ids=lambda v: getattr(v, "name", v))
def test_every_code_matches_the_hand_decoding(fmt: FloatFormat, e: int, m: int, b: int) -> None:
    vals = hand_values(e, m, b)
    assert fmt.bits == 8 and fmt.n_finite == 256  # no code is inf or NaN
    assert [fmt.decode_exact(c) for c in range(256)] == vals  # code = sign|exponent|mantissa
    assert fmt.max_exact == max(vals)
    # every representable value is a fixed point of lowbit's rounding
    finite = np.array(sorted({float(v) for v in vals}))
    assert np.array_equal(lb.round(finite, fmt), finite)


@pytest.mark.parametrize(("fmt", "e", "m", "b"), CASES, ids=lambda v: getattr(v, "name", v))
def test_rne_against_the_enumerated_grid(fmt: FloatFormat, e: int, m: int, b: int) -> None:
    """Midpoints go to the neighbour with an even mantissa; beyond max: saturate."""
    pos = sorted({v for v in hand_values(e, m, b) if v >= 0})
    xs, want = [], []
    for lo, hi in itertools.pairwise(pos):
        mid = (lo + hi) / 2
        lo_code = pos.index(lo) % 2**m  # mantissa field of lo (codes are in value order)
        for x, w in (
            (mid, lo if lo_code % 2 == 0 else hi),
            ((lo + mid) / 2, lo),
            ((mid + hi) / 2, hi),
        ):
            xs.append(float(x))
            want.append(float(w))
    xs += [float(pos[-1]) * 4, 1e30]
    want += [float(pos[-1])] * 2
    got = lb.round(np.array(xs), fmt, "rne")
    assert np.array_equal(got, np.array(want))
    assert np.array_equal(lb.round(-np.array(xs), fmt, "rne"), -np.array(want))


def test_fp_4_3_4_maps_one_exactly_and_has_max_30() -> None:
    vals = hand_values(4, 3, 4)
    assert Fraction(1) in vals
    assert float(lb.round(np.array([1.0]), LOW)[0]) == 1.0
    assert max(vals) == 30 == LOW.max  # 2^4 (2 - 2^-3), "max ~ 30/31" in the note
    assert min(v for v in vals if v > 0) == Fraction(1, 2**13)  # 2^(1-7-4) * 2^-3
    # the standard 1-4-3 layout times 2^-4, code by code
    std = hand_values(4, 3, 0)
    assert vals == [v / 16 for v in std]


def test_high_format_is_16_bit_e6m9_without_specials() -> None:
    assert (HIGH.bits, HIGH.exp_bits, HIGH.man_bits, HIGH.n_finite) == (16, 6, 9, 2**16)
    assert HIGH.max_exact == Fraction(2) ** 32 * (2 - Fraction(1, 2**9))
    assert LOW_GRAD.max == 2.0**16 * 1.75


@pytest.mark.parametrize("fmt", [LOW, LOW_GRAD, HIGH], ids=lambda f: f.name)
def test_overflow_threshold_is_where_rne_leaves_the_range(fmt: FloatFormat) -> None:
    """Rounded with the same precision and a wider exponent range, values >= threshold go
    past max, values just below it come back to max."""
    wide = FloatFormat(
        fmt.exp_bits + 1, fmt.man_bits, bias=fmt.bias + 2 ** (fmt.exp_bits - 1), special="none"
    )
    assert wide.emax > fmt.emax and wide.emin <= fmt.emin
    thr = overflow_threshold(fmt)
    below = np.nextafter(thr, 0.0)
    r = lb.round(np.array([thr, below]), wide, "rne")
    assert r[0] > fmt.max and r[1] == fmt.max
    if fmt is LOW:
        assert thr == 31.0  # the repository's threshold 2^4 (2 - 2^-4)


def test_names_resolve_and_configs_accept_them() -> None:
    for name, fmt in (
        ("fp_6_9", HIGH),
        ("FP_6_9_0", HIGH),
        ("fp_4_3_4", LOW),
        ("FP_4_3_4", LOW),
        ("fp_5_2", LOW_GRAD),
        ("FP_5_2_0", LOW_GRAD),
    ):
        assert get_format(name) == fmt
    from lowbit.nn import QuantConfig

    cfg = QuantConfig(weight="fp_4_3_4", act="FP_4_3_4", grad_act="fp_5_2", output="fp_6_9")
    assert QuantConfig.from_json(cfg.to_json()) == cfg
    assert cfg.cast_spec("weight").overflow == "saturate"
