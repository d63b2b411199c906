"""LowPrecisionTensor autograd: emulated backward passes against independent oracles.

* Programs whose every value is exact in fp32 (small dyadic numbers): the gradients equal plain
  float64 torch autograd bit for bit, so a wrong derivative, transpose, broadcasting reduction
  or accumulation shows up as a different number.
* fp32 programs of ``+ - * / abs minimum maximum`` on random fp32 values: the gradients equal
  torch's own float32 autograd bit for bit (torch's float32 CPU kernels for these are IEEE
  correctly rounded, and lowbit evaluates torch's derivative formulas operation by operation
  in the same order). Not ``sqrt``: torch's vectorized float32 sqrt is not correctly rounded
  on every CPU (AVX512 builds differ in the last bit), so it is checked by the oracles below.
* bf16/fp16 programs in several modes: every forward value and gradient equals a scalar oracle
  written out here, each step rounded exactly by ``tests/oracle.py`` (Fractions; mpmath at 200
  bits for exp/log/tanh/sigmoid/sqrt) in the order of the module docstring's formulas.
* Accumulation over several uses and several ``backward`` calls, stochastic rounding
  reproducibility, and the ``NotImplementedError`` of what has no emulated backward.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import lowbit as lb
from lowbit import arith
from oracle import FloatOracle

torch = pytest.importorskip("torch")
from lowbit.arith.tensor import LowPrecisionTensor, tensor  # noqa: E402


def _bits(t: torch.Tensor) -> np.ndarray:
    """float64 bit patterns (so signed zeros count)."""
    if isinstance(t, LowPrecisionTensor):
        t = t.plain()
    return t.detach().to(torch.float64).cpu().numpy().view(np.int64)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(np.array_equal(_bits(a), _bits(b)))


# ---- (a) wide format: exact programs against float64 autograd ---------------------------------
def _exact_program(
    X: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """Every value stays a small dyadic number: exact in fp32 and in float64."""
    h = X @ W.T + b  # (4, 2): matmul, transpose, broadcast bias
    k = torch.minimum(h, c) - torch.maximum(h * 0.5, -c)  # ties planted in c
    m = (k.abs() * h).reshape(8)[::2]
    n = torch.cat([m, -m.flip(0)]).cumsum(0)
    top = torch.cat([h, h[:1]]).amax(dim=0)  # row 0 repeated: ties in amax
    return (
        n.sum()
        + (h / 4).mean()
        + (X * X).sum(dim=1).mean()
        + torch.sqrt(W * W).sum()
        + torch.mv(W, X[0]).sum()
        + X[0].dot(X[1])
        + (b.expand(4, 2) * c).sum()
        + torch.stack([h, c]).permute(1, 0, 2).sum()
        + (1 - h).sum()
        + top.sum()
    )


def test_exact_program_gradients_equal_float64_autograd() -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(-8, 9, (4, 3)) / 8
    W = rng.choice([-1, 1], (2, 3)) * 2.0 ** rng.integers(-3, 1, (2, 3))  # sqrt(W*W): 2|W| = 2^k
    b = rng.integers(-8, 9, 2) / 8
    c = rng.integers(-8, 9, (4, 2)) / 8
    c[:2] = X[:2] @ W.T + b  # ties of minimum(h, c)
    c[2, 0] = -0.5 * (X[2] @ W[0] + b[0])  # a tie of maximum(h / 2, -c)
    plain = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (X, W, b, c)]
    lp = [tensor(v, "fp32", "rne", requires_grad=True) for v in (X, W, b, c)]
    ref = _exact_program(*plain)
    ref.backward()
    got = _exact_program(*lp)
    got.backward()
    assert isinstance(got, LowPrecisionTensor) and _same(got, ref)
    for name, p, q in zip("XWbc", lp, plain, strict=True):
        assert isinstance(p.grad, LowPrecisionTensor), name
        assert _same(p.grad, q.grad), (name, p.grad, q.grad)


def _fp32_program(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """No tensor used more than twice (torch adds three float32 gradients with two roundings,
    lowbit with one) and no broadcasting (torch's float32 sums have their own order)."""
    u = a / b
    v = (u * c).abs() + 1.0
    return torch.minimum(v, c) - torch.maximum(b, -a) / v


def test_fp32_gradients_equal_torch_float32_autograd() -> None:
    rng = np.random.default_rng(1)
    a, b, c, g = (
        np.asarray(lb.round(rng.uniform(0.5, 2, 256) * rng.choice([-1, 1], 256), "fp32"))
        for _ in range(4)
    )
    b[:16] = -a[:16]  # ties of maximum(b, -a)
    f32 = [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in (a, b, c)]
    lp = [tensor(v, "fp32", "rne", requires_grad=True) for v in (a, b, c)]
    out32 = _fp32_program(*f32)
    out32.backward(torch.tensor(g, dtype=torch.float32))
    out = _fp32_program(*lp)
    out.backward(torch.tensor(g, dtype=torch.float64))
    assert _same(out, out32)
    for name, p, q in zip("abc", lp, f32, strict=True):
        assert _same(p.grad, q.grad), name


# ---- (b) low formats: an exact scalar oracle, step by step ------------------------------------
class _Ref:
    """Scalar emulated arithmetic from the exact oracle: every result rounded once."""

    def __init__(self, fmt: str, mode: str) -> None:
        self.oracle = FloatOracle(lb.get_format(fmt))
        self.mode = mode

    def r(self, v: Fraction) -> float:
        return self.oracle.round(v, self.mode)

    def add(self, a: float, b: float) -> float:
        return self.r(Fraction(a) + Fraction(b))

    def sub(self, a: float, b: float) -> float:
        return self.r(Fraction(a) - Fraction(b))

    def mul(self, a: float, b: float) -> float:
        return self.r(Fraction(a) * Fraction(b))

    def div(self, a: float, b: float) -> float:
        return self.r(Fraction(a) / Fraction(b))

    def fn(self, name: str, a: float) -> float:
        f = {
            "exp": mpmath.exp,
            "log": mpmath.log,
            "tanh": mpmath.tanh,
            "sqrt": mpmath.sqrt,
            "sigmoid": lambda x: 1 / (1 + mpmath.exp(-x)),
        }[name]
        with mpmath.workprec(200):
            sign, man, exp, _ = mpmath.mpf(f(mpmath.mpf(a)))._mpf_
        return self.r((-1) ** sign * Fraction(int(man)) * Fraction(2) ** int(exp))

    def total(self, *vals: float) -> float:
        """The engine's sum over several uses, rounded once."""
        return self.r(sum((Fraction(v) for v in vals), Fraction(0)))

    def dot(self, xs: list[float], ys: list[float]) -> float:
        """The emulated matmul's inner product: products rounded, summed in order."""
        acc = self.mul(xs[0], ys[0])
        for x, y in zip(xs[1:], ys[1:], strict=True):
            acc = self.add(acc, self.mul(x, y))
        return acc

    def sum(self, xs: list[float]) -> float:
        acc = xs[0]
        for x in xs[1:]:
            acc = self.add(acc, x)
        return acc


def _low_program(
    X: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    S = X @ W.T
    T = S + b
    H = torch.tanh(T)
    P = torch.sigmoid(H) * torch.sqrt(T.abs() + 1.0)
    Q = torch.log(torch.exp(-H) + P)
    R = Q / torch.minimum(P, torch.tensor(2.0)) - torch.maximum(H, torch.tensor(0.0))
    loss = R.mean() + (X * X).sum()
    return loss, [S, T, H, P, Q, R]


def _low_oracle(
    X: np.ndarray, W: np.ndarray, b: np.ndarray, e: _Ref
) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The forward values and gradients of :func:`_low_program`, written out scalar by
    scalar with the module docstring's formulas (``g`` the incoming gradient)."""
    B, n = X.shape
    m = W.shape[0]
    rows, cols = range(B), range(m)
    S = [[e.dot(list(X[i]), list(W[j])) for j in cols] for i in rows]
    T = [[e.add(S[i][j], b[j]) for j in cols] for i in rows]
    H = [[e.fn("tanh", T[i][j]) for j in cols] for i in rows]
    sg = [[e.fn("sigmoid", H[i][j]) for j in cols] for i in rows]
    a1 = [[e.add(abs(T[i][j]), 1.0) for j in cols] for i in rows]
    sq = [[e.fn("sqrt", a1[i][j]) for j in cols] for i in rows]
    P = [[e.mul(sg[i][j], sq[i][j]) for j in cols] for i in rows]
    ex = [[e.fn("exp", -H[i][j]) for j in cols] for i in rows]
    ep = [[e.add(ex[i][j], P[i][j]) for j in cols] for i in rows]
    Q = [[e.fn("log", ep[i][j]) for j in cols] for i in rows]
    mn = [[min(P[i][j], 2.0) for j in cols] for i in rows]
    qd = [[e.div(Q[i][j], mn[i][j]) for j in cols] for i in rows]
    mx = [[max(H[i][j], 0.0) for j in cols] for i in rows]
    R = [[e.sub(qd[i][j], mx[i][j]) for j in cols] for i in rows]
    mean = e.div(e.sum([R[i][j] for i in rows for j in cols]), float(B * m))
    xx = e.sum([e.mul(X[i][k], X[i][k]) for i in rows for k in range(n)])
    loss = e.add(mean, xx)
    # backward, g = 1 at the root
    gR = e.div(1.0, float(B * m))  # mean: broadcast, then / count
    gX = [[0.0] * n for _ in rows]
    gS = [[0.0] * m for _ in rows]
    gT = [[0.0] * m for _ in rows]
    for i in rows:
        for j in cols:
            g = gR
            g_qd, g_mx = g, -g
            # maximum(H, 0): g where H > 0, g / 2 on a tie, 0 below
            gH_mx = g_mx if H[i][j] > 0 else (e.div(g_mx, 2.0) if H[i][j] == 0 else 0.0)
            gQ = e.div(g_qd, mn[i][j])
            g_mn = e.mul(-g_qd, e.div(qd[i][j], mn[i][j]))
            gP_mn = g_mn if P[i][j] < 2 else (e.div(g_mn, 2.0) if P[i][j] == 2 else 0.0)
            g_ep = e.div(gQ, ep[i][j])
            g_nh = e.mul(g_ep, ex[i][j])
            gH_neg = -g_nh
            gP = e.total(gP_mn, g_ep)  # P has two uses
            g_sg = e.mul(gP, sq[i][j])
            g_sq = e.mul(gP, sg[i][j])
            g_a1 = e.div(g_sq, e.mul(2.0, sq[i][j]))
            gT_abs = e.mul(g_a1, float(np.sign(T[i][j])))
            gH_sg = e.mul(e.mul(g_sg, e.sub(1.0, sg[i][j])), sg[i][j])
            gH = e.total(gH_sg, gH_neg, gH_mx)  # H has three uses
            gT_tanh = e.mul(gH, e.sub(1.0, e.mul(H[i][j], H[i][j])))
            gT[i][j] = e.total(gT_tanh, gT_abs)  # T has two uses
            gS[i][j] = gT[i][j]
    gb = [e.sum([gT[i][j] for i in rows]) for j in cols]  # b broadcast over the rows
    gWT = [
        [e.dot([X[i][k] for i in rows], [gS[i][j] for i in rows]) for j in cols] for k in range(n)
    ]
    for i in rows:
        for k in range(n):
            g_mm = e.dot(list(gS[i]), [W[j][k] for j in cols])
            gX[i][k] = e.total(g_mm, e.mul(1.0, X[i][k]), e.mul(1.0, X[i][k]))  # three uses
    fwd = {
        "S": np.array(S),
        "T": np.array(T),
        "H": np.array(H),
        "P": np.array(P),
        "Q": np.array(Q),
        "R": np.array(R),
    }
    grads = {"X": np.array(gX), "W": np.array(gWT).T, "b": np.array(gb)}
    return loss, fwd, grads


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["rne", "rtz", "ru"])
def test_low_format_program_equals_step_by_step_oracle(fmt: str, mode: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{fmt} {mode}".encode()))
    X = np.asarray(lb.round(rng.standard_normal((3, 3)), fmt))
    W = np.asarray(lb.round(rng.standard_normal((2, 3)), fmt))
    b = np.asarray(lb.round(rng.standard_normal(2) / 2, fmt))
    lp = [tensor(v, fmt, mode, requires_grad=True) for v in (X, W, b)]
    loss, inter = _low_program(*lp)
    loss.backward()
    want_loss, want_fwd, want_grad = _low_oracle(X, W, b, _Ref(fmt, mode))
    assert float(loss.detach()) == want_loss
    for name, t in zip("STHPQR", inter, strict=True):
        assert np.array_equal(t.plain().detach().numpy(), want_fwd[name]), name
    for name, p in zip("XWb", lp, strict=True):
        assert np.array_equal(_bits(p.grad), np.asarray(want_grad[name]).view(np.int64)), (
            name,
            p.grad,
            want_grad[name],
        )


# ---- (c) accumulation -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["rne", "rtz", "ru"])
def test_grad_accumulates_over_backward_calls_with_an_emulated_add(mode: str) -> None:
    a1, a2 = 1.0, 3 * 2.0**-12  # 1 + a2 lies 3/4 of an fp16 ulp above 1: every mode differs
    x = tensor([1.0, -1.0], "fp16", mode, requires_grad=True)
    (x * a1).sum().backward()
    first = x.grad
    assert isinstance(first, LowPrecisionTensor) and first.fmt == x.fmt
    (x * a2).sum().backward()
    assert isinstance(x.grad, LowPrecisionTensor)
    want = arith.add(np.array([a1, a1]), np.array([a2, a2]), "fp16", mode)
    assert np.array_equal(x.grad.plain().numpy(), want)
    ref = FloatOracle(lb.get_format("fp16")).round(Fraction(a1) + Fraction(a2), mode)
    assert float(x.grad[0]) == ref


@pytest.mark.parametrize("mode", ["rne", "rtz", "ru"])
def test_gradients_of_several_uses_are_added_then_rounded_once(mode: str) -> None:
    oracle = FloatOracle(lb.get_format("fp16"))
    x = tensor([1.0], "fp16", mode, requires_grad=True)
    (x * 1.0 + x * (3 * 2.0**-12)).sum().backward()  # two uses: one emulated addition
    assert float(x.grad) == float(arith.add(1.0, 3 * 2.0**-12, "fp16", mode))
    y = tensor([1.0], "fp16", mode, requires_grad=True)
    third = 3 * 2.0**-13  # 3/8 ulp each: two roundings would lose them in RNE
    (y * 1.0 + y * third + y * third).sum().backward()
    assert float(y.grad) == oracle.round(1 + 2 * Fraction(third), mode)
    # a non-leaf with several uses: its gradient is rounded before it flows on
    z = tensor([1.0], "fp16", mode, requires_grad=True)
    h = z * 1.0
    h.retain_grad()
    (h * 1.0 + h * third + h * third).sum().backward()
    assert float(h.grad) == oracle.round(1 + 2 * Fraction(third), mode)
    assert float(z.grad) == float(h.grad)


# ---- (d) stochastic rounding --------------------------------------------------------------------
def _sr_run(seed: int, grad: bool) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    rng = np.random.default_rng(11)
    xv, wv = rng.standard_normal(256), rng.standard_normal((8, 256))
    with lb.precision("bf16", "sr", seed=seed):
        x = tensor(xv, requires_grad=grad)
        w = tensor(wv, requires_grad=grad)
    y = torch.tanh(w @ x / 3.0).sum() + (x * x).mean()
    after_forward = x.stream.offset
    if not grad:
        return y.plain().detach().numpy(), None, after_forward, after_forward
    y.backward()
    return (
        y.plain().detach().numpy(),
        np.concatenate([_bits(x.grad), _bits(w.grad).ravel()]),
        after_forward,
        x.stream.offset,
    )


def test_stochastic_backward_is_reproducible_by_seed() -> None:
    y1, g1, fwd1, end1 = _sr_run(5, True)
    y2, g2, _, _ = _sr_run(5, True)
    _, g3, _, _ = _sr_run(6, True)
    y0, _, fwd0, _ = _sr_run(5, False)
    assert np.array_equal(g1, g2) and np.array_equal(y1, y2)
    assert not np.array_equal(g1, g3)  # another seed: other draws
    assert np.array_equal(y1, y0) and fwd1 == fwd0  # recording a graph draws nothing more
    assert end1 > fwd1  # the backward pass draws from the same stream, after the forward


def test_stochastic_backward_rounds_to_a_neighbour_without_bias() -> None:
    # d(x / 3)/dx = 1 / 3 rounded stochastically per element: the neighbours of 1/3 only, the
    # upper one with probability (1/3 - lo) / (hi - lo)
    n = 20_000
    with lb.precision("fp16", "sr", seed=2):
        x = tensor(np.ones(n), requires_grad=True)
    (x / 3.0).backward(torch.ones(n, dtype=torch.float64))
    lo, hi, p_up = FloatOracle(lb.get_format("fp16")).sr_split(Fraction(1, 3))
    g = x.grad.plain().numpy()
    assert set(np.unique(g).tolist()) == {float(lo), float(hi)}
    frac = float(np.mean(g == float(hi)))
    assert abs(frac - float(p_up)) < 5 * math.sqrt(float(p_up * (1 - p_up)) / n)


# ---- what has no emulated backward -------------------------------------------------------------
def _leaf() -> LowPrecisionTensor:
    return tensor(np.arange(1.0, 7.0).reshape(2, 3), "bf16", requires_grad=True)


REFUSED: list[tuple[str, Callable[[LowPrecisionTensor], object]]] = [
    ("prod", lambda t: torch.prod(t)),
    ("repeat", lambda t: t.repeat(2, 1)),
    ("repeated index", lambda t: t[[0, 0]]),
    ("index_select", lambda t: torch.index_select(t, 0, torch.tensor([1, 1]))),
    ("where broadcast", lambda t: torch.where(torch.ones(4, 2, 3, dtype=torch.bool), t, 0.0)),
    ("plain operand", lambda t: t * torch.ones(3, dtype=torch.float64, requires_grad=True)),
    ("double backward", lambda t: torch.autograd.grad((t * t).sum(), [t], create_graph=True)),
    ("not emulated", lambda t: torch.sin(t)),
]


@pytest.mark.parametrize(("what", "call"), REFUSED, ids=[w for w, _ in REFUSED])
def test_no_silent_full_precision_backward(what: str, call: Callable[..., object]) -> None:
    with pytest.raises(NotImplementedError):
        call(_leaf())


def test_unique_indexing_and_no_grad_still_work() -> None:
    t = _leaf()
    (t[[1, 0]] * 2).sum().backward()  # a permutation: torch's backward only moves values
    assert np.array_equal(t.grad.plain().numpy(), np.full((2, 3), 2.0))
    with torch.no_grad():
        r = t[[0, 0]].repeat(2, 1)  # no graph: nothing to refuse
    assert isinstance(r, LowPrecisionTensor) and not r.requires_grad
    u = t.detach()
    assert not u.requires_grad and np.array_equal(torch.prod(u).plain().numpy(), 720.0)


def test_iteration_keeps_rows_emulated_and_in_the_graph() -> None:
    t = _leaf()
    rows = list(t)
    assert all(isinstance(r, LowPrecisionTensor) for r in rows)
    (rows[0] * rows[1]).sum().backward()
    want = np.stack([t.plain().detach().numpy()[1], t.plain().detach().numpy()[0]])
    assert np.array_equal(t.grad.plain().numpy(), want)


def test_autograd_grad_and_emulated_update() -> None:
    w = tensor([0.1, -0.2, 0.3], "bf16", requires_grad=True)
    x = tensor([1.5, 2.5, -0.5], "bf16")
    (gw,) = torch.autograd.grad((w * x).sum(), [w])
    assert isinstance(gw, LowPrecisionTensor) and np.array_equal(
        gw.plain().numpy(), x.plain().numpy()
    )
    assert w.grad is None  # autograd.grad does not accumulate
    with torch.no_grad():
        step = w - 0.01 * gw  # the update itself is emulated
    want = arith.sub(w.plain().detach().numpy(), arith.mul(0.01, x.plain().numpy(), "bf16"), "bf16")
    assert isinstance(step, LowPrecisionTensor) and np.array_equal(step.plain().numpy(), want)
