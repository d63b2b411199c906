"""lowbit.matmul / lowbit.dot against an exact Fraction oracle, and kernel == reference.

The oracle below is an independent reimplementation of the documented semantics in plain
Python: exact products and sums with ``fractions.Fraction``, each rounding done by
``oracle.FloatOracle`` (stochastic modes: its ``sr_split`` and the documented draw indices of
the counter-based generator). The numba kernel and the numpy reference must both equal it bit
for bit, and must equal each other on larger random and adversarial inputs.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import struct
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from lowbit.arith import matmul as mm_mod_fn  # the function (exported)
from lowbit.arith.matmul import (
    GemmConfig,
    backward_numpy,
    dot,
    gemm_kernel,
    gemm_presets,
    gemm_reference,
    matmul,
)
from lowbit.kernels import matmul_numba as nk
from lowbit.kernels.randbits import bits_int, seed_keys
from oracle import DETERMINISTIC_MODES, FloatOracle

MODES = (*DETERMINISTIC_MODES, "sr", "sr_equal", "sr_bits")


# =============================================================================================
# helpers
# =============================================================================================
def bits_of(x: Any) -> np.ndarray:
    """Bit patterns (NaNs made canonical) for exact comparisons."""
    a = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    a[np.isnan(a)] = np.nan
    return a.view(np.int64)


def same(a: Any, b: Any) -> bool:
    return np.shape(a) == np.shape(b) and np.array_equal(bits_of(a), bits_of(b))


def assert_same(got: Any, want: Any, what: str = "") -> None:
    g, w = bits_of(got), bits_of(want)
    assert np.shape(got) == np.shape(want), (what, np.shape(got), np.shape(want))
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, (
        f"{what}: {bad.size} of {g.size} differ; first at {bad[:5]}: "
        f"got {g.view(np.float64)[bad[:5]]}, want {w.view(np.float64)[bad[:5]]}"
    )


@functools.cache
def oracle(name: str) -> FloatOracle:
    return FloatOracle(lb.get_format(name))


def stream_seed(seed: int, stream: int) -> int:
    """The documented per-stage seed: keys of (seed, stream) packed into 64 bits."""
    k0, k1 = seed_keys(seed, stream)
    return (k1 << 32) | k0


def negz(x: float) -> bool:
    return x == 0 and math.copysign(1.0, x) < 0


def posz(x: float) -> bool:
    return x == 0 and math.copysign(1.0, x) > 0


# =============================================================================================
# the exact oracle
# =============================================================================================
class Oracle:
    """C[i, j] of one configuration, computed element by element with Fractions."""

    def __init__(self, cfg: GemmConfig, seed: int, n_out: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.n_out = n_out
        self.rand_bits = cfg.rand_bits

    # one rounding of an exact value ---------------------------------------------------------
    def rnd(
        self,
        x: Fraction | float,
        fmt: str | None,
        mode: str,
        stream: int,
        index: int,
        stage_rb: int | None = None,
    ) -> float:
        if fmt is None or fmt == "fp64":
            return float(x)  # Fraction -> float is correctly rounded (RNE)
        o = oracle(fmt)
        ov = self.cfg.overflow or o.overflow_options()[0]
        if mode in DETERMINISTIC_MODES:
            return o.round(x, mode, ov)
        if isinstance(x, float) and (math.isnan(x) or math.isinf(x) or x == 0):
            return o.round(x, "rne", ov)  # specials and zeros are exact in every mode
        xf = Fraction(x)
        rb = stage_rb or self.rand_bits or 32
        r = bits_int(stream_seed(self.seed, stream), index)
        if abs(xf) > o.ext:
            return o._infinity(xf < 0, ov)  # stochastic overflow goes to infinity
        t0, away, p = o.sr_split(xf)
        if mode == "sr":
            up = (r >> (32 - rb)) < p * 2**rb
        elif mode == "sr_equal":
            up = p > 0 and (r >> 31) == 1
        else:  # sr_bits: floor(p 2^k) + u >= 2^k
            up = math.floor(p * 2**rb) + (r >> (32 - rb)) >= 2**rb
        v = away if up else t0
        if abs(v) == o.ext:
            return o._infinity(xf < 0, ov)  # rounded onto the extended point: overflow
        if v == 0:
            return -0.0 if (xf < 0 and o.has_neg_zero) else 0.0
        return float(v)

    # exact sums ---------------------------------------------------------------------------
    def sum_round(self, terms: list[Fraction | float], step: int, o_idx: int) -> float:
        """Round the exact sum of logical terms into the accumulator (draw step*n_out + o)."""
        cfg = self.cfg
        floats = [t for t in terms if isinstance(t, float)]
        if any(math.isnan(t) for t in floats) or (math.inf in floats and -math.inf in floats):
            total: Fraction | float = math.nan
        elif math.inf in floats:
            total = math.inf
        elif -math.inf in floats:
            total = -math.inf
        else:
            total = sum((Fraction(t) for t in terms), Fraction(0))
            if total == 0:
                nz = all(isinstance(t, float) and negz(t) for t in terms)
                pz = all(isinstance(t, float) and posz(t) for t in terms)
                total = -0.0 if (nz or (cfg.acc_mode == "rd" and not pz)) else 0.0
        rb = None
        acc = cfg.acc
        if acc is not None and acc != "fp64" and cfg.acc_mode == "sr" and cfg.rand_bits is None:
            rb = min(32, 52 - lb.get_format(acc).precision)
        return self.rnd(total, acc, cfg.acc_mode, 4, step * self.n_out + o_idx, rb)

    # one output element -------------------------------------------------------------------------
    def element(self, a: list[float], b: list[float], o_idx: int) -> float:
        cfg = self.cfg
        K = len(a)
        terms: list[Fraction | float] = []
        for k in range(K):
            x, y = a[k], b[k]
            special = x == 0 or y == 0 or not (math.isfinite(x) and math.isfinite(y))
            p: Fraction | float = x * y if special else Fraction(x) * Fraction(y)
            if cfg.prod is not None:
                rb = None
                if cfg.prod_mode == "sr" and cfg.rand_bits is None:
                    rb = min(32, 52 - lb.get_format(cfg.prod).precision)
                p = self.rnd(p, cfg.prod, cfg.prod_mode, 3, k * self.n_out + o_idx, rb)
            terms.append(p)
        c: float | None = None
        if cfg.order == "sequential":
            for k, t in enumerate(terms):
                c = self.sum_round([t] if c is None else [c, t], k, o_idx)
        elif cfg.order == "pairwise":
            level: list[tuple[int, Fraction | float]] = list(enumerate(terms))
            if K == 1:
                c = self.sum_round([terms[0]], 0, o_idx)
            while len(level) > 1:
                nxt = []
                for q in range(0, len(level) - 1, 2):
                    (s0, v0), (s1, v1) = level[q], level[q + 1]
                    nxt.append((s0, self.sum_round([v0, v1], s1 - 1, o_idx)))
                if len(level) % 2:
                    nxt.append(level[-1])
                level = nxt
            if K > 1:
                c = float(level[0][1])
        else:
            bk = cfg.block_k
            assert bk is not None
            for g, k0 in enumerate(range(0, K, bk)):
                group = terms[k0 : k0 + bk]
                if cfg.fma:
                    c = self.sum_round(group if c is None else [c, *group], g, o_idx)
                else:
                    gv = self.sum_round(group, 2 * g, o_idx)
                    c = gv if c is None else self.sum_round([c, gv], 2 * g + 1, o_idx)
        if c is None:
            c = 0.0
        if cfg.out is not None:
            c = self.rnd(c, cfg.out, cfg.out_mode, 5, o_idx)
        return c


def oracle_matmul(A: np.ndarray, B: np.ndarray, cfg: GemmConfig, seed: int) -> np.ndarray:
    """The oracle for 2-D float64 operands."""
    M, K = A.shape
    N = B.shape[1]
    ora = Oracle(cfg, seed, M * N)
    Ar = [[float(v) for v in row] for row in A]
    Br = [[float(v) for v in row] for row in B]
    if cfg.mult is not None:
        ora_m = Oracle(cfg, seed, 0)
        for X, stream, ncol in ((Ar, 1, K), (Br, 2, N)):
            for i, row in enumerate(X):
                for j, v in enumerate(row):
                    X[i][j] = ora_m.rnd(v, cfg.mult, cfg.mult_mode, stream, i * ncol + j)
    C = np.empty((M, N))
    for i in range(M):
        for j in range(N):
            C[i, j] = ora.element(Ar[i], [Br[k][j] for k in range(K)], i * N + j)
    C[np.isnan(C)] = np.nan
    return C


# =============================================================================================
# random configurations and data for the oracle tests
# =============================================================================================
ACC = ["fp16", "bf16", "e5m2", "e4m3", "e3m2", "fp64", None]
PROD = [None, None, "fp16", "e5m2", "bf16", "e4m3"]
MULT = [None, None, "e4m3", "e5m2", "fp16", "bf16"]
OUT = [None, None, None, "e4m3", "fp16", "e5m2"]


def random_config(rng: np.random.Generator) -> GemmConfig:
    order = str(rng.choice(["sequential", "pairwise", "blocked"]))
    rand_bits = int(rng.integers(1, 10)) if rng.integers(2) else None
    modes = MODES if rand_bits else MODES[:-1]  # sr_bits needs rand_bits
    acc = ACC[rng.integers(len(ACC))]
    acc_mode = "rne" if acc in (None, "fp64") else str(rng.choice(modes))
    prod = PROD[rng.integers(len(PROD))]
    fma = bool(rng.integers(2)) and prod is None and order != "pairwise"
    return GemmConfig(
        mult=MULT[rng.integers(len(MULT))],
        mult_mode=str(rng.choice(modes)),
        prod=prod,
        prod_mode=str(rng.choice(modes)),
        acc=acc,
        acc_mode=acc_mode,
        order=order,
        block_k=int(rng.integers(1, 6)) if order == "blocked" else None,
        fma=fma,
        out=OUT[rng.integers(len(OUT))],
        out_mode=str(rng.choice(modes)),
        overflow="saturate" if rng.integers(4) == 0 else None,
        rand_bits=rand_bits,
    )


def random_operand(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Mixed magnitudes (tiny, moderate, huge), exact zeros of both signs, fp16 values."""
    kind = rng.integers(4)
    scale = {0: 1.0, 1: 2.0 ** rng.integers(-20, -8), 2: 2.0 ** rng.integers(6, 12), 3: 1.0}[
        int(kind)
    ]
    x = rng.standard_normal(shape) * scale
    if kind == 3:  # wide dynamic range within one operand
        x = x * 2.0 ** rng.integers(-14, 14, size=shape)
    x = lb.round(x, "fp16")
    mask = rng.random(shape)
    x = np.where(mask < 0.1, 0.0, x)
    x = np.where((mask >= 0.1) & (mask < 0.15), -0.0, x)
    return x


