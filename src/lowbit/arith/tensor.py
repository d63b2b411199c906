"""``LowPrecisionTensor``: the torch counterpart of ``LowPrecisionArray``.

A ``torch.Tensor`` subclass (float64 storage holding values of a format) whose
``__torch_function__`` rounds the results of torch operations to the format:

* elementwise ``add sub mul div sqrt exp log tanh sigmoid neg abs minimum maximum`` (functions,
  methods and operators) run ``lb.arith`` on the tensors (correctly rounded, numpy
  broadcasting rules = torch's);
* ``matmul``/``mm``/``mv``/``@``, ``sum``, ``mean``, ``prod`` and ``cumsum`` run the same code
  as the numpy array (products rounded, sums in the format with the tensor's summation
  algorithm), on the CPU values, and come back on the tensor's device;
* comparisons and ``isnan``/``isinf``/``isfinite`` return plain boolean tensors;
* shape operations and indexing (``reshape view transpose permute t T [] cat stack clone ...``)
  are exact and keep the subclass;
* anything else raises ``NotImplementedError`` naming the torch function.

Stochastic rounding draws come from the tensor's stream exactly as for the numpy array, so the
same program on a ``LowPrecisionTensor`` and a ``LowPrecisionArray`` made with the same seed
gives the same bits. There is no autograd through the emulated operations (results carry no
graph; use ``lowbit.nn`` quantizers for training).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lowbit.arith import _emulate as E
from lowbit.arith import ops
from lowbit.arith.context import PrecisionContext
from lowbit.arith.lparray import LowPrecisionArray
from lowbit.arith.lparray import array as _np_array
from lowbit.formats import Format
from lowbit.rounding.modes import RoundMode

_PLAIN = torch.Tensor


class LowPrecisionTensor(torch.Tensor):
    """A float64 tensor of values of ``fmt``; torch operations on it round their results.

    Make one with :func:`tensor`. Attributes: ``fmt``, ``mode``, ``seed``, ``stream``,
    ``algorithm``.
    """

    _lb_stream: PrecisionContext
    _lb_alg: str

    @staticmethod
    def __new__(cls, data: torch.Tensor, stream: PrecisionContext,
                algorithm: str = "recursive") -> LowPrecisionTensor:
        """Wrap float64 values that are already in the stream's format (no rounding here)."""
        with torch._C.DisableTorchFunctionSubclass():
            base = data.detach().to(torch.float64)
        t = torch.Tensor._make_subclass(cls, base, False)
        t._lb_stream = stream
        t._lb_alg = algorithm
        return t  # type: ignore[return-value]

    @property
    def fmt(self) -> Format:
        """The number format of the values."""
        return self._lb_stream.fmt

    @property
    def mode(self) -> RoundMode:
        """The rounding mode of every operation."""
        return self._lb_stream.mode

    @property
    def seed(self) -> int:
        """Seed of the stochastic-rounding stream."""
        return self._lb_stream.seed

    @property
    def stream(self) -> PrecisionContext:
        """The counter of stochastic-rounding draws (shared by derived tensors)."""
        return self._lb_stream

    @property
    def algorithm(self) -> str:
        """Summation algorithm of reductions."""
        return self._lb_alg

    def plain(self) -> torch.Tensor:
        """The values as an ordinary float64 tensor (shares memory)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(_PLAIN)

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return (f"LowPrecisionTensor({self.fmt.name}, {self.mode.value}, "
                f"{self.plain().tolist()})")

    def __reduce_ex__(self, proto: Any) -> Any:
        raise _not_emulated("pickling")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = _fname(func)
        handler = _HANDLERS.get(name)
        if handler is not None:
            try:
                return handler(*args, **kwargs)
            except _Unsupported as e:
                raise _not_emulated(f"{name} with {e}") from None
        short = name.rsplit(".", 1)[-1]
        if short in _META:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if short in _EXACT:
            lead = _lead(args, kwargs)
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*_unwrap(args, lead), **_unwrap(kwargs, lead))
            return _rewrap(out, lead)
        raise _not_emulated(name)


class _Unsupported(Exception):
    """An option of an emulated function that is not emulated (message: the option)."""


def _not_emulated(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} is not emulated by LowPrecisionTensor (it would run in float64); use "
        "t.plain() to compute in float64 explicitly, or an emulated operation")


def _fname(func: Any) -> str:
    """``torch.add``, ``torch.Tensor.add``, ``torch.Tensor.shape`` ..."""
    if getattr(func, "__name__", "") == "__get__" and hasattr(func, "__self__"):
        return f"torch.Tensor.{func.__self__.__name__}"
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if qual.startswith(("Tensor.", "_TensorBase.", "TensorBase.")):
        return "torch.Tensor." + qual.split(".", 1)[1]
    if qual.startswith("_VariableFunctionsClass."):
        return "torch." + qual.split(".", 1)[1]
    if getattr(torch.Tensor, getattr(func, "__name__", ""), None) is func:
        return f"torch.Tensor.{func.__name__}"
    mod = getattr(func, "__module__", None) or "torch"
    for private, public in (("torch._C._linalg", "torch.linalg"), ("torch._C._fft", "torch.fft"),
                            ("torch._C._special", "torch.special"),
                            ("torch._C._nn", "torch.nn.functional")):
        if mod == private:
            prefix = public.rsplit(".", 1)[-1] + "_"
            return f"{public}.{qual[len(prefix):] if qual.startswith(prefix) else qual}"
    if mod.startswith("torch._C") or mod == "torch.functional":
        mod = "torch"
    return f"{mod}.{qual}"


# functions that neither compute nor move values: run as is
_META = {
    "shape", "dtype", "device", "ndim", "dim", "size", "numel", "__len__", "is_floating_point",
    "requires_grad", "grad", "grad_fn", "is_leaf", "data_ptr", "storage_offset", "stride",
    "is_contiguous", "layout", "is_sparse", "is_quantized", "is_meta", "is_nested", "names",
    "_is_view", "element_size", "nelement", "tolist", "numpy", "__array__", "item", "is_cuda",
    "as_subclass", "__format__", "__bool__", "__float__", "__int__", "__index__", "cpu_",
    "untyped_storage", "_typed_storage", "is_complex", "is_signed", "__hash__", "output_nr",
    "_version", "__deepcopy__", "__reduce_ex__", "has_names", "__iter__", "__contains__",
    "__dlpack__", "__dlpack_device__", "argmax", "argmin", "argsort", "nonzero",
    "count_nonzero", "equal", "__setstate__", "__getstate__", "isnan", "isinf", "isfinite",
    "signbit", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
}
# exact value-moving functions: run on the values, keep the subclass
_EXACT = {
    "__getitem__", "__setitem__", "reshape", "view", "view_as", "reshape_as", "transpose", "t",
    "T", "mT", "permute", "flatten", "ravel", "squeeze", "unsqueeze", "contiguous", "clone",
    "detach", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "expand",
    "expand_as", "broadcast_to", "narrow", "select", "flip", "fliplr", "flipud", "roll", "tril",
    "triu", "diag", "diagonal", "chunk", "split", "unbind", "to", "cpu", "cuda", "movedim",
    "swapaxes", "index_select", "gather", "masked_select", "where", "max", "min", "amax",
    "amin", "zeros_like", "ones_like", "sort", "take", "repeat", "tile", "__iter__",
}


def _lead(args: Any, kwargs: Any = None) -> LowPrecisionTensor:
    stack = [*args, *(kwargs or {}).values()]
    while stack:
        x = stack.pop(0)
        if isinstance(x, LowPrecisionTensor):
            return x
        if isinstance(x, list | tuple):
            stack.extend(x)
    raise TypeError("no LowPrecisionTensor among the operands")


def _check_same(a: LowPrecisionTensor, b: LowPrecisionTensor) -> None:
    if a.fmt != b.fmt or a.mode is not b.mode:
        raise ValueError(f"operands in different formats/modes ({a.fmt.name}/{a.mode.value} and "
                         f"{b.fmt.name}/{b.mode.value})")


def _unwrap(obj: Any, lead: LowPrecisionTensor) -> Any:
    """LowPrecisionTensors to plain tensors; other float tensors and Python floats (values
    that enter the result: ``where``, ``cat``, ``__setitem__``) rounded to lead's format."""
    if isinstance(obj, LowPrecisionTensor):
        _check_same(lead, obj)
        return obj.plain()
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return _round_plain(obj.detach().to(torch.float64), lead)
    if isinstance(obj, float):
        return float(_round_plain(torch.tensor(obj, dtype=torch.float64), lead))
    if isinstance(obj, list | tuple):
        return type(obj)(_unwrap(x, lead) for x in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, lead) for k, v in obj.items()}
    return obj


