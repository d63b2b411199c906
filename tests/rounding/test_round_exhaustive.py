"""Every fp16 and every bf16 value, rounded to every small format, against the exact oracle.

Inputs are all 2^16 codes of fp16 and of bf16 (NaNs, ±inf, ±0 and subnormals included), upcast
exactly to float64 and float32 (and kept in their own dtype where the target's values fit it).
Targets are every preset float format of at most 16 bits plus a few parsed ones; every
deterministic mode, subnormals on and off, every accepted overflow option; ``impl="reference"``
and ``impl="auto"`` (the fused kernel once it exists) must both match bit for bit (NaN == NaN,
−0 ≠ +0). The oracle is tests/oracle.py (Fractions); its vectorized shortcut is re-checked
element by element on a random subset of every table.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from oracle import (
    DETERMINISTIC_MODES,
    FixedOracle,
    FloatOracle,
    all_bfloat16,
    all_float16,
    assert_same_bits,
    oracle_table,
)

INPUTS = {"fp16": all_float16, "bf16": all_bfloat16}
NATIVE = {"fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
# (name, heavy?) -- heavy targets have many values, so their oracle tables take seconds
FLOAT_TARGETS = [
    ("bf16", True),
    ("fp16", True),
    ("e6m5", True),
    ("e5m2", False),
    ("e4m3fn", False),
    ("e4m3-ieee", False),
    ("e4m3fnuz", False),
    ("e5m2fnuz", False),
    ("e3m2", False),
    ("e2m3", False),
    ("e2m1", False),
    ("e3m4", False),
    ("e2m0", False),
    ("e5m2fn", False),
    ("e3m3fnuz", False),
]
FIXED_TARGETS = [
    ("int4", False),
    ("int8", False),
    ("uint8", False),
    ("uq0.8", False),
    ("q3.12", True),
]
IMPLS = ("reference", "auto")
N_CHECK = 1500  # elements re-checked one by one against the Fraction oracle per table

_CACHE: dict = {}


def _validate_shortcut(oracle, x: np.ndarray, tables: dict, seed: int) -> None:
    """The vectorized table must equal the per-element Fraction oracle on a random subset
    (plus every tie and every element next to the format's extremes)."""
    rng = np.random.default_rng(seed)
    idx = set(rng.choice(x.size, N_CHECK, replace=False).tolist())
    keys, _ = oracle.classify(x)
    ties = np.flatnonzero((keys >= 0) & (keys % 4 == 2))
    idx.update(rng.choice(ties, min(200, ties.size), replace=False).tolist() if ties.size else [])
    big = np.flatnonzero(np.abs(x) >= float(oracle.max) / 2)
    idx.update(rng.choice(big, min(200, big.size), replace=False).tolist() if big.size else [])
    for i in sorted(idx):
        one = oracle.round_all(float(x[i]))
        for key, expected in one.items():
            got = tables[key][i]
            same = (np.isnan(got) and np.isnan(expected)) or (
                np.float64(got).view(np.uint64) == np.float64(expected).view(np.uint64)
            )
            assert same, f"oracle shortcut differs at x={x[i]!r} {key}: {got} vs {expected}"


def _table(inputs: str, target: str, subnormals: bool):
    key = (inputs, target, subnormals)
    if key not in _CACHE:
        fmt = lb.get_format(target)
        x = INPUTS[inputs]()
        if isinstance(fmt, lb.FloatFormat):
            oracle = FloatOracle(fmt, subnormals)
        else:
            oracle = FixedOracle(fmt)
        tables = oracle_table(oracle, x)
        _validate_shortcut(oracle, x, tables, seed=len(_CACHE) + 1)
        _CACHE[key] = (fmt, oracle, x, tables)
    return _CACHE[key]


def _fits(oracle, dtype: np.dtype) -> bool:
    """Whether every finite value of the target is exact in ``dtype``."""
    vals = np.array([float(v) for v in oracle.values])
    with np.errstate(over="ignore"):
        return bool(np.all(vals.astype(dtype).astype(np.float64) == vals))


def _check_all(inputs: str, target: str, subnormals: bool, mode: str) -> None:
    fmt, oracle, x, tables = _table(inputs, target, subnormals)
    dtypes = [np.dtype(np.float64), np.dtype(np.float32)]
    if isinstance(oracle, FloatOracle) and _fits(oracle, NATIVE[inputs]):
        dtypes.append(NATIVE[inputs])
    for ov in oracle.overflow_options():
        expected = tables[(mode, ov)]
        for dt in dtypes:
            with np.errstate(invalid="ignore"):  # signalling NaN codes
                xd = x.astype(dt)
            for impl in IMPLS:
                got = lb.round(xd, fmt, mode, overflow=ov, subnormals=subnormals, impl=impl)
                assert got.dtype == dt and got.shape == x.shape
                assert_same_bits(
                    got,
                    expected,
                    x,
                    f"{inputs}->{target} {mode} overflow={ov} "
                    f"subnormals={subnormals} dtype={dt} impl={impl}",
                )


def _params(targets):
    out = []
    for inputs in INPUTS:
        for target, heavy in targets:
            marks = [pytest.mark.slow] if heavy else []
            out.append(pytest.param(inputs, target, id=f"{inputs}->{target}", marks=marks))
    return out


@pytest.mark.parametrize("mode", DETERMINISTIC_MODES)
@pytest.mark.parametrize("subnormals", [True, False], ids=["subn", "nosubn"])
@pytest.mark.parametrize(("inputs", "target"), _params(FLOAT_TARGETS))
def test_every_fp16_bf16_input_float_formats(inputs, target, subnormals, mode):
    _check_all(inputs, target, subnormals, mode)


@pytest.mark.parametrize("mode", DETERMINISTIC_MODES)
@pytest.mark.parametrize(
    ("inputs", "target"), [p for p in _params(FIXED_TARGETS) if p.values[0] == "fp16"]
)
def test_every_fp16_input_fixed_formats(inputs, target, mode):
    _check_all(inputs, target, True, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", DETERMINISTIC_MODES)
@pytest.mark.parametrize(
    ("inputs", "target"),
    [
        ("fp16", "e4m3fn"),
        ("fp16", "e5m2"),
        ("fp16", "e2m1"),
        ("fp16", "e4m3fnuz"),
        ("bf16", "bf16"),
        ("bf16", "fp16"),
        ("fp16", "int8"),
    ],
)
def test_every_input_torch_and_jax(inputs, target, mode):
    """The torch (float64/float32, CPU) and jax (float32) paths on the same tables."""
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    for subnormals in (True, False):
        fmt, oracle, x, tables = _table(inputs, target, subnormals)
        if isinstance(oracle, FixedOracle) and not subnormals:
            continue
        for ov in oracle.overflow_options():
            expected = tables[(mode, ov)]
            what = f"{inputs}->{target} {mode} overflow={ov} subnormals={subnormals}"
            for tdt in (torch.float64, torch.float32):
                got = lb.round(
                    torch.from_numpy(x).to(tdt), fmt, mode, overflow=ov, subnormals=subnormals
                )
                assert got.dtype == tdt
                assert_same_bits(got.double().numpy(), expected, x, f"torch {tdt} {what}")
            with np.errstate(invalid="ignore"):  # signalling NaN codes
                x32 = x.astype(np.float32)
            got = lb.round(jnp.asarray(x32), fmt, mode, overflow=ov, subnormals=subnormals)
            assert got.dtype == jnp.float32
            assert_same_bits(np.asarray(got, dtype=np.float64), expected, x, f"jax {what}")


@functools.cache
def _fixed_magnitudes(name: str):
    o = FixedOracle(lb.get_format(name))
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            np.ldexp(rng.uniform(-1, 1, 1500), rng.integers(-40, 1000, 1500)),
            rng.uniform(-3, 3, 500) * float(o.max),
            [
                2.0**60 + 2**8,
                -(2.0**60) - 2**8,
                2.0**53 + 2,
                1e300,
                -1e300,
                5e-324,
                np.inf,
                -np.inf,
                np.nan,
                -0.0,
            ],
        ]
    )
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    want = [o.round_all(float(v)) for v in x]
    want32 = [o.round_all(float(v)) for v in x32.astype(np.float64)]
    return o, x, x32, want, want32