@pytest.mark.parametrize("chunk", range(8))
def test_oracle_random_configs(chunk: int) -> None:
    """Kernel and reference equal the Fraction oracle on random small problems and configs."""
    rng = np.random.default_rng(1000 + chunk)
    for trial in range(40):
        cfg = random_config(rng)
        M, N = (int(v) for v in rng.integers(1, 4, size=2))
        K = int(rng.integers(0, 10))
        A = random_operand(rng, (M, K))
        B = random_operand(rng, (K, N))
        seed = int(rng.integers(2**40))
        want = oracle_matmul(A, B, cfg, seed)
        for impl in ("kernel", "reference"):
            got = matmul(A, B, preset=cfg, seed=seed, impl=impl)
            assert_same(got, want, f"chunk {chunk} trial {trial} {impl} {cfg} K={K}")


@pytest.mark.parametrize("acc", ["fp16", "e4m3", "e5m2", "bf16"])
@pytest.mark.parametrize("order", ["sequential", "pairwise", "blocked"])
def test_oracle_adversarial(acc: str, order: str) -> None:
    """Cancellation, ties, overflow to inf/NaN, subnormal products, signed zeros, in every
    deterministic mode, against the oracle."""
    f = lb.get_format(acc)
    u = 2.0**-f.man_bits
    big = f.max
    tiny = f.min_subnormal
    A = np.array(
        [
            [1.0, u / 2, u / 2, -1.0, u / 4],  # ties around 1
            [big, big, -big, -big, 1.0],  # overflow then cancellation
            [tiny, tiny, -tiny, tiny / 2, tiny * 3],  # subnormal region
            [-0.0, -0.0, -0.0, -0.0, -0.0],  # all -0 terms
            [1.0, -1.0, 0.0, -0.0, 0.0],  # exact cancellation to zero
            [3.0, 1.0 + u, -(3.0 + u), -1.0, u],  # cancellation with low bits
        ]
    )
    B = np.array([[1.0], [1.0], [1.0], [1.0], [1.0]])
    Bn = np.array([[1.0], [-1.0], [1.0], [-1.0], [0.5]])
    for mode in DETERMINISTIC_MODES:
        for fma in (False, True):
            if order == "pairwise" and fma:
                continue
            cfg = GemmConfig(
                acc=acc,
                acc_mode=mode,
                order=order,
                block_k=2 if order == "blocked" else None,
                fma=fma,
            )
            for BB in (B, Bn):
                with np.errstate(all="ignore"):
                    want = oracle_matmul(A, BB, cfg, 0)
                for impl in ("kernel", "reference"):
                    assert_same(matmul(A, BB, preset=cfg, impl=impl), want, f"{impl} {cfg}")