def _rewrap(out: Any, lead: LowPrecisionTensor) -> Any:
    if isinstance(out, torch.Tensor) and not isinstance(out, LowPrecisionTensor):
        if out.dtype == torch.float64:
            return LowPrecisionTensor(out, lead._lb_stream, lead._lb_alg)
        return out
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # torch.return_types (max, sort)
        return type(out)([_rewrap(x, lead) for x in out])
    if isinstance(out, list | tuple):
        return type(out)(_rewrap(x, lead) for x in out)
    return out


def _values(x: Any, lead: LowPrecisionTensor) -> torch.Tensor:
    """An operand as a float64 tensor of values of lead's format (RNE for foreign values)."""
    if isinstance(x, LowPrecisionTensor):
        _check_same(lead, x)
        return x.plain()
    with torch._C.DisableTorchFunctionSubclass():
        t = torch.as_tensor(x, dtype=torch.float64, device=lead.device)
    return _round_plain(t, lead)


def _round_plain(t: torch.Tensor, lead: LowPrecisionTensor) -> torch.Tensor:
    from lowbit.rounding.api import round as _round

    s = lead._lb_stream
    return _round(t, s.fmt, "rne", subnormals=s.subnormals, overflow=s.overflow)


def _wrap(t: Any, lead: LowPrecisionTensor) -> LowPrecisionTensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(np.asarray(t, dtype=np.float64), device=lead.device)
    return LowPrecisionTensor(t, lead._lb_stream, lead._lb_alg)