@pytest.mark.parametrize("mode", DETERMINISTIC_MODES)
@pytest.mark.parametrize("name", ["int8", "uint8", "int4", "q3.12", "uq0.8", "int32", "q20.20"])
def test_fixed_point_float64_inputs_of_every_magnitude(name, mode):
    """Saturate and wrap far outside the range: wrap is k mod 2^bits of the exact rounded k
    (for 2^60 + 2^8 in int8 that is 0), which float arithmetic on k alone gets wrong."""
    fmt = lb.get_format(name)
    o, x, x32, wants, wants32 = _fixed_magnitudes(name)
    for ov in o.overflow_options():
        want = np.array([w[(mode, ov)] for w in wants])
        for impl in IMPLS:
            got = lb.round(x, fmt, mode, overflow=ov, impl=impl)
            assert_same_bits(got, want, x, f"{name} {mode} {ov} {impl}")
        torch = pytest.importorskip("torch")
        got = lb.round(torch.from_numpy(x), fmt, mode, overflow=ov)
        assert_same_bits(got.numpy(), want, x, f"{name} {mode} {ov} torch")
        jnp = pytest.importorskip("jax.numpy")
        got = lb.round(jnp.asarray(x32), fmt, mode, overflow=ov)
        with np.errstate(over="ignore"):  # int32/q20.20 values round to fp32 on output
            want32 = np.array([w[(mode, ov)] for w in wants32]).astype(np.float32)
        assert_same_bits(np.asarray(got), want32, x32, f"{name} {mode} {ov} jax")
