"""``lowbit.array``: a numpy-compatible array whose every operation rounds its result.

>>> import numpy as np
>>> from lowbit.arith.lparray import array
>>> a = array(np.full((2, 2), 0.1), "fp16")
>>> b = (a @ a.T + 1).sqrt()
>>> b
LowPrecisionArray(fp16, rne, [[1.009765625, 1.009765625], [1.009765625, 1.009765625]])

A :class:`LowPrecisionArray` holds a float64 ndarray of values of its format, the format, the
rounding mode and a *stream* (the counter of stochastic-rounding draws). numpy code runs on it
unchanged through ``__array_ufunc__`` and ``__array_function__``:

* Elementwise arithmetic (``+ - * / sqrt square negative absolute exp log tanh minimum maximum``)
  is ``lb.arith`` (correctly rounded once per operation), with numpy broadcasting.
  Comparisons and ``isnan``/``isinf``/``isfinite``/``signbit`` return plain boolean arrays.
* ``@``/``np.matmul``/``np.dot`` multiply with every product rounded to the format and the
  sums accumulated in the format, sequentially (``lowbit.arith.matmul`` with ``mult=acc=fmt``
  when installed, else the plain loop :func:`lowbit.arith._emulate.sequential_matmul`).
* Reductions (``np.sum``, ``np.add.reduce``, ``.sum()``, ``np.mean``, ``np.prod``,
  ``np.cumsum``) add in the format with :func:`lowbit.linalg.sum`'s algorithms (recursive
  by default; ``lb.array(..., algorithm="pairwise" | "kahan")``); ``mean`` divides the rounded
  sum by ``n`` (one more rounding); ``max``/``min`` are exact.
* Shape functions (reshape, transpose, indexing, concatenate, stack, ...) are exact.
* ``np.linalg.norm`` (vector 2/1/inf norms, matrix Frobenius/1/inf norms) uses the emulated
  products, sums and square root.
* Anything else raises ``NotImplementedError`` naming the numpy function: nothing silently
  runs in float64. ``np.asarray(a)`` gives the float64 values for explicit full-precision work.

Operands that are not low-precision arrays (Python numbers, numpy arrays) are rounded to the
format with round-to-nearest-even first (``lb.arith``'s ``inputs="round"``, as MATLAB chop).
Two low-precision operands must share format and mode.

Stochastic rounding: an array made with ``seed=s`` starts a stream at draw 0; every operation
on it (and on arrays derived from it) takes the next unused draws, so two operations never
share a draw and a rerun with the same seed reproduces every bit. Inside
``lb.precision(fmt, mode, seed=)``, ``lb.array(x)`` takes the context's format and mode and
draws from the context's counter (the same stream as ``lb.arith`` calls in that block).
Arrays made separately with the same explicit seed have separate streams that start at the
same draw: give independent arrays different seeds, or make them in one context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from lowbit.arith import _emulate as E
from lowbit.arith import ops
from lowbit.arith.context import PrecisionContext
from lowbit.formats import Format
from lowbit.rounding.api import round as _round
from lowbit.rounding.modes import RoundMode

_ALGORITHMS = ("recursive", "pairwise", "kahan")


def _fname(obj: Any) -> str:
    """``numpy.sum``, ``numpy.linalg.norm``, ``numpy.add.reduce`` ..."""
    mod = getattr(obj, "__module__", None) or "numpy"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    if isinstance(obj, np.ufunc):
        return f"numpy.{obj.__name__}"
    if mod.startswith("numpy._core") or mod.startswith("numpy.core"):
        mod = "numpy"
    return f"{mod}.{name}"


def _not_emulated(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} is not emulated by LowPrecisionArray (it would run in float64); use "
        "np.asarray(a) to compute in float64 explicitly, or an emulated operation"
    )


class LowPrecisionArray(NDArrayOperatorsMixin):
    """A float64 array of values of ``fmt`` whose operations round their results to ``fmt``.

    Make one with :func:`array`. Attributes: ``fmt`` (format object), ``mode``
    (:class:`RoundMode`), ``seed``, ``algorithm`` (summation algorithm of reductions),
    ``stream`` (the stochastic-rounding counter), ``shape``, ``ndim``, ``size``, ``T``.
    """

    __slots__ = ("_alg", "_s", "_v")

    def __init__(
        self, values: np.ndarray, stream: PrecisionContext, algorithm: str = "recursive"
    ) -> None:
        """Wrap values that are already in the stream's format (no rounding here)."""
        self._v = np.asarray(values, dtype=np.float64)
        self._s = stream
        self._alg = algorithm

    # ---- attributes ------------------------------------------------------------------------
    @property
    def fmt(self) -> Format:
        """The number format of the values."""
        return self._s.fmt

    @property
    def mode(self) -> RoundMode:
        """The rounding mode of every operation."""
        return self._s.mode

    @property
    def seed(self) -> int:
        """Seed of the stochastic-rounding stream."""
        return self._s.seed

    @property
    def stream(self) -> PrecisionContext:
        """The counter of stochastic-rounding draws (shared by derived arrays)."""
        return self._s

    @property
    def algorithm(self) -> str:
        """Summation algorithm of reductions."""
        return self._alg

    @property
    def values(self) -> np.ndarray:
        """A read-only float64 view of the values."""
        v = self._v.view()
        v.flags.writeable = False
        return v

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape, as numpy's."""
        return self._v.shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._v.ndim

    @property
    def size(self) -> int:
        """Number of elements."""
        return self._v.size

    @property
    def dtype(self) -> np.dtype:
        """The storage dtype (float64; the values are those of ``fmt``)."""
        return self._v.dtype

    @property
    def T(self) -> LowPrecisionArray:
        """Transpose (exact)."""
        return self._like(self._v.T)

    def __len__(self) -> int:
        return len(self._v)

    def __iter__(self) -> Iterator[LowPrecisionArray]:
        for row in self._v:
            yield self._like(row)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False and dtype not in (None, np.float64):
            raise ValueError("a copy is needed to convert to another dtype")
        v = self._v.copy() if copy else self._v
        return v if dtype is None else v.astype(dtype, copy=False)

    def __float__(self) -> float:
        return float(self._v)

    def __bool__(self) -> bool:
        return bool(self._v)

    def item(self, *args: Any) -> float:
        """The value of one element as a Python float."""
        return float(self._v.item(*args))

    def tolist(self) -> Any:
        """Values as nested Python lists."""
        return self._v.tolist()

    def __repr__(self) -> str:
        return (
            f"LowPrecisionArray({self.fmt.name}, {self.mode.value}, "
            f"{self._v.tolist() if self._v.size <= 64 else _short(self._v)})"
        )

    def __str__(self) -> str:
        return f"{np.array2string(self._v)} ({self.fmt.name}, {self.mode.value})"

    # ---- construction helpers --------------------------------------------------------------
    def _like(self, values: Any) -> LowPrecisionArray:
        return LowPrecisionArray(np.asarray(values, dtype=np.float64), self._s, self._alg)

    def _to_values(self, x: Any) -> np.ndarray:
        """Another operand as values of this array's format (RNE for foreign values)."""
        if isinstance(x, LowPrecisionArray):
            _check_same(self, x)
            return x._v
        v = np.asarray(x, dtype=np.float64)
        return np.asarray(
            _round(v, self.fmt, "rne", subnormals=self._s.subnormals, overflow=self._s.overflow),
            dtype=np.float64,
        )

    def to(
        self, fmt: Format | str, mode: RoundMode | str | None = None, *, seed: int | None = None
    ) -> LowPrecisionArray:
        """Convert to another format (rounding the values once in ``mode``)."""
        return array(
            self._v,
            fmt,
            mode if mode is not None else self.mode,
            seed=seed if seed is not None else self.seed,
            algorithm=self._alg,
        )

    def copy(self) -> LowPrecisionArray:
        """A copy sharing format and stream."""
        return self._like(self._v.copy())

    # ---- indexing (exact) ------------------------------------------------------------------
    def __getitem__(self, key: Any) -> LowPrecisionArray:
        return self._like(self._v[_unwrap_key(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._v[_unwrap_key(key)] = self._to_values(value)

    # ---- methods ---------------------------------------------------------------------------
    def sqrt(self) -> LowPrecisionArray:
        """Correctly rounded square root."""
        return np.sqrt(self)  # type: ignore[no-any-return]

    def exp(self) -> LowPrecisionArray:
        """Correctly rounded exponential."""
        return np.exp(self)  # type: ignore[no-any-return]

    def log(self) -> LowPrecisionArray:
        """Correctly rounded natural logarithm."""
        return np.log(self)  # type: ignore[no-any-return]

    def tanh(self) -> LowPrecisionArray:
        """Correctly rounded tanh."""
        return np.tanh(self)  # type: ignore[no-any-return]

    def sigmoid(self) -> LowPrecisionArray:
        """Correctly rounded logistic sigmoid ``1 / (1 + exp(-x))``."""
        return self._apply(ops.sigmoid, self._v)

    def abs(self) -> LowPrecisionArray:
        """Absolute value (exact)."""
        return np.abs(self)  # type: ignore[no-any-return]

    def sum(self, axis: int | None = None, keepdims: bool = False) -> LowPrecisionArray:
        """Sum in the format with the array's summation algorithm."""
        return _sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | None = None, keepdims: bool = False) -> LowPrecisionArray:
        """Rounded sum divided by the count (two roundings per output element)."""
        return _mean(self, axis=axis, keepdims=keepdims)

    def prod(self, axis: int | None = None, keepdims: bool = False) -> LowPrecisionArray:
        """Product with every multiplication rounded, in index order."""
        return _prod(self, axis=axis, keepdims=keepdims)

    def cumsum(self, axis: int | None = None) -> LowPrecisionArray:
        """Partial sums, each rounded (recursive summation)."""
        return _cumsum(self, axis=axis)

    def max(self, axis: int | None = None, keepdims: bool = False) -> LowPrecisionArray:
        """Largest element (exact)."""
        return self._like(np.max(self._v, axis=axis, keepdims=keepdims))

    def min(self, axis: int | None = None, keepdims: bool = False) -> LowPrecisionArray:
        """Smallest element (exact)."""
        return self._like(np.min(self._v, axis=axis, keepdims=keepdims))

    def reshape(self, *shape: Any, order: str = "C") -> LowPrecisionArray:
        """Reshape (exact)."""
        s = shape[0] if len(shape) == 1 else shape
        return self._like(self._v.reshape(s, order=order))  # type: ignore[call-overload]

    def transpose(self, *axes: Any) -> LowPrecisionArray:
        """Permute axes (exact)."""
        return self._like(self._v.transpose(*axes))

    def ravel(self) -> LowPrecisionArray:
        """Flatten (exact)."""
        return self._like(self._v.ravel())

    def flatten(self) -> LowPrecisionArray:
        """Flattened copy (exact)."""
        return self._like(self._v.flatten())

    def dot(self, other: Any) -> LowPrecisionArray:
        """``np.dot(self, other)`` emulated (see :func:`numpy.dot` support)."""
        return _dot(self, other)

    # ---- numpy protocols -------------------------------------------------------------------
    def _apply(self, fn: Callable[..., Any], *vals: Any) -> LowPrecisionArray:
        with E.use_stream(self._s), E.serial_kernels_if_small(max(np.size(v) for v in vals)):
            r = fn(*vals, self.fmt, self.mode)
        return self._like(r)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        lead = _lead(inputs)
        out = kwargs.pop("out", None)
        if method == "__call__":
            for k in kwargs:
                raise _not_emulated(f"{_fname(ufunc)} with {k}=")
            if ufunc in _PREDICATES:
                if out is not None:
                    raise _not_emulated(f"{_fname(ufunc)} with out=")
                vals = [lead._to_values(x) for x in inputs]
                return _PREDICATES[ufunc](*vals)
            handler = _UFUNCS.get(ufunc)
            if handler is None:
                raise _not_emulated(_fname(ufunc))
            vals = [lead._to_values(x) for x in inputs]
            res = handler(lead, *vals)
        elif method in ("reduce", "accumulate"):
            res = _ufunc_reduce(lead, ufunc, method, inputs, kwargs)
        else:
            raise _not_emulated(f"{_fname(ufunc)}.{method}")
        if out is not None:
            target = out[0] if isinstance(out, tuple) else out
            if len(out if isinstance(out, tuple) else (out,)) != 1 or not isinstance(
                target, LowPrecisionArray
            ):
                raise _not_emulated(f"{_fname(ufunc)} with a non-LowPrecisionArray out=")
            _check_same(target, res)
            target._v[...] = res._v
            return target
        return res

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise _not_emulated(_fname(func))
        return handler(*args, **kwargs)


def _short(v: np.ndarray) -> str:
    return np.array2string(v, threshold=64, separator=", ").replace("\n", "")


def _unwrap_key(key: Any) -> Any:
    if isinstance(key, LowPrecisionArray):
        return key._v
    if isinstance(key, tuple):
        return tuple(k._v if isinstance(k, LowPrecisionArray) else k for k in key)
    return key


def _check_same(a: LowPrecisionArray, b: LowPrecisionArray) -> None:
    if a.fmt != b.fmt or a.mode is not b.mode:
        raise ValueError(
            f"operands in different formats/modes ({a.fmt.name}/{a.mode.value} and "
            f"{b.fmt.name}/{b.mode.value}); convert one with .to(fmt, mode)"
        )


def _lead(items: Any) -> LowPrecisionArray:
    for x in items:
        if isinstance(x, LowPrecisionArray):
            return x
        if isinstance(x, list | tuple):
            for y in x:
                if isinstance(y, LowPrecisionArray):
                    return y
    raise TypeError("no LowPrecisionArray among the operands")


# ---- ufuncs ------------------------------------------------------------------------------------
def _binary(fn: Callable[..., Any]) -> Callable[..., LowPrecisionArray]:
    def h(lead: LowPrecisionArray, x: np.ndarray, y: np.ndarray) -> LowPrecisionArray:
        return lead._apply(fn, x, y)

    return h


def _unary(fn: Callable[..., Any]) -> Callable[..., LowPrecisionArray]:
    def h(lead: LowPrecisionArray, x: np.ndarray) -> LowPrecisionArray:
        return lead._apply(fn, x)

    return h


def _square(lead: LowPrecisionArray, x: np.ndarray) -> LowPrecisionArray:
    return lead._apply(ops.mul, x, x)


def _positive(lead: LowPrecisionArray, x: np.ndarray) -> LowPrecisionArray:
    return lead._like(x.copy())


def _minmax(fn: Callable[..., Any]) -> Callable[..., LowPrecisionArray]:
    def h(lead: LowPrecisionArray, x: np.ndarray, y: np.ndarray) -> LowPrecisionArray:
        with E.use_stream(lead._s):
            return lead._like(fn(x, y, lead.fmt))

    return h


def _matmul_ufunc(lead: LowPrecisionArray, x: np.ndarray, y: np.ndarray) -> LowPrecisionArray:
    with E.use_stream(lead._s):
        return lead._like(E.matmul(x, y, lead.fmt, lead.mode))


_UFUNCS: dict[np.ufunc, Callable[..., LowPrecisionArray]] = {
    np.add: _binary(ops.add),
    np.subtract: _binary(ops.sub),
    np.multiply: _binary(ops.mul),
    np.true_divide: _binary(ops.div),
    np.sqrt: _unary(ops.sqrt),
    np.square: _square,
    np.negative: _unary(ops.neg),
    np.positive: _positive,
    np.absolute: _unary(ops.abs),
    np.exp: _unary(ops.exp),
    np.log: _unary(ops.log),
    np.tanh: _unary(ops.tanh),
    np.minimum: _minmax(ops.minimum),
    np.maximum: _minmax(ops.maximum),
    np.matmul: _matmul_ufunc,
}

_PREDICATES: dict[np.ufunc, Callable[..., np.ndarray]] = {
    np.equal: np.equal,
    np.not_equal: np.not_equal,
    np.less: np.less,
    np.less_equal: np.less_equal,
    np.greater: np.greater,
    np.greater_equal: np.greater_equal,
    np.isnan: np.isnan,
    np.isinf: np.isinf,
    np.isfinite: np.isfinite,
    np.signbit: np.signbit,
}


def _ufunc_reduce(
    lead: LowPrecisionArray, ufunc: np.ufunc, method: str, inputs: Any, kwargs: dict[str, Any]
) -> LowPrecisionArray:
    axis = kwargs.pop("axis", 0)
    keepdims = kwargs.pop("keepdims", False)
    if kwargs.pop("dtype", None) is not None:
        raise _not_emulated(f"{_fname(ufunc)}.{method} with dtype=")
    for k in kwargs:
        raise _not_emulated(f"{_fname(ufunc)}.{method} with {k}=")
    (a,) = inputs
    if isinstance(axis, tuple):
        raise _not_emulated(f"{_fname(ufunc)}.{method} over several axes")
    if method == "accumulate":
        if ufunc is not np.add:
            raise _not_emulated(f"{_fname(ufunc)}.accumulate")
        return _cumsum(a, axis=axis)
    if ufunc is np.add:
        return _sum(a, axis=axis, keepdims=keepdims)
    if ufunc is np.multiply:
        return _prod(a, axis=axis, keepdims=keepdims)
    if ufunc in (np.maximum, np.minimum):
        return lead._like(ufunc.reduce(a._v, axis=axis, keepdims=keepdims))
    raise _not_emulated(f"{_fname(ufunc)}.reduce")


# ---- reductions and products -------------------------------------------------------------------
def _as_lp(a: Any) -> LowPrecisionArray:
    if not isinstance(a, LowPrecisionArray):
        raise TypeError(f"expected a LowPrecisionArray, got {type(a).__name__}")
    return a


def _keep(res: np.ndarray, a: LowPrecisionArray, axis: int | None, keepdims: bool) -> np.ndarray:
    if not keepdims:
        return res
    if axis is None:
        return res.reshape((1,) * a.ndim)
    return np.expand_dims(res, axis)


def _sum(
    a: Any,
    axis: int | None = None,
    dtype: Any = None,
    out: Any = None,
    keepdims: bool = False,
    **kw: Any,
) -> LowPrecisionArray:
    from lowbit.linalg.summation import sum_along

    a = _as_lp(a)
    if dtype is not None or out is not None or kw:
        raise _not_emulated("numpy.sum with dtype=/out=/initial=/where=")
    if isinstance(axis, tuple):
        raise _not_emulated("numpy.sum over several axes at once")
    with E.use_stream(a._s):
        res = sum_along(a._v, axis, a.algorithm)
    return a._like(_keep(res, a, axis, keepdims))


def _count(a: LowPrecisionArray, axis: int | None) -> int:
    return a.size if axis is None else a.shape[axis]


def _mean(
    a: Any,
    axis: int | None = None,
    dtype: Any = None,
    out: Any = None,
    keepdims: bool = False,
    **kw: Any,
) -> LowPrecisionArray:
    a = _as_lp(a)
    if dtype is not None or out is not None or kw:
        raise _not_emulated("numpy.mean with dtype=/out=/where=")
    s = _sum(a, axis=axis, keepdims=keepdims)
    return s._apply(ops.div, s._v, np.float64(_count(a, axis)))


def _prod(
    a: Any,
    axis: int | None = None,
    dtype: Any = None,
    out: Any = None,
    keepdims: bool = False,
    **kw: Any,
) -> LowPrecisionArray:
    a = _as_lp(a)
    if dtype is not None or out is not None or kw:
        raise _not_emulated("numpy.prod with dtype=/out=/initial=/where=")
    x = a._v.reshape(-1) if axis is None else np.moveaxis(a._v, axis, 0)
    if x.shape[0] == 0:
        res = np.ones(x.shape[1:])
    else:
        res = x[0]
        with E.use_stream(a._s), E.serial_kernels():
            for i in range(1, x.shape[0]):
                res = ops.mul(res, x[i], a.fmt, a.mode)
    return a._like(_keep(np.asarray(res, dtype=np.float64), a, axis, keepdims))


def _cumsum(
    a: Any, axis: int | None = None, dtype: Any = None, out: Any = None
) -> LowPrecisionArray:
    from lowbit.linalg.summation import cumsum_along

    a = _as_lp(a)
    if dtype is not None or out is not None:
        raise _not_emulated("numpy.cumsum with dtype=/out=")
    with E.use_stream(a._s):
        return a._like(cumsum_along(a._v, axis))


def _matmul_fn(x: Any, y: Any, **kw: Any) -> LowPrecisionArray:
    if kw:
        raise _not_emulated("numpy.matmul with " + ", ".join(f"{k}=" for k in kw))
    lead = _lead((x, y))
    return _matmul_ufunc(lead, lead._to_values(x), lead._to_values(y))


def _dot(x: Any, y: Any, out: Any = None) -> LowPrecisionArray:
    lead = _lead((x, y))
    if out is not None:
        raise _not_emulated("numpy.dot with out=")
    xv, yv = lead._to_values(x), lead._to_values(y)
    if xv.ndim == 0 or yv.ndim == 0:
        return lead._apply(ops.mul, xv, yv)
    if xv.ndim > 2 or yv.ndim > 2:
        raise _not_emulated("numpy.dot of arrays with more than 2 dimensions")
    return _matmul_ufunc(lead, xv, yv)


def _outer(x: Any, y: Any, out: Any = None) -> LowPrecisionArray:
    lead = _lead((x, y))
    if out is not None:
        raise _not_emulated("numpy.outer with out=")
    xv, yv = lead._to_values(x).reshape(-1), lead._to_values(y).reshape(-1)
    return lead._apply(ops.mul, xv[:, None], yv[None, :])


def _norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> LowPrecisionArray:
    a = _as_lp(x)
    if isinstance(axis, tuple) and len(axis) == 1:
        axis = axis[0]
    matrix = (axis is None and a.ndim == 2 and ord is not None) or isinstance(axis, tuple)
    if axis is None and ord is None:  # Frobenius / 2-norm of the flattened array
        return _sqrt_sum_sq(a.ravel(), None, keepdims=False, like=a, keep_axes=keepdims)
    if not matrix:
        ax = -1 if axis is None else axis
        if ord is None or ord == 2:
            return _sqrt_sum_sq(a, ax, keepdims)
        if ord == 1:
            return _sum(np.abs(a), axis=ax, keepdims=keepdims)
        if ord in (np.inf, -np.inf):
            f = np.max if ord == np.inf else np.min
            return a._like(f(np.abs(a._v), axis=ax, keepdims=keepdims))
        raise _not_emulated(f"numpy.linalg.norm with ord={ord!r} for vectors")
    if a.ndim != 2 or (axis not in (None, (0, 1), (-2, -1))):
        raise _not_emulated("numpy.linalg.norm over axes other than a 2-D matrix's")
    if ord in (None, "fro"):
        return _sqrt_sum_sq(a.ravel(), None, False, like=a, keep_axes=keepdims)
    if ord in (1, np.inf):
        sums = _sum(np.abs(a), axis=0 if ord == 1 else 1)
        res = a._like(np.max(sums._v))
        return res.reshape((1, 1)) if keepdims else res
    raise _not_emulated(f"numpy.linalg.norm with ord={ord!r} for matrices")


def _sqrt_sum_sq(
    a: LowPrecisionArray,
    axis: int | None,
    keepdims: bool,
    like: LowPrecisionArray | None = None,
    keep_axes: bool = False,
) -> LowPrecisionArray:
    sq = np.square(a)
    s = _sum(sq, axis=axis, keepdims=keepdims)
    r = np.sqrt(s)
    if keep_axes and like is not None:
        r = r.reshape((1,) * like.ndim)
    return r  # type: ignore[no-any-return]


# ---- exact shape functions ---------------------------------------------------------------------
def _exact_unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    def h(a: Any, *args: Any, **kw: Any) -> Any:
        lead = _as_lp(a)
        return lead._like(fn(lead._v, *args, **kw))

    return h


def _exact_info(fn: Callable[..., Any]) -> Callable[..., Any]:
    def h(a: Any, *args: Any, **kw: Any) -> Any:
        return fn(_as_lp(a)._v, *args, **kw)

    return h


def _exact_seq(fn: Callable[..., Any]) -> Callable[..., Any]:
    def h(arrays: Any, *args: Any, **kw: Any) -> Any:
        lead = _lead(arrays)
        return lead._like(fn([lead._to_values(x) for x in arrays], *args, **kw))

    return h


def _where(cond: Any, x: Any = None, y: Any = None) -> Any:
    if x is None and y is None:
        return np.where(cond._v if isinstance(cond, LowPrecisionArray) else cond)
    lead = _lead((x, y))
    c = cond._v if isinstance(cond, LowPrecisionArray) else cond
    return lead._like(np.where(c, lead._to_values(x), lead._to_values(y)))


def _clip(a: Any, a_min: Any = None, a_max: Any = None, out: Any = None, **kw: Any) -> Any:
    lead = _as_lp(a)
    if out is not None or kw:
        raise _not_emulated("numpy.clip with out=/keyword options")
    lo = None if a_min is None else lead._to_values(a_min)
    hi = None if a_max is None else lead._to_values(a_max)
    return lead._like(np.clip(lead._v, lo, hi))


def _full_like(a: Any, fill_value: Any, *args: Any, **kw: Any) -> Any:
    lead = _as_lp(a)
    return lead._like(np.full_like(lead._v, lead._to_values(fill_value), *args, **kw))


_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: _sum,
    np.mean: _mean,
    np.prod: _prod,
    np.cumsum: _cumsum,
    np.dot: _dot,
    np.matmul: _matmul_fn,
    np.outer: _outer,
    np.linalg.norm: _norm,
    np.concatenate: _exact_seq(np.concatenate),
    np.stack: _exact_seq(np.stack),
    np.vstack: _exact_seq(np.vstack),
    np.hstack: _exact_seq(np.hstack),
    np.where: _where,
    np.clip: _clip,
    np.full_like: _full_like,
    np.shape: _exact_info(np.shape),
    np.ndim: _exact_info(np.ndim),
    np.size: _exact_info(np.size),
    np.argmax: _exact_info(np.argmax),
    np.argmin: _exact_info(np.argmin),
    np.argsort: _exact_info(np.argsort),
    np.nonzero: _exact_info(np.nonzero),
    np.count_nonzero: _exact_info(np.count_nonzero),
    np.array_equal: lambda a, b, **kw: np.array_equal(np.asarray(a), np.asarray(b), **kw),
}
for _f in (
    np.reshape,
    np.transpose,
    np.swapaxes,
    np.moveaxis,
    np.squeeze,
    np.expand_dims,
    np.ravel,
    np.copy,
    np.flip,
    np.fliplr,
    np.flipud,
    np.roll,
    np.broadcast_to,
    np.diag,
    np.diagonal,
    np.tril,
    np.triu,
    np.sort,
    np.max,
    np.min,
    np.amax,
    np.amin,
    np.zeros_like,
    np.ones_like,
    np.atleast_1d,
    np.atleast_2d,
    np.take,
):
    _FUNCTIONS[_f] = _exact_unary(_f)

#: The numpy functions that LowPrecisionArray emulates (everything else raises).
HANDLED_FUNCTIONS: tuple[str, ...] = tuple(sorted(_fname(f) for f in _FUNCTIONS))
#: The ufuncs it emulates (rounded) or evaluates exactly (predicates).
HANDLED_UFUNCS: tuple[str, ...] = tuple(sorted(_fname(u) for u in (*_UFUNCS, *_PREDICATES)))


# ---- constructor -------------------------------------------------------------------------------
def array(
    data: Any,
    fmt: Format | str | None = None,
    mode: RoundMode | str | None = None,
    *,
    seed: int | None = None,
    algorithm: str = "recursive",
) -> LowPrecisionArray:
    """A low-precision array: ``data`` rounded to ``fmt`` in ``mode``.

    Args:
        data: array-like (lists, numpy arrays, CPU torch tensors, another
            :class:`LowPrecisionArray`).
        fmt: float format with at most 25 mantissa bits. Default: the ``lb.precision``
            context's, else the format of ``data`` when it is a low-precision array.
        mode: rounding mode of the conversion and of every later operation (default: the
            context's, else ``"rne"``).
        seed: seed of stochastic rounding. ``None`` inside ``lb.precision``: draw from the
            context's counter; outside: a random seed (not reproducible).
        algorithm: summation algorithm of reductions: ``"recursive"``, ``"pairwise"`` or
            ``"kahan"``.

    Returns:
        A :class:`LowPrecisionArray`.

    Raises:
        ValueError: no format (none given and no context), or an unsupported format.
    """
    from lowbit.arith import context as _ctx

    if algorithm not in _ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; accepted: {', '.join(_ALGORITHMS)}")
    if isinstance(data, LowPrecisionArray):
        if fmt is None and _ctx.current() is None:
            fmt = data.fmt
            mode = data.mode if mode is None else mode
        data = data._v
    stream = E.resolve_stream(fmt, mode, seed)
    ops._Call(stream.fmt, stream.mode, stream.seed, None, None, None, "exact")  # validate
    v = np.asarray(data, dtype=np.float64)
    offset = stream.take(v.size) if stream.mode.stochastic else 0
    r = _round(
        v,
        stream.fmt,
        stream.mode,
        subnormals=stream.subnormals,
        overflow=stream.overflow,
        seed=stream.seed,
        rand_bits=stream.rand_bits,
        offset=offset,
    )
    return LowPrecisionArray(np.asarray(r, dtype=np.float64), stream, algorithm)


__all__ = ["HANDLED_FUNCTIONS", "HANDLED_UFUNCS", "LowPrecisionArray", "array"]