def test_oracle_inf_nan_operands() -> None:
    A = np.array(
        [[np.inf, 1.0, 2.0], [np.inf, -np.inf, 1.0], [np.nan, 1.0, 1.0], [0.0, np.inf, 1.0]]
    )
    B = np.array([[1.0, 2.0], [1.0, 0.5], [1.0, -1.0]])
    for order, bk in (("sequential", None), ("pairwise", None), ("blocked", 2)):
        for acc in ("fp16", "e4m3", None):
            cfg = GemmConfig(acc=acc, order=order, block_k=bk)
            with np.errstate(all="ignore"):
                want = oracle_matmul(A, B, cfg, 0)
            for impl in ("kernel", "reference"):
                assert_same(matmul(A, B, preset=cfg, impl=impl), want, f"{impl} {cfg}")


# =============================================================================================
# kernel == reference on larger random and adversarial inputs
# =============================================================================================
def both(A: np.ndarray, B: np.ndarray, **kw: Any) -> None:
    r = matmul(A, B, impl="reference", **kw)
    k = matmul(A, B, impl="kernel", **kw)
    assert r.dtype == k.dtype
    assert_same(k, r, str(kw))


KERNEL_CONFIGS: list[dict[str, Any]] = [
    {"prod": "fp16", "acc": "fp16"},
    {"acc": "fp16"},
    {"acc": "fp32"},
    {"acc": "bf16", "acc_mode": "rd"},
    {"acc": "fp16", "acc_mode": "ru", "prod": "bf16", "prod_mode": "rtz"},
    {"acc": "e5m2", "acc_mode": "ro"},
    {"acc": "fp16", "acc_mode": "sr", "seed": 11},
    {"acc": "fp16", "acc_mode": "sr_equal", "prod": "e4m3", "prod_mode": "sr", "seed": 12},
    {"acc": "bf16", "acc_mode": "sr_bits", "rand_bits": 6, "seed": 13},
    {"acc": "tf32", "acc_mode": "rna", "order": "pairwise"},
    {"acc": "fp16", "acc_mode": "rnz", "order": "pairwise", "prod": "fp16"},
    {"acc": "fp16", "acc_mode": "sr", "order": "pairwise", "seed": 14},
    {"preset": "fp8-tensorcore"},
    {"mult": "e5m2", "acc": "fp16", "block_k": 7, "fma": True},
    {"acc": "fp16", "block_k": 4, "acc_mode": "sr", "seed": 15},
    {"acc": "bf16", "block_k": 16, "fma": True, "acc_mode": "rd"},
    {"mult": "bf16", "acc": "fp32", "acc_mode": "sr", "block_k": 8, "seed": 16},
    {},
    {"order": "pairwise"},
    {"block_k": 8},
    {"mult": "fp16", "acc": "fp16", "out": "e4m3", "out_mode": "sr", "seed": 17},
    {"acc": "fp32", "overflow": "saturate", "out": "e4m3"},
]


