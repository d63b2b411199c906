"""lowbit.matmul(acc="quire"): exact sums rounded once, against Fraction oracles.

The posit oracle below decodes codes itself (sign, regime run, exponent, fraction) and
rounds in encoding space as the Posit Standard does: between consecutive posits p_c < p_(c+1)
the boundary is the value of the (n+1)-bit code 2c + 1; ties go to the even code; nonzero
values never round to zero and saturate at maxpos. Float outputs use ``oracle.FloatOracle``.
"""

from __future__ import annotations

import bisect
import functools
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.arith.matmul import GemmConfig, quire_plan
from lowbit.kernels import matmul_numba as nk
from oracle import FloatOracle


# ---- posit oracle ----------------------------------------------------------------------------
def posit_decode(code: int, n: int, es: int) -> Fraction | None:
    if code == 0:
        return Fraction(0)
    if code == 1 << (n - 1):
        return None  # NaR
    neg = code >> (n - 1)
    if neg:
        code = (-code) & ((1 << n) - 1)
    body = format(code, f"0{n}b")[1:]
    run = len(body) - len(body.lstrip(body[0]))
    k = run - 1 if body[0] == "1" else -run
    rest = body[run + 1 :]
    e = int(rest[:es].ljust(es, "0"), 2) if es else 0
    fb = rest[es:]
    f = Fraction(int(fb, 2), 1 << len(fb)) if fb else Fraction(0)
    v = Fraction(2) ** (k * (1 << es) + e) * (1 + f)
    return -v if neg else v


@functools.cache
def posit_table(n: int, es: int) -> list[Fraction]:
    """Values of the positive codes 1 .. 2^(n-1) - 1 (increasing)."""
    return [posit_decode(c, n, es) for c in range(1, 1 << (n - 1))]  # type: ignore[misc]


def posit_round(x: Fraction, n: int, es: int) -> Fraction:
    if x == 0:
        return Fraction(0)
    if x < 0:
        return -posit_round(-x, n, es)
    vals = posit_table(n, es)
    if x >= vals[-1]:
        return vals[-1]
    if x <= vals[0]:
        return vals[0]
    i = bisect.bisect_right(vals, x) - 1  # vals[i] <= x < vals[i + 1]; code c = i + 1
    if vals[i] == x:
        return x
    mid = posit_decode(2 * (i + 1) + 1, n + 1, es)
    assert mid is not None and vals[i] < mid < vals[i + 1]
    if x < mid:
        return vals[i]
    if x > mid:
        return vals[i + 1]
    return vals[i] if (i + 1) % 2 == 0 else vals[i + 1]


@functools.cache
def float_oracle(name: str) -> FloatOracle:
    return FloatOracle(lb.get_format(name))


def random_posits(rng: np.random.Generator, n: int, es: int, size: int) -> np.ndarray:
    """Uniformly random codes (NaR excluded): every regime occurs."""
    vals = posit_table(n, es)
    idx = rng.integers(0, len(vals), size)
    sgn = rng.choice([-1.0, 1.0], size)
    return np.array([float(vals[i]) for i in idx]) * sgn


def exact_dot(a: np.ndarray, b: np.ndarray) -> Fraction:
    return sum(
        (Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)), Fraction(0)
    )


def bits(x: Any) -> np.ndarray:
    a = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    a[np.isnan(a)] = np.nan
    return a.view(np.int64)


def assert_bits(got: Any, want: Any, what: str = "") -> None:
    g, w = bits(got), bits(want)
    assert np.shape(got) == np.shape(want), (what, np.shape(got), np.shape(want))
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, f"{what}: {bad.size} differ, first {bad[:4]}"


# ---- the paper's test: length-1000 posit dot products ----------------------------------------
@pytest.mark.parametrize(
    ("name", "n", "es"),
    [("posit8", 8, 2), ("posit<8,0>", 8, 0), ("posit16", 16, 2), ("posit16_1", 16, 1)],
)
def test_quire_dot_equals_the_exactly_rounded_sum(name: str, n: int, es: int) -> None:
    rng = np.random.default_rng(n * 10 + es)
    fp32_differs = seq_differs = 0
    trials = 4
    for t in range(trials):
        if t % 2:
            a = random_posits(rng, n, es, 1000)
            b = random_posits(rng, n, es, 1000)
        else:
            a = lb.round(rng.standard_normal(1000), name)
            b = lb.round(rng.standard_normal(1000) * 0.3, name)
        exact = exact_dot(a, b)
        want = float(posit_round(exact, n, es))
        for impl in ("kernel", "reference"):
            got = lb.dot(a, b, mult=name, acc="quire", out=name, impl=impl)
            assert float(got) == want, (name, t, impl, float(got), want, float(exact))
        # float64 output: the correctly rounded exact sum
        assert float(lb.dot(a, b, mult=name, acc="quire")) == float(exact)
        fp32 = lb.dot(a, b, mult=name, acc="fp32", out=name)
        fp32_differs += float(fp32) != want
        c = Fraction(0)  # per-step posit rounding, as a posit-accumulating loop would do
        for x, y in zip(a, b, strict=True):
            c = posit_round(c + Fraction(float(x)) * Fraction(float(y)), n, es)
        seq_differs += float(c) != want
    assert seq_differs > 0, "sequential posit-rounded accumulation never differed"
    if n == 8:  # (posit16 with fp32 accumulation can agree on every trial)
        assert fp32_differs + seq_differs > 0