def _run(fn: Callable[..., Any], lead: LowPrecisionTensor, *vals: torch.Tensor) -> Any:
    n = max(int(v.numel()) for v in vals)
    with torch._C.DisableTorchFunctionSubclass(), E.use_stream(lead._lb_stream), \
            E.serial_kernels_if_small(n):
        return fn(*vals, lead.fmt, lead.mode)


def _elementwise(fn: Callable[..., Any], nargs: int, reverse: bool = False
                 ) -> Callable[..., Any]:
    def h(*args: Any, **kw: Any) -> Any:
        if kw.get("out") is not None:
            raise _Unsupported("out=")
        kw.pop("out", None)
        alpha = kw.pop("alpha", 1)
        rounding_mode = kw.pop("rounding_mode", None)
        if kw or alpha != 1 or rounding_mode is not None:
            bad = [*kw, *(["alpha"] if alpha != 1 else []),
                   *(["rounding_mode"] if rounding_mode is not None else [])]
            raise _Unsupported(", ".join(f"{b}=" for b in bad))
        lead = _lead(args)
        vals = [_values(a, lead) for a in args[:nargs]]
        if reverse:
            vals = vals[::-1]
        return _wrap(_run(fn, lead, *vals), lead)
    return h


def _minmax(fn: Callable[..., Any]) -> Callable[..., Any]:
    def h(x: Any, y: Any, **kw: Any) -> Any:
        if kw.get("out") is not None:
            raise _Unsupported("out=")
        lead = _lead((x, y))
        with torch._C.DisableTorchFunctionSubclass(), E.use_stream(lead._lb_stream):
            return _wrap(fn(_values(x, lead), _values(y, lead), lead.fmt), lead)
    return h


def _compare(op: str, reverse: bool = False) -> Callable[..., Any]:
    def h(x: Any, y: Any, **kw: Any) -> torch.Tensor:
        lead = _lead((x, y))
        a, b = _values(x, lead), _values(y, lead)
        if reverse:
            a, b = b, a
        with torch._C.DisableTorchFunctionSubclass():
            return getattr(torch, op)(a, b)
    return h


# ---- reductions and products via the numpy implementation -------------------------------------
def _to_lpa(t: LowPrecisionTensor) -> LowPrecisionArray:
    return LowPrecisionArray(t.plain().detach().cpu().numpy(), t._lb_stream, t._lb_alg)


def _from_lpa(a: Any, lead: LowPrecisionTensor) -> LowPrecisionTensor:
    return _wrap(torch.from_numpy(np.array(np.asarray(a), dtype=np.float64)).to(lead.device),
                 lead)


def _reduction(name: str) -> Callable[..., Any]:
    def h(x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None,
          out: Any = None) -> LowPrecisionTensor:
        lead = _lead((x,))
        if dtype is not None or out is not None:
            raise _Unsupported("dtype=/out=")
        if isinstance(dim, list | tuple):
            if len(dim) != 1:
                raise _Unsupported("several dims")
            dim = dim[0]
        a = _to_lpa(lead)
        fn = {"sum": a.sum, "mean": a.mean, "prod": a.prod}[name]
        return _from_lpa(fn(axis=dim, keepdims=keepdim), lead)
    return h


def _cumsum(x: Any, dim: int, *, dtype: Any = None, out: Any = None) -> LowPrecisionTensor:
    lead = _lead((x,))
    if dtype is not None or out is not None:
        raise _Unsupported("dtype=/out=")
    return _from_lpa(_to_lpa(lead).cumsum(axis=dim), lead)