@pytest.mark.parametrize("kw", KERNEL_CONFIGS, ids=[str(i) for i in range(len(KERNEL_CONFIGS))])
def test_kernel_equals_reference_random(kw: dict[str, Any], monkeypatch: Any) -> None:
    """Random fp16-valued operands (float32 and float64 storage), batches and column chunks."""
    # several column chunks per row (the module, not the function lowbit.arith exports)
    monkeypatch.setattr(importlib.import_module("lowbit.arith.matmul"), "_JB", 16)
    rng = np.random.default_rng(len(str(kw)))
    A = random_operand(rng, (2, 5, 37))
    B = random_operand(rng, (37, 40))
    both(A, B, **kw)
    both(A.astype(np.float32), B.astype(np.float32), **kw)
    # float64 values with 53 significant bits: products are double-double pairs
    A64 = rng.standard_normal((3, 1, 4, 19)) * 2.0 ** rng.integers(-30, 30, (3, 1, 4, 19))
    B64 = rng.standard_normal((2, 19, 6))
    both(A64, B64, **kw)


@pytest.mark.parametrize("order", ["sequential", "pairwise", "blocked"])
def test_kernel_equals_reference_adversarial(order: str) -> None:
    """Cancellation, overflow to inf/NaN, subnormal products, ties, wide ranges."""
    rng = np.random.default_rng(7)
    bk = 5 if order == "blocked" else None
    K = 23
    rows = [
        np.r_[np.full(11, 60000.0), np.full(12, -60000.0)],  # fp16 overflow then back
        np.r_[1.0, np.full(K - 1, 2.0**-11)],  # ties at 1 in fp16
        np.r_[2.0**-12, -(2.0**-12), np.full(K - 2, 2.0**-13)],  # subnormal products
        np.tile([1e4, -1e4, 3.0], 8)[:K],  # cancellation
        np.r_[np.inf, np.zeros(K - 2), -np.inf],  # inf - inf = NaN
        np.r_[-0.0, np.full(K - 1, -0.0)],  # all -0
        rng.standard_normal(K) * 2.0 ** rng.integers(-40, 40, K),  # wide range (bf16/fp32)
        lb.round(rng.standard_normal(K) * 300, "e4m3"),
    ]
    A = np.array(rows)
    B = np.stack(
        [
            np.ones(K),
            np.where(np.arange(K) % 2, -1.0, 1.0),
            np.full(K, 2.0**-6),
            rng.standard_normal(K),
        ],
        axis=1,
    )
    for mode in MODES:
        for acc in ("fp16", "bf16", "e4m3", "fp32"):
            for fma in (False, True):
                if fma and order == "pairwise":
                    continue
                kw = dict(
                    acc=acc,
                    acc_mode=mode,
                    order=order,
                    block_k=bk,
                    fma=fma,
                    seed=3,
                    rand_bits=8 if mode == "sr_bits" else None,
                )
                with np.errstate(all="ignore"):
                    both(A, B, **kw)
                    both(A.astype(np.float32), B.astype(np.float32), **kw)