def test_fp32_accumulation_differs_from_the_quire_somewhere() -> None:
    """Long posit8 dot products with cancellation: fp32 accumulation loses the small terms."""
    rng = np.random.default_rng(7)
    diffs = 0
    for _ in range(6):
        a = random_posits(rng, 8, 2, 1000)
        b = random_posits(rng, 8, 2, 1000)
        q = lb.dot(a, b, mult="posit8", acc="quire")
        f = lb.dot(a, b, mult="posit8", acc="fp32")
        assert float(q) == float(exact_dot(a, b))
        diffs += float(f) != float(q)
    assert diffs > 0


# ---- float outputs in every deterministic mode -------------------------------------------------
@pytest.mark.parametrize("out", ["bf16", "fp16", "e4m3", "e5m2"])
def test_quire_float_outputs_match_the_oracle(out: str) -> None:
    rng = np.random.default_rng(3)
    A = lb.round(rng.standard_normal((3, 200)), "bf16")
    B = rng.standard_normal((200, 4)) * 0.05
    B[:, 1] = -B[:, 1] * 1e-3
    B = lb.round(B, "bf16")
    orc = float_oracle(out)
    exact = [[exact_dot(A[i], B[:, j]) for j in range(4)] for i in range(3)]
    for mode in ("rne", "rna", "rtz", "ru", "rd", "ro"):
        want = np.array([[orc.round(exact[i][j], mode) for j in range(4)] for i in range(3)])
        for impl in ("kernel", "reference"):
            got = lb.matmul(A, B, mult="bf16", acc="quire", out=out, out_mode=mode, impl=impl)
            assert_bits(got, want, f"{out} {mode} {impl}")


def test_quire_stochastic_out_picks_a_neighbour_and_kernel_equals_reference() -> None:
    rng = np.random.default_rng(4)
    A = rng.standard_normal((5, 64)).astype(np.float32)
    B = rng.standard_normal((64, 6)).astype(np.float32)
    orc = float_oracle("bf16")
    got = lb.matmul(A, B, acc="quire", out="bf16", out_mode="sr", seed=11)
    ref = lb.matmul(A, B, acc="quire", out="bf16", out_mode="sr", seed=11, impl="reference")
    assert_bits(got, ref)
    for i in range(5):
        for j in range(6):
            x = exact_dot(A[i].astype(np.float64), B[:, j].astype(np.float64))
            assert got[i, j] in (orc.round(x, "rd"), orc.round(x, "ru"))


