"""LowPrecisionArray / LowPrecisionTensor: numpy and torch code on emulated arithmetic.

Every result is compared bit for bit with the ``lb.arith`` call (or plain scalar loop of
``lb.arith`` calls) that defines it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import lowbit as lb
from lowbit import arith
from lowbit.arith import _emulate
from lowbit.arith.lparray import HANDLED_FUNCTIONS, LowPrecisionArray, array

FMTS = ["fp16", "bf16", "e4m3"]


@pytest.fixture(autouse=True)
def _one_numba_thread() -> Iterator[None]:
    """Scalar reference loops: avoid a parallel kernel launch per scalar operation."""
    with _emulate.serial_kernels():
        yield


DET_MODES = ["rne", "rtz", "ru", "rd", "ro"]


def _bits(x: object) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    v = np.where(np.isnan(v), np.nan, v)  # one NaN pattern
    return v.view(np.int64)


def same(a: object, b: object) -> bool:
    """Bit-identical float64 values (NaN == NaN), same shape."""
    return np.shape(a) == np.shape(b) and np.array_equal(_bits(a), _bits(b))


def _data(fmt: str, shape: tuple[int, ...], seed: int, positive: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    if positive:
        x = np.abs(x) + 0.01
    return np.asarray(lb.round(x, fmt), dtype=np.float64)


BINARY = [
    (np.add, arith.add),
    (np.subtract, arith.sub),
    (np.multiply, arith.mul),
    (np.true_divide, arith.div),
]
UNARY = [
    (np.sqrt, arith.sqrt, True),
    (np.negative, arith.neg, False),
    (np.absolute, arith.abs, False),
    (np.exp, arith.exp, False),
    (np.log, arith.log, True),
    (np.tanh, arith.tanh, False),
]


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("mode", DET_MODES)
def test_ufuncs_equal_arith(fmt: str, mode: str) -> None:
    x, y = _data(fmt, (5, 7), 1), _data(fmt, (5, 7), 2)
    y[0, 0] = 0.0  # division by zero, signed zeros
    x[0, 1], y[0, 1] = 0.0, -0.0
    a, b = array(x, fmt, mode), array(y, fmt, mode)
    for uf, op in BINARY:
        with np.errstate(all="ignore"):
            got = uf(a, b)
        assert isinstance(got, LowPrecisionArray)
        assert same(got, op(x, y, fmt, mode)), uf.__name__
    for uf, op, pos in UNARY:
        xx = np.abs(x) + 0 if pos else x
        aa = array(xx, fmt, mode)
        assert same(uf(aa), op(xx, fmt, mode)), uf.__name__
    assert same(np.square(a), arith.mul(x, x, fmt, mode))
    assert same(np.minimum(a, b), arith.minimum(x, y, fmt))
    assert same(np.maximum(a, b), arith.maximum(x, y, fmt))
    assert same(a.sigmoid(), arith.sigmoid(x, fmt, mode))
    # operators go through the same ufuncs
    assert same(a + b, arith.add(x, y, fmt, mode))
    assert same(-a, arith.neg(x, fmt, mode))
    assert same(abs(a), arith.abs(x, fmt, mode))
    for cmp, ref in ((a < b, x < y), (a == b, x == y), (a >= b, x >= y), (a != b, x != y)):
        assert isinstance(cmp, np.ndarray) and cmp.dtype == bool
        assert np.array_equal(cmp, ref)


def test_method_forms_and_sqrt_expression() -> None:
    x = _data("fp16", (4, 4), 3, positive=True) / 8
    a = array(x, "fp16")
    b = (a @ a.T + 1).sqrt()
    ref = arith.sqrt(
        arith.add(_emulate.sequential_matmul(x, x.T, "fp16", "rne"), 1.0, "fp16"), "fp16"
    )
    assert same(b, ref)
    assert same(a.exp(), arith.exp(x, "fp16"))
    assert same(a.log(), arith.log(x, "fp16"))
    assert same(a.tanh(), arith.tanh(x, "fp16"))


def test_broadcasting_and_foreign_operands() -> None:
    x, y = _data("bf16", (3, 1), 4), _data("bf16", (4,), 5)
    a, b = array(x, "bf16", "rtz"), array(y, "bf16", "rtz")
    got = a * b
    assert got.shape == (3, 4)
    assert same(got, arith.mul(x, y, "bf16", "rtz"))
    # numpy arrays and Python numbers are rounded to the format (RNE) first, as lb.arith does
    assert same(a + 0.1, arith.add(x, 0.1, "bf16", "rtz"))
    assert same(0.1 - a, arith.sub(0.1, x, "bf16", "rtz"))
    z = np.linspace(0, 1, 4)
    assert same(a / z, np.asarray(arith.div(x, z, "bf16", "rtz")))
    assert same(np.add(z, a), arith.add(z, x, "bf16", "rtz"))


def _loop_sum(v: np.ndarray, fmt: str, mode: str) -> float:
    s = v[0]
    for t in v[1:]:
        s = arith.add(s, t, fmt, mode)
    return float(s)


@pytest.mark.parametrize("mode", ["rne", "rtz"])
def test_reductions_equal_scalar_loops(mode: str) -> None:
    x = _data("fp16", (6, 9), 6)
    a = array(x, "fp16", mode)
    assert same(np.sum(a), _loop_sum(x.ravel(), "fp16", mode))
    assert same(a.sum(), _loop_sum(x.ravel(), "fp16", mode))
    assert same(np.add.reduce(a, axis=1), [_loop_sum(r, "fp16", mode) for r in x])
    assert same(np.sum(a, axis=0), [_loop_sum(c, "fp16", mode) for c in x.T])
    assert np.sum(a, axis=0, keepdims=True).shape == (1, 9)
    assert same(
        np.mean(a, axis=1), [arith.div(_loop_sum(r, "fp16", mode), 9.0, "fp16", mode) for r in x]
    )
    p = x[0, 0]
    for t in x.ravel()[1:]:
        p = arith.mul(p, t, "fp16", mode)
    assert same(np.prod(a), p)
    cs, acc = [], None
    for t in x.ravel():
        acc = t if acc is None else arith.add(acc, t, "fp16", mode)
        cs.append(float(acc))
    assert same(np.cumsum(a), cs)
    assert same(np.add.accumulate(a.ravel()), cs)
    assert same(np.max(a, axis=0), x.max(axis=0))
    assert same(np.maximum.reduce(a, axis=1), x.max(axis=1))


@pytest.mark.parametrize("algorithm", ["pairwise", "kahan"])
def test_reduction_algorithms_follow_lb_sum(algorithm: str) -> None:
    from lowbit.linalg import sum as lbsum

    x = _data("bf16", (33, 5), 7)
    a = array(x, "bf16", algorithm=algorithm)
    assert same(a.sum(axis=0), lbsum(x, "bf16", algorithm=algorithm, axis=0))
    assert same(np.sum(a), lbsum(x, "bf16", algorithm=algorithm))


def _loop_matmul(x: np.ndarray, y: np.ndarray, fmt: str, mode: str) -> np.ndarray:
    """The plain scalar triple loop: products rounded, sums rounded in order k = 0..K-1."""
    m, k = x.shape
    n = y.shape[1]
    c = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            s = arith.mul(x[i, 0], y[0, j], fmt, mode)
            for kk in range(1, k):
                s = arith.add(s, arith.mul(x[i, kk], y[kk, j], fmt, mode), fmt, mode)
            c[i, j] = s
    return c


@pytest.mark.parametrize("mode", ["rne", "ru"])
def test_matmul_equals_scalar_loop(mode: str) -> None:
    x, y = _data("fp16", (3, 5), 8), _data("fp16", (5, 4), 9)
    a, b = array(x, "fp16", mode), array(y, "fp16", mode)
    ref = _loop_matmul(x, y, "fp16", mode)
    assert same(a @ b, ref)
    assert same(np.matmul(a, b), ref)
    assert same(np.dot(a, b), ref)
    assert same(a.dot(b), ref)
    assert same(x @ b, ref)  # numpy array on the left: __rmatmul__ via the ufunc
    assert same(a[0] @ b, ref[0])  # 1-D @ 2-D
    assert same(a @ b[:, 1], ref[:, 1])  # 2-D @ 1-D
    batch = np.stack([a, a])  # exact stacking keeps the format
    assert same(batch @ b, np.stack([ref, ref]))


def test_norm_uses_emulated_ops() -> None:
    x = _data("fp16", (7,), 10)
    a = array(x, "fp16")
    sq = [arith.mul(t, t, "fp16") for t in x]
    ref = arith.sqrt(_loop_sum(np.array(sq), "fp16", "rne"), "fp16")
    assert same(np.linalg.norm(a), ref)
    assert same(np.linalg.norm(a, 1), _loop_sum(np.abs(x), "fp16", "rne"))
    assert same(np.linalg.norm(a, np.inf), np.abs(x).max())
    m = array(_data("fp16", (3, 4), 11), "fp16")
    mv = np.asarray(m)
    assert same(np.linalg.norm(m, np.inf), max(_loop_sum(np.abs(r), "fp16", "rne") for r in mv))
    assert same(np.linalg.norm(m, "fro"), np.linalg.norm(m.ravel()))


def test_exact_shape_functions_and_indexing() -> None:
    x = _data("e4m3", (2, 3), 12)
    a = array(x, "e4m3")
    assert a.shape == (2, 3) and a.ndim == 2 and a.size == 6 and len(a) == 2
    assert same(a.T, x.T) and isinstance(a.T, LowPrecisionArray)
    assert same(a[1], x[1]) and same(a[0, 2], x[0, 2]) and same(a[:, ::2], x[:, ::2])
    assert same(a[a > 0], x[x > 0])
    assert same(np.reshape(a, (3, 2)), x.reshape(3, 2)) and same(a.reshape(6), x.ravel())
    assert same(np.transpose(a), x.T)
    assert same(np.concatenate([a, a], axis=0), np.concatenate([x, x]))
    assert same(np.stack([a, a]), np.stack([x, x]))
    assert isinstance(np.concatenate([a, a]), LowPrecisionArray)
    assert np.shape(a) == (2, 3)
    v = np.asarray(a)
    assert v.dtype == np.float64 and same(v, x)
    r = repr(a)
    assert r.startswith(f"LowPrecisionArray({lb.get_format('e4m3').name}, rne, ")
    # foreign values entering an array are rounded to its format (RNE)
    c = np.concatenate([a, np.full((1, 3), 0.3)])
    assert same(c[2], np.full(3, lb.round(0.3, "e4m3")))
    a2 = a.copy()
    a2[0, 0] = 0.3
    assert float(a2[0, 0]) == float(lb.round(0.3, "e4m3"))
    a2 += 1  # in-place operators write into the array
    assert same(a2[1], arith.add(x[1], 1.0, "e4m3"))


@pytest.mark.parametrize(
    "call",
    [
        lambda a: np.sin(a),
        lambda a: np.cos(a),
        lambda a: np.var(a),
        lambda a: np.std(a),
        lambda a: np.linalg.svd(a),
        lambda a: np.linalg.solve(a, a),
        lambda a: np.median(a),
        lambda a: np.einsum("ij->i", a),
        lambda a: np.add.outer(a, a),
        lambda a: np.power(a, 2),
        lambda a: np.sum(a, dtype=np.float32),
        lambda a: np.linalg.norm(a, 2),
        lambda a: np.add(a, a, where=np.ones((3, 3), bool)),
        lambda a: np.trace(a),
    ],
)
def test_unsupported_functions_raise_naming_the_function(call: object) -> None:
    a = array(np.eye(3) * 1.5, "fp16")
    with pytest.raises(NotImplementedError) as ei:
        call(a)  # type: ignore[operator]
    msg = str(ei.value)
    assert "numpy." in msg and "not emulated" in msg


def test_error_message_names() -> None:
    a = array(np.ones(3), "fp16")
    for fn, name in (
        (np.sin, "numpy.sin"),
        (np.var, "numpy.var"),
        (np.linalg.svd, "numpy.linalg.svd"),
    ):
        with pytest.raises(NotImplementedError, match=name.replace(".", r"\.")):
            fn(a)
    with pytest.raises(NotImplementedError, match=r"numpy\.add\.outer"):
        np.add.outer(a, a)
    assert "numpy.sum" in HANDLED_FUNCTIONS and "numpy.linalg.norm" in HANDLED_FUNCTIONS


def test_mixed_formats_rejected() -> None:
    a, b = array([1.0], "fp16"), array([1.0], "bf16")
    with pytest.raises(ValueError, match="different formats"):
        a + b
    assert same(a + b.to("fp16"), [2.0])


# ---- stochastic rounding --------------------------------------------------------------------
def _program(a: LowPrecisionArray) -> LowPrecisionArray:
    b = a * 3 + a / 7
    return np.sqrt(np.abs(b @ b.T)).sum(axis=0) / 3


def test_sr_reproducible_and_draws_advance() -> None:
    x = np.random.default_rng(13).random((6, 6))
    r1 = _program(array(x, "bf16", "sr", seed=3))
    r2 = _program(array(x, "bf16", "sr", seed=3))
    r3 = _program(array(x, "bf16", "sr", seed=4))
    assert same(r1, r2)
    assert not same(r1, r3)
    # two identical operations draw different random bits
    a = array(x, "bf16", "sr", seed=5)
    p, q = a / 3, a / 3
    assert not same(p, q)
    start = a.stream.offset
    a * 3
    assert a.stream.offset == start + a.size


def test_sr_matches_lb_arith_in_a_context() -> None:
    x = np.asarray(lb.round(np.random.default_rng(14).random((4, 5)), "fp16"))
    y = np.asarray(lb.round(np.random.default_rng(15).random((4, 5)), "fp16"))
    a = array(x, "fp16", "sr", seed=9)
    b = array(y, "fp16", "sr", seed=10)  # its conversion uses its own stream
    got = [a + b, a * b, np.sqrt(a), a.sum(axis=1)]
    with lb.precision("fp16", "sr", seed=9) as ctx:
        ctx.take(x.size)  # the conversion of x drew first
        ref_add = arith.add(x, y)
        ref_mul = arith.mul(x, y)
        ref_sqrt = arith.sqrt(x)
        s = np.asarray(np.moveaxis(x, 1, 0)[0])
        for t in np.moveaxis(x, 1, 0)[1:]:
            s = arith.add(s, t)
    for g, r in zip(got, [ref_add, ref_mul, ref_sqrt, s], strict=True):
        assert same(g, r)


def test_array_in_precision_context() -> None:
    x = np.random.default_rng(16).random(8)
    with lb.precision("bf16", "sr", seed=2) as ctx:
        a = array(x)
        assert a.fmt == lb.get_format("bf16") and a.mode.value == "sr"
        assert a.stream is ctx
        before = ctx.offset
        arith.add(x, x)  # lb.arith calls and the array share the counter
        b = a + a
        assert ctx.offset == before + 2 * x.size
    with lb.precision("bf16", "sr", seed=2):
        a2 = array(x)
        arith.add(x, x)
        assert same(a2 + a2, b)
        assert same(a2, a)
    with pytest.raises(ValueError, match="no format"):
        array(x)


# ---- torch --------------------------------------------------------------------------------------
def test_torch_subclass_parity() -> None:
    torch = pytest.importorskip("torch")
    from lowbit.arith.tensor import LowPrecisionTensor, tensor

    x = np.random.default_rng(17).random((4, 4))
    for mode, seed in (("rne", None), ("rtz", None), ("sr", 11)):
        t = tensor(x, "fp16", mode, seed=seed)
        a = array(x, "fp16", mode, seed=seed)
        tt = [
            (t @ t.T + 1).sqrt(),
            t * 3 - t / 7,
            torch.exp(t),
            t.sum(dim=0),
            t.mean(),
            torch.maximum(t, t * 0.5),
            t.sigmoid(),
            1 - t,
            torch.matmul(t, t[0]),
        ]
        aa = [
            (a @ a.T + 1).sqrt(),
            a * 3 - a / 7,
            np.exp(a),
            a.sum(axis=0),
            a.mean(),
            np.maximum(a, a * 0.5),
            a.sigmoid(),
            1 - a,
            a @ a[0],
        ]
        for k, (u, v) in enumerate(zip(tt, aa, strict=True)):
            assert isinstance(u, LowPrecisionTensor), k
            assert same(u.plain().numpy(), v), (mode, k)
    t = tensor(x, "bf16")
    assert (t > 0.5).dtype == torch.bool and not isinstance(t > 0.5, LowPrecisionTensor)
    assert isinstance(t.T, LowPrecisionTensor) and isinstance(t[0], LowPrecisionTensor)
    assert isinstance(torch.cat([t, t]), LowPrecisionTensor)
    assert repr(t).startswith("LowPrecisionTensor(bf16, rne, ")
    for fn, name in (
        (lambda: torch.sin(t), "torch.sin"),
        (lambda: t.cos(), "torch.Tensor.cos"),
        (lambda: torch.linalg.svd(t), "torch.linalg.svd"),
        (lambda: t.add(t, alpha=2), "torch.Tensor.add"),
    ):
        with pytest.raises(NotImplementedError, match=name.replace(".", r"\.")):
            fn()