@pytest.mark.parametrize("order", ["sequential", "pairwise", "blocked"])
def test_few_columns_transposed_path(order: str) -> None:
    """Matrix-vector shapes run the kernel on C^T = B^T A^T; draws stay the original ones."""
    rng = np.random.default_rng(9)
    A = random_operand(rng, (2, 11, 13))
    x = random_operand(rng, (13,))
    X = random_operand(rng, (13, 3))
    bk = 4 if order == "blocked" else None
    for mode in ("rne", "rd", "sr", "sr_equal"):
        kw = dict(
            prod="bf16", prod_mode=mode, acc="fp16", acc_mode=mode, order=order, block_k=bk, seed=4
        )
        for dt in (np.float64, np.float32):
            both(A.astype(dt), x.astype(dt), **kw)
            both(A.astype(dt), X.astype(dt), **kw)
        # the same element computed inside a wide problem has the same bits
        wide = np.concatenate([X, random_operand(rng, (13, 20))], axis=1)
        full = matmul(A[0], wide, **kw)
        narrow = matmul(A[0], wide[:, :3], **kw)
        if mode in ("rne", "rd"):  # deterministic: independent of the problem's shape
            assert same(full[:, :3], narrow)


def test_two_prod_path_equals_exact_path() -> None:
    """Forcing the general (two_prod) product path gives the same bits on exact data."""
    rng = np.random.default_rng(3)
    A = random_operand(rng, (1, 6, 21))
    B = random_operand(rng, (1, 21, 9))
    ia = np.zeros(1, dtype=np.int64)
    for order, bk in (("sequential", None), ("pairwise", None), ("blocked", 4)):
        for prod in (None, "fp16"):
            cfg = GemmConfig(acc="fp16", prod=prod, order=order, block_k=bk)
            a = gemm_kernel(A, B, ia, ia, cfg, 0, exact=True)
            b = gemm_kernel(A, B, ia, ia, cfg, 0, exact=False)
            r = gemm_reference(A, B, ia, ia, cfg, 0)
            assert_same(a, r, f"exact {cfg}")
            assert_same(b, r, f"two_prod {cfg}")


def test_scalar_rounding_matches_reference() -> None:
    """The kernel's scalar rounding (all modes) and its RNE fast path equal lowbit.round."""
    rng = np.random.default_rng(0)
    for name in ("fp16", "bf16", "e4m3", "e5m2", "e3m2", "fp32", "e4m3fnuz", "e8m50"):
        f = lb.get_format(name)
        x = rng.standard_normal(4000) * 2.0 ** rng.integers(
            f.emin - f.man_bits - 3, min(f.emax + 3, 1000), 4000
        )
        grid = lb.round(x, f, "rtz", impl="reference")
        half = np.abs(grid) * 2.0**-f.man_bits / 2
        x = np.concatenate(
            [
                x,
                grid + half,
                grid - half,
                [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, f.max, -f.max, 1e300],
            ]
        )
        for ov in (None, "saturate"):
            infv = (
                f.max if (ov == "saturate" or not f.has_nan) else (np.inf if f.has_inf else np.nan)
            )
            want = lb.round(x, f, "rne", overflow=ov, impl="reference")
            got = nk.rne_vector(
                x, f.man_bits, f.emin, f.emax - f.man_bits + 1, f.max, infv, f.special == "fnuz"
            )
            assert_same(got, want, f"rne fast {name} {ov}")
            for mid, mode in enumerate(MODES):
                rb = 1 if name == "e8m50" else (8 if mode == "sr_bits" else 20)
                want = lb.round(
                    x, f, mode, overflow=ov, seed=5, rand_bits=rb, offset=7, impl="reference"
                )
                k0, k1 = seed_keys(5)
                got = nk.round_vector(
                    x, f.man_bits, f.emin, f.max, infv, mid, f.special == "fnuz", rb, k0, k1, 7
                )
                assert_same(got, want, f"{name} {mode} {ov}")