# ---- kernel == reference, and exactness of the binned sum -------------------------------------
def test_quire_exact_over_wide_exponent_ranges() -> None:
    """float64 operands spanning 2^-200..2^200 (long, so two_prod pairs) and posit16 ones:
    the float64 result is the correctly rounded exact sum; several bins are used."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((4, 300)) * 2.0 ** rng.integers(-200, 200, (4, 300))
    B = rng.standard_normal((300, 3)) * 2.0 ** rng.integers(-200, 200, (300, 3))
    plan = quire_plan(nk.operand_stats(A), nk.operand_stats(B), 300, False)
    assert plan[1] >= 5
    want = np.array([[float(exact_dot(A[i], B[:, j])) for j in range(3)] for i in range(4)])
    for impl in ("kernel", "reference"):
        assert_bits(lb.matmul(A, B, acc="quire", impl=impl), want, impl)
    P = lb.round(A, "posit16")
    Q = lb.round(B, "posit16")
    want = np.array([[float(exact_dot(P[i], Q[:, j])) for j in range(3)] for i in range(4)])
    assert quire_plan(nk.operand_stats(P), nk.operand_stats(Q), 300, True)[1] >= 2
    assert_bits(lb.matmul(P, Q, acc="quire"), want)
    # no plan (products beyond float64's range for the bound): the partials algorithm
    A[0, 0] = 1e300
    B[0, 0] = 1e10
    assert quire_plan(nk.operand_stats(A), nk.operand_stats(B), 300, False)[1] == 0
    assert_bits(lb.matmul(A, B, acc="quire"), lb.matmul(A, B, acc="quire", impl="reference"))


CONFIGS = [
    dict(mult="posit8", acc="quire", out="posit8"),
    dict(mult="posit16_1", acc="quire", out="posit16_1"),
    dict(mult="posit16", acc="quire", out="bf16", out_mode="rd"),
    dict(mult="e4m3", acc="quire"),
    dict(mult="lmul4", acc="quire", out="e5m2"),
    dict(mult="bf16", prod="e4m3", acc="quire", out="fp16"),
    dict(mult="bf16", prod="e4m3", acc="quire", overflow="saturate"),
    dict(prod="bf16", prod_mode="sr", acc="quire", out="fp16", out_mode="ru"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_quire_kernel_equals_reference(cfg: dict[str, Any]) -> None:
    rng = np.random.default_rng(6)
    A = rng.standard_normal((2, 1, 7, 45)) * 3
    B = rng.standard_normal((3, 45, 9))
    A[0, 0, 0, :] = -0.0  # an exact zero sum of -0 terms ...
    B[1, :, 2] = 0.0  # ... and of mixed zeros
    A[1, 0, 3, 4] = 1e6  # overflowing products for fp8 prod
    B[2, 4, :] = 1e6
    for impl in ("kernel", "reference"):
        got = lb.matmul(A, B, seed=3, impl=impl, **cfg)
        if impl == "kernel":
            first = got
    assert_bits(first, got, str(cfg))
    # few columns (the kernel transposes the problem) and K = 1, K = 0
    assert_bits(
        lb.matmul(A[1, 0], B[0][:, :2], seed=3, **cfg),
        lb.matmul(A[1, 0], B[0][:, :2], seed=3, impl="reference", **cfg),
    )
    assert_bits(
        lb.matmul(A[..., :1], B[:, :1], seed=3, **cfg),
        lb.matmul(A[..., :1], B[:, :1], seed=3, impl="reference", **cfg),
    )
    assert np.all(lb.matmul(A[..., :0], B[:, :0], **cfg) == 0)


def test_quire_special_values_and_zero_signs() -> None:
    A = np.array(
        [[1.0, 2.0, 3.0], [-0.0, -0.0, -0.0], [np.inf, 1.0, 1.0], [np.nan, 0, 0], [1.0, -1.0, 0.0]]
    )
    B = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, -np.inf]])
    for impl in ("kernel", "reference"):
        C = lb.matmul(A, B, acc="quire", impl=impl)
        assert C[0, 0] == 6 and C[0, 1] == -np.inf
        assert C[1, 0] == 0 and np.signbit(C[1, 0])  # all terms -0
        assert C[2, 0] == np.inf and np.isnan(C[2, 1])  # inf - inf
        assert np.isnan(C[3, 0])
        assert C[4, 0] == 0 and not np.signbit(C[4, 0])  # 1 - 1 + 0 = +0 ...
        D = lb.matmul(A[4:], B[:, :1], acc="quire", out="bf16", out_mode="rd", impl=impl)
        assert D[0, 0] == 0 and np.signbit(D[0, 0])  # ... but -0 when rounding down


def test_quire_torch_autograd_uses_the_same_config() -> None:
    rng = np.random.default_rng(8)
    a = torch.tensor(rng.standard_normal((6, 40)), requires_grad=True)
    b = torch.tensor(rng.standard_normal((40, 5)), requires_grad=True)
    cfg = dict(mult="posit16", acc="quire", out="posit16")
    c = lb.matmul(a, b, **cfg)
    assert_bits(c.detach().numpy(), lb.matmul(a.detach().numpy(), b.detach().numpy(), **cfg))
    g = torch.tensor(rng.standard_normal(c.shape))
    c.backward(g)
    ar = lb.round(a.detach().numpy(), "posit16")
    br = lb.round(b.detach().numpy(), "posit16")
    assert_bits(a.grad.numpy(), lb.matmul(g.numpy(), br.T, **cfg))
    assert_bits(b.grad.numpy(), lb.matmul(ar.T, g.numpy(), **cfg))


def test_quire_config_validation_and_json() -> None:
    cfg = GemmConfig(mult="posit8", acc="QUIRE", out="posit8")
    assert cfg.acc == "quire" and GemmConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (
        dict(order="pairwise"),
        dict(block_k=32),
        dict(acc_mode="rd"),
        dict(out="posit8", out_mode="sr"),
        dict(out="e11m51"),
        dict(out_mode="rd"),
        dict(out="e8m40", out_mode="sr", rand_bits=20),
    ):
        with pytest.raises(ValueError):
            GemmConfig(acc="quire", **bad)
    assert math.isfinite(float(lb.dot(np.ones(3), np.ones(3), acc="quire", out="fp64")))
    # acc="quire" over a blocked preset drops its order; the named posit presets
    rng = np.random.default_rng(9)
    A = rng.standard_normal((3, 40))
    B = rng.standard_normal((40, 5))
    assert_bits(
        lb.matmul(A, B, preset="fp8-tensorcore", acc="quire"),
        lb.matmul(A, B, mult="e4m3", acc="quire"),
    )
    assert_bits(
        lb.matmul(A, B, preset="posit16-quire"),
        lb.matmul(A, B, mult="posit16", acc="quire", out="posit16"),
    )
