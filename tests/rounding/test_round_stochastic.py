"""Stochastic rounding: statistics with fixed seeds whose bounds fail on a biased
implementation, exact decisions predicted from the documented draw, reproducibility, chunking,
and agreement of numpy / torch / jax.

Definitions tested (lowbit.kernels.randbits and lowbit.rounding.modes docstrings): element ``i``
of a call with ``seed`` and ``offset`` draws the 32-bit word
``bits(i') = mix32(mix32(lo32(i') ^ k0) ^ hi32(i') ^ k1)`` with ``i' = offset + i`` and
``(k0, k1) = seed_keys(seed)``; with ``frac`` = (|x| − |toward-zero neighbour|) / spacing,

* ``sr``:       away from zero iff ``u < frac·2^n``, u = top n bits of the word (n = rand_bits)
* ``sr_equal``: away iff x is inexact and the top bit of the word is 1
* ``sr_bits``:  away iff ``floor(frac·2^k) + u >= 2^k``, u = top k bits (add k random bits
  below the kept bits, truncate)

so P(away) = ceil(frac·2^n)/2^n, 1/2 and floor(frac·2^k)/2^k respectively.
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction as Fr

import numpy as np
import pytest

import lowbit as lb
from lowbit.kernels.randbits import bits_int, seed_keys
from oracle import FixedOracle, FloatOracle, all_float16, assert_same_bits

N = 1 << 16
IMPLS = ("reference", "auto")
M32 = 0xFFFFFFFF


def _mix32(x: int) -> int:
    """Written here from the docstring (C. Wellons' lowbias32)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def _word(seed: int, i: int) -> int:
    k0, k1 = seed_keys(seed)
    return _mix32(_mix32((i & M32) ^ k0) ^ (i >> 32) ^ k1)


def test_draw_definition():
    for seed in (0, 1, 12345, 2**40 + 7):
        for i in (0, 1, 2, 1000, 2**32 - 1, 2**32, 2**33 + 5):
            assert _word(seed, i) == bits_int(seed, i)


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    if p in (0.0, 1.0):
        return count == round(p * n)
    return abs(count / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# ---- statistics ---------------------------------------------------------------------------

CASES = [  # (format, toward-zero neighbour, spacing)
    ("fp16", 1.0, 2.0**-10),
    ("fp16", -1.0, 2.0**-10),
    ("fp16", 3 * 2.0**-24, 2.0**-24),  # subnormal
    ("e4m3fn", 256.0, 32.0),
    ("bf16", -(2.0**-130), 2.0**-133),  # bf16 subnormal (an fp32 subnormal)
    ("q3.12", 1.5, 2.0**-12),
    ("int8", -5.0, 1.0),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("name", "t0", "ulp"), CASES)
@pytest.mark.parametrize("k", [1, 3, 8, 13, 15])
def test_sr_up_probability_is_exact_for_dyadic_fractions(name, t0, ulp, k, impl):
    """x = t0 + k/16 ulp away from zero: the share of 'away' results over 2^16 draws is within
    5 sigma of k/16, and the mean rounding error is within 5 sigma of 0."""
    sign = -1.0 if t0 < 0 else 1.0
    x = t0 + sign * k / 16 * ulp
    xs = np.full(N, x)
    for dt in (np.float64, np.float32):
        r = lb.round(xs.astype(dt), name, "sr", seed=1000 + k, impl=impl).astype(np.float64)
        away = np.abs(r) > abs(t0)
        assert set(np.unique(r).tolist()) <= {t0, t0 + sign * ulp}
        assert _within(int(away.sum()), N, k / 16), (away.mean(), k / 16)
        err = r.mean() - x
        assert abs(err) <= 5 * ulp * math.sqrt((k / 16) * (1 - k / 16) / N), err


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("frac", [1 / 16, 1 / 2, 15 / 16])
def test_sr_equal_is_fifty_fifty(frac, impl):
    x = -(1.0 + frac * 2.0**-10)
    r = lb.round(np.full(N, x), "fp16", "sr_equal", seed=7, impl=impl)
    assert set(np.unique(r).tolist()) <= {-1.0, -1.0 - 2.0**-10}
    assert _within(int((r < -1.0).sum()), N, 0.5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("k", "frac"), [(1, 0.75), (2, 0.3), (4, 5 / 16 + 1 / 64), (4, 0.999), (8, 0.2), (3, 1 / 8)]
)
def test_sr_bits_probability_is_floor_of_frac(k, frac, impl):
    x = 2.0 + frac * 2.0**-9  # fp16 spacing at 2 is 2^-9
    p = math.floor(frac * 2**k) / 2**k
    r = lb.round(np.full(N, x), "fp16", "sr_bits", rand_bits=k, seed=11 + k, impl=impl)
    assert _within(int((r > 2.0).sum()), N, p), ((r > 2.0).mean(), p)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k", [1, 4, 10])
def test_sr_bits_fraction_below_one_step_never_rounds_up(k, impl):
    frac = 2.0 ** -(k + 1) * 1.9  # < 2^-k: no carry possible
    for x in (1.0 + frac * 2.0**-10, -(1.0 + frac * 2.0**-10)):
        r = lb.round(np.full(N, x), "fp16", "sr_bits", rand_bits=k, seed=5, impl=impl)
        assert np.all(np.abs(r) == 1.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_sr_is_unbiased_for_arbitrary_values(impl):
    """Mean over many draws → x, for non-dyadic x (all 32 bits of resolution used)."""
    rng = np.random.default_rng(0)
    o = FloatOracle(lb.get_format("e5m2"))
    for x in [*rng.uniform(-3000, 3000, 12).tolist(), 1e-05, -3e-06]:
        t0, away, p = o.sr_split(Fr(x))
        r = lb.round(np.full(N, x), "e5m2", "sr", seed=99, impl=impl)
        sd = float(abs(away - t0)) * math.sqrt(float(p * (1 - p)) / N)
        assert abs(r.mean() - x) <= 5 * sd + 1e-300, (x, r.mean())


# ---- exact decisions from the documented draw ---------------------------------------------


def _predicted(
    oracle, x: np.ndarray, mode: str, seed: int, offset: int = 0, nbits: int = 32
) -> np.ndarray:
    out = np.empty(x.size)
    for i, xv in enumerate(x.reshape(-1).tolist()):
        if xv == 0 or not math.isfinite(xv):
            out[i] = oracle.round(xv, "rne")
            continue
        t0, away, frac = oracle.sr_split(Fr(xv))
        w = _word(seed, offset + i)
        if mode == "sr":
            up = (w >> (32 - nbits)) < frac * 2**nbits
        elif mode == "sr_equal":
            up = frac > 0 and (w >> 31) == 1
        else:
            up = math.floor(frac * 2**nbits) + (w >> (32 - nbits)) >= 2**nbits
        res = away if up else t0
        neg0 = xv < 0 and getattr(oracle, "has_neg_zero", False)
        out[i] = float(res) if res != 0 else (-0.0 if neg0 else 0.0)
    return out


def _sr_inputs(name: str, n: int = 3000, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fmt = lb.get_format(name)
    top = min(fmt.max, 1e4)
    x = np.concatenate(
        [
            rng.uniform(-top, top, n // 3),
            np.ldexp(rng.uniform(-1, 1, n // 3), rng.integers(-26, 3, n // 3)),
            rng.standard_normal(n - 2 * (n // 3)),
        ]
    )
    return x.astype(np.float32).astype(np.float64)  # exact in fp32, so every backend agrees


@functools.cache
def _oracle(name: str):
    fmt = lb.get_format(name)
    return FloatOracle(fmt) if isinstance(fmt, lb.FloatFormat) else FixedOracle(fmt)


@functools.cache
def _decision_case(name: str, mode: str, nbits: int, offset: int):
    o = _oracle(name)
    x = _sr_inputs(name)
    x = x[np.abs(x) < float(o.max)]  # overflow under SR is not part of this test
    x[:3] = [0.0, -0.0, float(o.max)]
    return x, _predicted(o, x, mode, seed=2024, offset=offset, nbits=nbits)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("mode", "nbits"), [("sr", 32), ("sr", 5), ("sr_equal", 32), ("sr_bits", 3), ("sr_bits", 12)]
)
@pytest.mark.parametrize("name", ["fp16", "e4m3fn", "e2m1", "bf16", "q3.12"])
def test_sr_decisions_follow_the_documented_draw(name, mode, nbits, impl):
    fmt = lb.get_format(name)
    rb = {"rand_bits": nbits} if (mode != "sr" or nbits != 32) else {}
    for offset in (0, 12345):
        x, want = _decision_case(name, mode, nbits, offset)
        for dt in (np.float64, np.float32):
            got = lb.round(x.astype(dt), fmt, mode, seed=2024, offset=offset, impl=impl, **rb)
            assert_same_bits(got, want, x, f"{name} {mode}/{nbits} offset={offset} {dt}")


# ---- reproducibility, chunking, backends ----------------------------------------------------

MODES_RB = [("sr", None), ("sr_equal", None), ("sr_bits", 7)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("mode", "rb"), MODES_RB)
def test_same_seed_same_bits_different_seed_different_bits(mode, rb, impl):
    x = _sr_inputs("fp16", 6000)
    a = lb.round(x, "fp16", mode, seed=1, rand_bits=rb, impl=impl)
    b = lb.round(x, "fp16", mode, seed=1, rand_bits=rb, impl=impl)
    c = lb.round(x, "fp16", mode, seed=2, rand_bits=rb, impl=impl)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    d = lb.round(x, "fp16", mode, rand_bits=rb, impl=impl)  # seed=None: a fresh seed
    e = lb.round(x, "fp16", mode, rand_bits=rb, impl=impl)
    assert d.tobytes() != e.tobytes()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("mode", "rb"), MODES_RB)
def test_chunking_with_offset_is_invariant(mode, rb, impl):
    x = _sr_inputs("e4m3fn", 5000).reshape(50, 100)
    whole = lb.round(x, "e4m3fn", mode, seed=77, rand_bits=rb, impl=impl)
    flat = x.reshape(-1)
    cuts = [0, 1, 999, 1000, 3333, 5000]
    parts = [
        lb.round(flat[a:b], "e4m3fn", mode, seed=77, rand_bits=rb, offset=a, impl=impl)
        for a, b in itertools.pairwise(cuts)
    ]
    assert np.concatenate(parts).tobytes() == whole.reshape(-1).tobytes()
    # and an offset really shifts the stream
    shifted = lb.round(flat, "e4m3fn", mode, seed=77, rand_bits=rb, offset=1, impl=impl)
    assert shifted.tobytes() != whole.reshape(-1).tobytes()


@pytest.mark.parametrize(("mode", "rb"), MODES_RB)
@pytest.mark.parametrize("name", ["fp16", "bf16", "e4m3fn", "e5m2", "e2m1", "int8"])
def test_numpy_torch_jax_identical_for_fp32(name, mode, rb):
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    x = _sr_inputs(name, 4000).astype(np.float32)
    x = np.concatenate([x, np.ldexp(np.float32(1.37), np.arange(-140, -120)).astype(np.float32)])
    kw = dict(seed=31337, rand_bits=rb, offset=17)
    ref = lb.round(x, name, mode, impl="reference", **kw)
    assert_same_bits(lb.round(x, name, mode, impl="auto", **kw), ref, x, "numpy auto")
    assert_same_bits(lb.round(torch.from_numpy(x), name, mode, **kw).numpy(), ref, x, "torch")
    assert_same_bits(np.asarray(lb.round(jnp.asarray(x), name, mode, **kw)), ref, x, "jax")
    x64 = x.astype(np.float64)
    ref64 = lb.round(x64, name, mode, impl="reference", **kw)
    assert_same_bits(ref64, ref, x, "fp64 vs fp32 input")
    assert_same_bits(
        lb.round(torch.from_numpy(x64), name, mode, **kw).numpy(), ref64, x, "torch fp64"
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("mode", "rb"), MODES_RB)
@pytest.mark.parametrize("name", ["fp16", "e5m2", "e4m3fn", "e2m1", "q3.12"])
def test_exact_values_never_move_under_sr(name, mode, rb, impl):
    fmt = lb.get_format(name)
    o = _oracle(name)
    xe = _exact_fp16_values(name)
    for seed in (0, 1, 2):
        got = lb.round(xe, fmt, mode, seed=seed, rand_bits=rb, impl=impl)
        assert_same_bits(got, xe + 0.0 if isinstance(o, FixedOracle) else xe, xe, name)


@functools.cache
def _exact_fp16_values(name: str) -> np.ndarray:
    o = _oracle(name)
    x = all_float16()
    return x[[bool(np.isfinite(v)) and o.round(v, "rtz") == v for v in x.tolist()]]