def _matmul(x: Any, y: Any, *, out: Any = None, reverse: bool = False) -> LowPrecisionTensor:
    if out is not None:
        raise _Unsupported("out=")
    lead = _lead((x, y))
    a = _values(x, lead).detach().cpu().numpy()
    b = _values(y, lead).detach().cpu().numpy()
    if reverse:
        a, b = b, a
    with E.use_stream(lead._lb_stream):
        return _from_lpa(E.matmul(a, b, lead.fmt, lead.mode), lead)


def _rmatmul(x: Any, y: Any) -> LowPrecisionTensor:
    return _matmul(x, y, reverse=True)


def _unary_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _elementwise(fn, 1)


_HANDLERS: dict[str, Callable[..., Any]] = {}


def _register(names: tuple[str, ...], h: Callable[..., Any]) -> None:
    for n in names:
        _HANDLERS[n] = h


_register(("torch.add", "torch.Tensor.add", "torch.Tensor.__add__", "torch.Tensor.__radd__"),
          _elementwise(ops.add, 2))
_register(("torch.sub", "torch.subtract", "torch.Tensor.sub", "torch.Tensor.__sub__"),
          _elementwise(ops.sub, 2))
_register(("torch.Tensor.__rsub__", "torch.rsub"), _elementwise(ops.sub, 2, reverse=True))
_register(("torch.mul", "torch.multiply", "torch.Tensor.mul", "torch.Tensor.__mul__",
           "torch.Tensor.__rmul__"), _elementwise(ops.mul, 2))
_register(("torch.div", "torch.divide", "torch.true_divide", "torch.Tensor.div",
           "torch.Tensor.__truediv__", "torch.Tensor.__div__"), _elementwise(ops.div, 2))
_register(("torch.Tensor.__rtruediv__", "torch.Tensor.__rdiv__"),
          _elementwise(ops.div, 2, reverse=True))
for _n, _f in (("sqrt", ops.sqrt), ("exp", ops.exp), ("log", ops.log), ("tanh", ops.tanh),
               ("sigmoid", ops.sigmoid), ("neg", ops.neg), ("negative", ops.neg),
               ("abs", ops.abs), ("absolute", ops.abs)):
    _register((f"torch.{_n}", f"torch.Tensor.{_n}"), _unary_method(_f))
_register(("torch.Tensor.__neg__",), _unary_method(ops.neg))
_register(("torch.Tensor.__abs__",), _unary_method(ops.abs))
_register(("torch.nn.functional.sigmoid", "torch.special.expit"), _unary_method(ops.sigmoid))
_register(("torch.minimum", "torch.Tensor.minimum"), _minmax(ops.minimum))
_register(("torch.maximum", "torch.Tensor.maximum"), _minmax(ops.maximum))
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    _register((f"torch.{_op}", f"torch.Tensor.{_op}", f"torch.Tensor.__{_op}__"), _compare(_op))
for _r in ("sum", "mean", "prod"):
    _register((f"torch.{_r}", f"torch.Tensor.{_r}"), _reduction(_r))
_register(("torch.cumsum", "torch.Tensor.cumsum"), _cumsum)
_register(("torch.matmul", "torch.Tensor.matmul", "torch.Tensor.__matmul__", "torch.mm",
           "torch.Tensor.mm", "torch.mv", "torch.Tensor.mv", "torch.dot", "torch.Tensor.dot"),
          _matmul)
_register(("torch.Tensor.__rmatmul__",), _rmatmul)


def tensor(data: Any, fmt: Format | str | None = None, mode: RoundMode | str | None = None, *,
           seed: int | None = None, algorithm: str = "recursive",
           device: Any = None) -> LowPrecisionTensor:
    """A :class:`LowPrecisionTensor`: ``data`` rounded to ``fmt`` in ``mode``.

    Same arguments and stream rules as :func:`lowbit.arith.lparray.array` (the conversion
    draws from the same counter positions, so ``tensor(x, f, "sr", seed=s)`` and
    ``array(x, f, "sr", seed=s)`` hold the same values), plus ``device``.
    """
    if isinstance(data, LowPrecisionTensor):
        data = data.plain()
    if isinstance(data, torch.Tensor):
        device = data.device if device is None else device
        data = data.detach().cpu().to(torch.float64).numpy()
    a = _np_array(data, fmt, mode, seed=seed, algorithm=algorithm)
    t = torch.from_numpy(np.array(np.asarray(a), dtype=np.float64))
    if device is not None:
        t = t.to(device)
    return LowPrecisionTensor(t, a.stream, algorithm)


__all__ = ["LowPrecisionTensor", "tensor"]