def test_draws_and_exact_sum_helpers() -> None:
    idx = np.array([0, 1, 2**32 - 1, 2**32, 2**40 + 5], dtype=np.int64)
    k0, k1 = seed_keys(99)
    assert list(nk.draws(idx, k0, k1)) == [bits_int(99, int(i)) for i in idx]
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 9))
        vals = rng.standard_normal(n) * 2.0 ** rng.integers(-60, 60, n)
        vals = np.concatenate([vals, -vals[: int(rng.integers(0, 3))] * (1 + 2.0**-52)])
        hi, odd = nk.sum_exact(vals, False, False, False)
        exact = sum((Fraction(float(v)) for v in vals), Fraction(0))
        assert hi == math.fsum(vals.tolist())
        if Fraction(hi) == exact:
            assert odd == hi
            continue
        d = float(exact)
        lo_d, hi_d = (
            (float(np.nextafter(d, -np.inf)), d)
            if Fraction(d) > exact
            else (d, float(np.nextafter(d, np.inf)))
        )
        assert odd in (lo_d, hi_d)
        assert struct.unpack("<q", struct.pack("<d", odd))[0] & 1 == 1


# =============================================================================================
# semantics spot checks, presets, configuration
# =============================================================================================
def test_stagnation_and_orders() -> None:
    ones = np.ones(4096)
    assert float(dot(ones, ones, acc="fp16")) == 2048.0  # fp16 stops counting at 2048
    assert float(dot(ones, ones, acc="fp16", order="pairwise")) == 4096.0
    assert float(dot(ones, ones, acc="fp16", block_k=32)) == 4096.0
    assert float(dot(ones, ones, acc="fp16", acc_mode="rd")) == 2048.0
    assert float(dot(ones, ones, acc="fp16", acc_mode="ru")) > 4096.0 - 1
    # stochastic rounding keeps counting (unbiased): close to 4096
    v = float(dot(ones, ones, acc="fp16", acc_mode="sr", seed=1))
    assert 3800 < v < 4400
    assert float(dot(ones, ones, acc="fp16", acc_mode="sr", seed=1)) == v  # reproducible
    # every product rounded to fp16 first: 1.0001^2 -> 1 in fp16 products
    x = np.full(3, 1.0 + 2.0**-13)
    assert float(dot(x, x, prod="fp16")) == 3.0
    assert float(dot(x, x)) == 3 * (1 + 2.0**-13) ** 2


def test_presets_and_overrides() -> None:
    presets = gemm_presets()
    for name in (
        "fp32-acc",
        "fp16-acc",
        "bf16-acc",
        "fp8-e4m3-fp32acc",
        "fp8-tensorcore",
        "tf32",
        "fp64",
        "fp16-chop",
        "fp8-e5m2-fp32acc",
    ):
        assert name in presets
    assert presets["fp8-tensorcore"].block_k == 32
    assert presets["fp8-tensorcore"].mult == "e4m3fn"
    assert presets["fp8-tensorcore"].acc == "fp32"
    assert presets["fp16-acc"].acc == "fp16"
    rng = np.random.default_rng(2)
    A = rng.standard_normal((4, 70)).astype(np.float32)
    B = rng.standard_normal((70, 3)).astype(np.float32)
    for name, cfg in presets.items():
        got = matmul(A, B, preset=name)
        assert same(got, matmul(A, B, preset=cfg)), name
        assert got.shape == (4, 3)
    assert same(matmul(A, B, preset="fp16-acc", acc="fp32"), matmul(A, B, mult="fp16", acc="fp32"))
    assert same(
        matmul(A, B, preset="fp16-acc", block_k=8),
        matmul(A, B, mult="fp16", acc="fp16", order="blocked", block_k=8),
    )
    assert same(
        matmul(A, B, preset="fp8-tensorcore", order="sequential"),
        matmul(A, B, mult="e4m3", acc="fp32"),
    )
    # the example: block_k alone selects the blocked order, out_fmt is an alias
    C = matmul(A, B, mult="e4m3", acc="fp16", acc_mode="rne", block_k=32, out_fmt="bf16")
    assert same(C, matmul(A, B, mult="e4m3", acc="fp16", order="blocked", block_k=32, out="bf16"))
    assert same(C, lb.round(C, "bf16"))
    with pytest.raises(ValueError, match="unknown GemmConfig preset"):
        matmul(A, B, preset="fp7")


def test_config_json_round_trip() -> None:
    custom = lb.FloatFormat(5, 4, bias=9)
    cfgs = [
        *gemm_presets().values(),
        GemmConfig(
            mult="e5m2",
            prod="fp16",
            prod_mode="sr",
            acc="bf16",
            acc_mode="ru",
            order="pairwise",
            out="posit16",
            out_mode="sr",
            rand_bits=12,
        ),
        GemmConfig(acc=custom, block_k=4, fma=True, overflow="saturate"),
        GemmConfig(acc="half", acc_mode="nearest"),
    ]
    for cfg in cfgs:
        text = json.dumps(cfg.to_dict())
        back = GemmConfig.from_dict(json.loads(text))
        assert back == cfg
        assert back.to_dict() == cfg.to_dict()
    assert GemmConfig(acc="half").acc == "fp16"  # names are canonical
    with pytest.raises(ValueError, match="unknown GemmConfig keys"):
        GemmConfig.from_dict({"accumulator": "fp16"})


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"order": "diagonal"}, "order="),
        ({"order": "blocked"}, "needs block_k"),
        ({"order": "pairwise", "block_k": 4}, "only meaningful"),
        ({"fma": True, "prod": "fp16"}, "fma=True"),
        ({"fma": True, "order": "pairwise"}, "fma=True"),
        ({"acc": "posit16"}, "float formats"),
        ({"acc": "fp64", "acc_mode": "ru"}, "RNE only"),
        ({"acc": "fp32", "acc_mode": "sr", "rand_bits": 32}, "rand_bits <= 28"),
        ({"acc": "fp16", "acc_mode": "sr_bits"}, "needs rand_bits"),
        ({"acc": "e8m0"}, "sign and a zero"),
        ({"acc": "fp16", "overflow": "wrap"}, "overflow="),
        ({"acc": "fp17"}, "unknown format"),
        ({"block_k": 0}, "block_k"),
    ],
)
def test_config_errors(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GemmConfig(**kw)


def test_shape_and_type_errors() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 2\)"):
        matmul(np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        dot(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="broadcast"):
        matmul(np.ones((2, 2, 3)), np.ones((3, 3, 2)))
    with pytest.raises(ValueError, match="at least one dimension"):
        matmul(np.float64(2.0), np.ones(3))
    with pytest.raises(TypeError, match="int64"):
        matmul(np.ones((2, 3), dtype=np.int64), np.ones((3, 2)))
    with pytest.raises(TypeError, match="bool"):
        matmul(np.ones((2, 3)), np.ones((3, 2), dtype=bool))
    with pytest.raises(TypeError, match="complex"):
        matmul(np.ones((2, 3), dtype=complex), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lowbit\.dot takes 1-D or 2-D"):
        dot(np.ones((2, 2, 2)), np.ones((2, 2)))


def test_shapes_like_numpy() -> None:
    rng = np.random.default_rng(4)
    for sa, sb in [
        ((5,), (5,)),
        ((5,), (5, 3)),
        ((4, 5), (5,)),
        ((2, 1, 4, 5), (3, 5, 2)),
        ((3, 4, 5), (5, 2)),
        ((4, 0), (0, 3)),
        ((0, 5), (5, 2)),
        ((1, 5), (5, 1)),
    ]:
        A = rng.standard_normal(sa)
        B = rng.standard_normal(sb)
        want = np.matmul(A, B)
        got = matmul(A, B)
        assert np.shape(got) == want.shape, (sa, sb)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert same(matmul(A, B, impl="reference"), got)
    assert isinstance(dot(np.ones(3), np.ones(3)), np.floating)
    assert mm_mod_fn is matmul


def test_result_dtypes() -> None:
    h = np.ones((2, 3), dtype=np.float16)
    assert matmul(h, h.T, acc="fp16").dtype == np.float16
    assert matmul(h, h.T, acc="fp32").dtype == np.float32
    assert matmul(h, h.T).dtype == np.float64
    b = h.astype(ml_dtypes.bfloat16)
    assert matmul(b, b.T, preset="bf16-acc").dtype == ml_dtypes.bfloat16
    assert matmul(b, b.T, acc="bf16", out="e4m3").dtype == ml_dtypes.bfloat16
    assert matmul(h.astype(np.float32), h.T, acc="fp16").dtype == np.float32
    assert matmul(h, h.T, acc="fp16", out="posit16").dtype == np.float64


def test_stochastic_reproducible_and_distinct() -> None:
    rng = np.random.default_rng(5)
    A = rng.standard_normal((6, 50))
    B = rng.standard_normal((50, 4))
    kw = dict(prod="bf16", prod_mode="sr", acc="bf16", acc_mode="sr")
    a = matmul(A, B, seed=1, **kw)
    assert same(a, matmul(A, B, seed=1, **kw))
    assert not same(a, matmul(A, B, seed=2, **kw))
    # one output element does not depend on the others (draws are per element index)
    assert same(matmul(A, B, seed=1, **kw)[2:3], matmul(A, B, seed=1, **kw)[2:3])


# =============================================================================================
# torch (autograd) and jax
# =============================================================================================
def test_torch_gradcheck_fp64_path() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    A = torch.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    B = torch.tensor(rng.standard_normal((4, 5)), requires_grad=True)
    v = torch.tensor(rng.standard_normal(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: matmul(a, b), (A, B))
    assert torch.autograd.gradcheck(lambda a, b: matmul(a, b, order="pairwise"), (A, B))
    assert torch.autograd.gradcheck(lambda a, b: matmul(a, b, block_k=3), (A, B))
    assert torch.autograd.gradcheck(lambda a, b: matmul(a, b), (A, v))
    assert torch.autograd.gradcheck(
        lambda a, b: dot(a, b), (v, v.detach().clone().requires_grad_())
    )


def test_torch_emulated_backward_matches_reference() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    A = rng.standard_normal((3, 1, 5, 8))
    B = rng.standard_normal((2, 8, 4))
    cfg = GemmConfig(mult="bf16", acc="fp16", acc_mode="sr", order="blocked", block_k=3)
    bwd = GemmConfig(acc="bf16", acc_mode="rtz")
    tA = torch.tensor(A, requires_grad=True)
    tB = torch.tensor(B, requires_grad=True)
    C = matmul(tA, tB, preset=cfg, bwd=bwd, seed=21)
    assert same(C.detach().numpy(), matmul(A, B, preset=cfg, seed=21, impl="reference"))
    G = rng.standard_normal(C.shape)
    C.backward(torch.tensor(G))
    Ar = lb.round(A, "bf16")
    Br = lb.round(B, "bf16")
    ga, gb = backward_numpy(Ar, Br, G, bwd, 21, "reference")
    assert same(tA.grad.numpy(), ga)
    assert same(tB.grad.numpy(), gb)
    assert tA.grad.shape == tA.shape and tB.grad.shape == tB.shape
    # same configuration forward and backward by default
    tA.grad = None
    matmul(tA, tB, preset=cfg, seed=21).sum().backward()
    ga2, _ = backward_numpy(Ar, Br, np.ones(C.shape), cfg, 21, "kernel")
    assert same(tA.grad.numpy(), ga2)


def test_torch_dtypes_and_errors() -> None:
    torch = pytest.importorskip("torch")
    h = torch.ones(2, 3, dtype=torch.bfloat16)
    C = matmul(h, h.T, preset="bf16-acc")
    assert C.dtype == torch.bfloat16 and C.shape == (2, 2)
    assert matmul(h.float(), h.T.float(), acc="fp16").dtype == torch.float32
    with pytest.raises(TypeError, match="int32"):
        matmul(torch.ones(2, 3, dtype=torch.int32), torch.ones(3, 2))
    with pytest.raises(TypeError, match="different backends"):
        matmul(torch.ones(2, 3), np.ones((3, 2), dtype=np.float32))


def test_numpy_torch_jax_agree() -> None:
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    rng = np.random.default_rng(8)
    A = rng.standard_normal((2, 4, 9)).astype(np.float32)
    B = rng.standard_normal((9, 3)).astype(np.float32)
    kw = dict(mult="e4m3", acc="fp16", acc_mode="sr", block_k=4, seed=5)
    want = matmul(A, B, **kw)
    assert want.dtype == np.float32
    t = matmul(torch.from_numpy(A), torch.from_numpy(B), **kw)
    assert same(t.numpy(), want)
    j = matmul(jnp.asarray(A), jnp.asarray(B), **kw)
    assert isinstance(j, jax.Array) and same(np.asarray(j), want)
    jj = jax.jit(lambda a, b: matmul(a, b, **kw))(jnp.asarray(A), jnp.asarray(B))
    assert same(np.asarray(jj), want)
    # gradients through jax equal torch's
    ga, gb = jax.grad(lambda a, b: matmul(a, b, **kw).sum(), argnums=(0, 1))(
        jnp.asarray(A), jnp.asarray(B)
    )
    tA = torch.from_numpy(A).requires_grad_()
    tB = torch.from_numpy(B).requires_grad_()
    matmul(tA, tB, **kw).sum().backward()
    assert same(np.asarray(ga), tA.grad.numpy())
    assert same(np.asarray(gb), tB.grad.numpy())
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="float64"):
            matmul(jnp.asarray(A), jnp.asarray(B))


def test_precision_context_sets_products_and_accumulation() -> None:
    import lowbit as lb

    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((6, 40)), rng.standard_normal((40, 5))
    with lb.precision("bf16", "rtz"):
        got = lb.matmul(A, B)
    want = lb.matmul(A, B, prod="bf16", prod_mode="rtz", acc="bf16", acc_mode="rtz")
    assert np.array_equal(got, want)
    assert not np.array_equal(got, lb.matmul(A, B, acc="fp32"))
    with lb.precision("bf16", "sr", seed=4):
        s1, s2 = lb.matmul(A, B), lb.matmul(A, B)  # consecutive calls draw fresh bits
    with lb.precision("bf16", "sr", seed=4):
        r1 = lb.matmul(A, B)
    assert np.array_equal(s1, r1) and not np.array_equal(s1, s2)
