"""``LowPrecisionTensor``: the torch counterpart of ``LowPrecisionArray``, with autograd.

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
gives the same bits.

Autograd. When an operand requires grad (and grad mode is on), the operations above record a
graph and ``.backward()``/``torch.autograd.grad`` work. The backward pass is emulated in the
tensor's format and mode, as low-precision hardware (or MATLAB chop applied to a whole training
step) would run it: every arithmetic operation of a derivative is one ``lb.arith`` call,
correctly rounded, drawing from the tensor's stream in stochastic modes. The derivative
formulas are torch's (``derivatives.yaml``), evaluated operation by operation in the order
written, with ``z`` the forward result and ``g`` the incoming gradient:

========================================== =============================================
operation                                  gradient(s)
========================================== =============================================
``a + b``, ``a - b``                       ``g``; ``g`` and ``-g``
``a * b``                                  ``g * b``, ``g * a``
``a / b``                                  ``g / b``, ``(-g) * (z / b)``
``sqrt``, ``exp``, ``log``                 ``g / (2 * z)``, ``g * z``, ``g / a``
``tanh``, ``sigmoid``                      ``g * (1 - z * z)``, ``(g * (1 - z)) * z``
``neg``, ``abs``                           ``-g``, ``g * sign(a)``
``minimum``, ``maximum``                   ``g`` to the selected operand, ``g / 2`` to both on a tie
``a @ b``                                  ``g @ b^T``, ``a^T @ g`` (the emulated matmul)
``sum``, ``mean``                          ``g`` broadcast back; then ``/ n`` for ``mean``
``cumsum``                                 the reversed cumulative sum of ``g``
``amax``, ``amin``, ``max()``, ``min()``   ``g / count`` to each of ``count`` tied extremes
========================================== =============================================

Sums that a backward pass needs are emulated too: the gradient of a broadcast operand (and of
``expand``/``broadcast_to``) is the sum over the broadcast copies in the format, with the
tensor's summation algorithm, copies taken in C order. Where torch's engine itself adds
gradients (a tensor used by several operations, and ``.grad`` accumulating over several
``backward`` calls), it adds in float64 and lowbit rounds that sum once in the tensor's mode
before it is used: a hook on every LowPrecisionTensor of the graph, and a post-accumulate
hook on leaves. For two contributions this is exactly the emulated addition whenever their
float64 sum is exact (it is when their exponents differ by at most ``52 - p``); for three or
more it is one rounding of their sum, not a chain of roundings. A ``gradient=`` given to
``backward`` is rounded the same way. In stochastic modes each such rounding draws from the
stream like any operation (rounding a value already in the format leaves it unchanged).
Gradients that land on leaves (``.grad``) are LowPrecisionTensors.

Exact operations (reshape, indexing, ``cat`` ...) use torch's own backward, which only moves
values (``expand``/``broadcast_to`` and the extremes above have the emulated backward listed).
Those whose backward would add gradients in float64 raise ``NotImplementedError`` under
autograd: indexing, ``gather``, ``take``, ``index_select``, ``repeat`` and ``tile`` that
repeat an element, and ``where``/``masked_select``/item assignment that broadcast an operand
that requires grad. So do ``prod``, double backward (``create_graph=True``) and a plain torch
tensor that requires grad as an operand (make it a ``LowPrecisionTensor`` so that its gradient
is emulated). Nothing of the backward pass silently runs in full precision.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from lowbit.arith import _emulate as E
from lowbit.arith import ops
from lowbit.arith.context import PrecisionContext
from lowbit.arith.lparray import LowPrecisionArray
from lowbit.arith.lparray import array as _np_array
from lowbit.formats import Format
from lowbit.rounding.modes import RoundMode

_PLAIN = torch.Tensor
_Disable = torch._C.DisableTorchFunctionSubclass


class LowPrecisionTensor(torch.Tensor):
    """A float64 tensor of values of ``fmt``; torch operations on it round their results.

    Make one with :func:`tensor`. Attributes: ``fmt``, ``mode``, ``seed``, ``stream``,
    ``algorithm``. Operations on tensors that require grad record an emulated backward (see
    the module docstring).
    """

    _lb_stream: PrecisionContext
    _lb_alg: str

    @staticmethod
    def __new__(
        cls, data: torch.Tensor, stream: PrecisionContext, algorithm: str = "recursive"
    ) -> LowPrecisionTensor:
        """Wrap float64 values that are already in the stream's format (no rounding here;
        the result is a new leaf, detached from ``data``'s graph)."""
        with _Disable():
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
        """The values as an ordinary float64 tensor (shares memory and stays attached to the
        autograd graph: torch operations on it are differentiated by torch, in float64)."""
        with _Disable():
            return self.as_subclass(_PLAIN)

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        return f"LowPrecisionTensor({self.fmt.name}, {self.mode.value}, {self.plain().tolist()})"

    def __reduce_ex__(self, proto: Any) -> Any:
        raise _not_emulated("pickling")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = _fname(func)
        handler = _HANDLERS.get(name)
        if handler is not None:
            try:
                return handler(*args, **kwargs)
            except _Unsupported as e:
                raise _not_emulated(f"{name} with {e}") from None
        short = name.rsplit(".", 1)[-1]
        if short in _META or name in _AUTOGRAD:
            with _Disable():
                return func(*args, **kwargs)
        if short in _EXACT:
            return _exact(func, name, short, args, kwargs)
        raise _not_emulated(name)


class _Unsupported(Exception):
    """An option of an emulated function that is not emulated (message: the option)."""


def _not_emulated(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} is not emulated by LowPrecisionTensor (it would run in float64); use "
        "t.plain() to compute in float64 explicitly, or an emulated operation"
    )


def _no_backward(what: str, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} has no emulated backward ({why}); run it under torch.no_grad() or on "
        "detached tensors, or use t.plain() to differentiate it in float64 explicitly"
    )


def _fname(func: Any) -> str:
    """``torch.add``, ``torch.Tensor.add``, ``torch.Tensor.shape`` ..."""
    if getattr(func, "__name__", "") == "__get__" and hasattr(func, "__self__"):
        return f"torch.Tensor.{func.__self__.__name__}"
    if getattr(func, "__name__", "") == "__set__" and hasattr(func, "__self__"):
        return f"torch.Tensor.{func.__self__.__name__}.__set__"
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if qual.startswith(("Tensor.", "_TensorBase.", "TensorBase.")):
        return "torch.Tensor." + qual.split(".", 1)[1]
    if qual.startswith("_VariableFunctionsClass."):
        return "torch." + qual.split(".", 1)[1]
    if getattr(torch.Tensor, getattr(func, "__name__", ""), None) is func:
        return f"torch.Tensor.{func.__name__}"
    mod = getattr(func, "__module__", None) or "torch"
    for private, public in (
        ("torch._C._linalg", "torch.linalg"),
        ("torch._C._fft", "torch.fft"),
        ("torch._C._special", "torch.special"),
        ("torch._C._nn", "torch.nn.functional"),
    ):
        if mod == private:
            prefix = public.rsplit(".", 1)[-1] + "_"
            return f"{public}.{qual[len(prefix) :] if qual.startswith(prefix) else qual}"
    if mod.startswith("torch._C") or mod == "torch.functional":
        mod = "torch"
    return f"{mod}.{qual}"


# functions that neither compute nor move values: run as is
_META = {
    "shape",
    "dtype",
    "device",
    "ndim",
    "dim",
    "size",
    "numel",
    "__len__",
    "is_floating_point",
    "requires_grad",
    "grad",
    "grad_fn",
    "is_leaf",
    "data_ptr",
    "storage_offset",
    "stride",
    "is_contiguous",
    "layout",
    "is_sparse",
    "is_quantized",
    "is_meta",
    "is_nested",
    "names",
    "_is_view",
    "element_size",
    "nelement",
    "tolist",
    "numpy",
    "__array__",
    "item",
    "is_cuda",
    "as_subclass",
    "__format__",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "cpu_",
    "untyped_storage",
    "_typed_storage",
    "is_complex",
    "is_signed",
    "__hash__",
    "output_nr",
    "_version",
    "__deepcopy__",
    "__reduce_ex__",
    "has_names",
    "__iter__",
    "__contains__",
    "__dlpack__",
    "__dlpack_device__",
    "argmax",
    "argmin",
    "argsort",
    "nonzero",
    "count_nonzero",
    "equal",
    "__setstate__",
    "__getstate__",
    "isnan",
    "isinf",
    "isfinite",
    "signbit",
    "__eq__",
    "__ne__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "retains_grad",
}
# autograd bookkeeping: runs as is (hooks on the tensors of the graph do the rounding)
_AUTOGRAD = {
    "torch.Tensor.retain_grad",
    "torch.Tensor.register_hook",
    "torch.Tensor.register_post_accumulate_grad_hook",
    "torch.Tensor.grad.__set__",
}
# exact value-moving functions: run on the values, keep the subclass
_EXACT = {
    "__getitem__",
    "__setitem__",
    "reshape",
    "view",
    "view_as",
    "reshape_as",
    "transpose",
    "t",
    "T",
    "mT",
    "permute",
    "flatten",
    "ravel",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "clone",
    "detach",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "expand",
    "expand_as",
    "broadcast_to",
    "narrow",
    "select",
    "flip",
    "fliplr",
    "flipud",
    "roll",
    "tril",
    "triu",
    "diag",
    "diagonal",
    "chunk",
    "split",
    "unbind",
    "to",
    "cpu",
    "cuda",
    "movedim",
    "swapaxes",
    "index_select",
    "gather",
    "masked_select",
    "where",
    "max",
    "min",
    "amax",
    "amin",
    "zeros_like",
    "ones_like",
    "sort",
    "take",
    "repeat",
    "tile",
    "__iter__",
    "zero_",
}
# exact functions whose torch backward adds the gradients of repeated elements
_REPEATING = {"__getitem__", "index_select", "gather", "take", "repeat", "tile"}
# exact functions whose torch backward sums over broadcast copies: emulated here
_BROADCASTING = {"expand", "expand_as", "broadcast_to"}


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
        raise ValueError(
            f"operands in different formats/modes ({a.fmt.name}/{a.mode.value} and "
            f"{b.fmt.name}/{b.mode.value})"
        )


def _check_foreign(t: torch.Tensor) -> None:
    """A plain tensor that requires grad would get no (or a float64) gradient: refuse it."""
    if torch.is_grad_enabled() and t.requires_grad:
        raise NotImplementedError(
            "a plain torch tensor that requires grad is an operand of a LowPrecisionTensor "
            "operation: its gradient would not be emulated; make it a LowPrecisionTensor "
            "(lowbit.arith.tensor.tensor(..., requires_grad=True)) or detach it"
        )


def _operand(x: LowPrecisionTensor, lead: LowPrecisionTensor) -> torch.Tensor:
    """A low-precision operand as a plain float64 tensor, still attached to the graph."""
    _check_same(lead, x)
    if torch.is_grad_enabled():
        _hook_leaf(x)
    return x.plain()


def _unwrap(obj: Any, lead: LowPrecisionTensor) -> Any:
    """LowPrecisionTensors to plain tensors; other float tensors and Python floats (values
    that enter the result: ``where``, ``cat``, ``__setitem__``) rounded to lead's format."""
    if isinstance(obj, LowPrecisionTensor):
        return _operand(obj, lead)
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        _check_foreign(obj)
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
            return _attach(out, lead)
        return out
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # torch.return_types (max, sort)
        return type(out)([_rewrap(x, lead) for x in out])
    if isinstance(out, list | tuple):
        return type(out)(_rewrap(x, lead) for x in out)
    return out


def _values(x: Any, lead: LowPrecisionTensor) -> torch.Tensor:
    """An operand as a float64 tensor of values of lead's format (RNE for foreign values)."""
    if isinstance(x, LowPrecisionTensor):
        return _operand(x, lead)
    if isinstance(x, torch.Tensor):
        _check_foreign(x)
        x = x.detach()
    with _Disable():
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


def _emu(stream: PrecisionContext, fn: Callable[..., Any], *vals: torch.Tensor) -> Any:
    """``fn(*vals, fmt, mode)`` (an ``lb.arith`` operation) drawing from ``stream``."""
    n = max(int(v.numel()) for v in vals)
    with _Disable(), E.use_stream(stream), E.serial_kernels_if_small(n):
        return fn(*vals, stream.fmt, stream.mode)


def _run(fn: Callable[..., Any], lead: LowPrecisionTensor, *vals: torch.Tensor) -> Any:
    return _emu(lead._lb_stream, fn, *vals)


# ---- autograd plumbing --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Meta:
    """What a backward pass needs of the forward's lead tensor."""

    stream: PrecisionContext
    alg: str

    @staticmethod
    def of(lead: LowPrecisionTensor) -> _Meta:
        return _Meta(lead._lb_stream, lead._lb_alg)


def _grad_wanted(*vals: Any) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(v, torch.Tensor) and v.requires_grad for v in vals
    )


def _round_stream(g: torch.Tensor, stream: PrecisionContext) -> torch.Tensor:
    """Round float64 values once in the stream's mode, drawing from it (as ``lb.arith``)."""
    from lowbit.rounding.api import round as _round

    with _Disable():
        g = g.detach().to(torch.float64).contiguous()
        offset = stream.take(g.numel()) if stream.mode.stochastic else 0
        return _round(
            g,
            stream.fmt,
            stream.mode,
            overflow=stream.overflow,
            subnormals=stream.subnormals,
            seed=stream.seed,
            rand_bits=stream.rand_bits,
            offset=offset,
        )


def _attach(t: torch.Tensor, lead: LowPrecisionTensor) -> LowPrecisionTensor:
    """Wrap a plain result keeping its graph; its incoming gradient (the engine's float64 sum
    over its uses) is rounded once in the stream's mode before it flows on."""
    stream = lead._lb_stream
    with _Disable():
        r = t.as_subclass(LowPrecisionTensor)
        r._lb_stream = stream
        r._lb_alg = lead._lb_alg
        if r.requires_grad:
            r.register_hook(lambda g: _round_stream(g, stream))
    return r  # type: ignore[return-value]


def _hook_leaf(x: LowPrecisionTensor) -> None:
    """Round what reaches a leaf: the engine's sum over its uses (tensor hook), and ``.grad``
    after the engine added a new gradient to an existing one (post-accumulate hook, which
    also makes ``.grad`` a LowPrecisionTensor)."""
    with _Disable():
        if getattr(x, "_lb_hooked", False) or not (x.requires_grad and x.is_leaf):
            return
        stream, alg = x._lb_stream, x._lb_alg
        ref = weakref.ref(x)

        def pre(g: torch.Tensor) -> torch.Tensor:
            leaf = ref()
            if leaf is not None:
                with _Disable():
                    leaf._lb_adds = leaf.grad is not None
            return _round_stream(g, stream)

        def post(p: torch.Tensor) -> None:
            with _Disable():
                g = p.grad
                if g is None:
                    return
                if getattr(p, "_lb_adds", False):
                    g = _round_stream(g, stream)
                p.grad = LowPrecisionTensor(g, stream, alg)

        x.register_hook(pre)
        x.register_post_accumulate_grad_hook(post)
        x._lb_hooked = True


def _sum_to(g: torch.Tensor, shape: torch.Size, meta: _Meta) -> torch.Tensor:
    """Gradient of a broadcast operand: the sum over the broadcast copies, in the format with
    the tensor's summation algorithm, copies taken in C order."""
    from lowbit.linalg.summation import sum_along

    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead_dims = g.dim() - len(shape)
    dims = [
        *range(lead_dims),
        *(lead_dims + i for i, n in enumerate(shape) if n == 1 and g.shape[lead_dims + i] != 1),
    ]
    keep = [d for d in range(g.dim()) if d not in dims]
    a = g.detach().cpu().numpy().transpose(*dims, *keep)
    a = a.reshape(-1, *(g.shape[d] for d in keep))
    with E.use_stream(meta.stream):
        r = sum_along(a, 0, meta.alg)
    out = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float64)).reshape(shape)
    return out.to(g.device)


def _const(v: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64, device=like.device)


class _Emu:
    """``e(fn, *vals)``: an ``lb.arith`` operation in a backward pass, drawing from the
    stream."""

    def __init__(self, stream: PrecisionContext) -> None:
        self.stream = stream

    def __call__(self, fn: Callable[..., Any], *vals: torch.Tensor) -> torch.Tensor:
        return _emu(self.stream, fn, *vals)


_Grads = tuple[torch.Tensor | None, ...]


def _bw_add(
    e: _Emu, g: torch.Tensor, z: torch.Tensor, v: list[torch.Tensor], need: tuple[bool, ...]
) -> _Grads:
    return (g if need[0] else None, g if need[1] else None)


def _bw_sub(
    e: _Emu, g: torch.Tensor, z: torch.Tensor, v: list[torch.Tensor], need: tuple[bool, ...]
) -> _Grads:
    return (g if need[0] else None, e(ops.neg, g) if need[1] else None)


def _bw_mul(
    e: _Emu, g: torch.Tensor, z: torch.Tensor, v: list[torch.Tensor], need: tuple[bool, ...]
) -> _Grads:
    a, b = v
    return (e(ops.mul, g, b) if need[0] else None, e(ops.mul, g, a) if need[1] else None)


def _bw_div(
    e: _Emu, g: torch.Tensor, z: torch.Tensor, v: list[torch.Tensor], need: tuple[bool, ...]
) -> _Grads:
    b = v[1]
    ga = e(ops.div, g, b) if need[0] else None
    # torch: -grad * ((a / b) / b); a / b is the forward result z
    gb = e(ops.mul, e(ops.neg, g), e(ops.div, z, b)) if need[1] else None
    return (ga, gb)


def _bw_minmax(pick_min: bool) -> Callable[..., _Grads]:
    def bw(
        e: _Emu, g: torch.Tensor, z: torch.Tensor, v: list[torch.Tensor], need: tuple[bool, ...]
    ) -> _Grads:
        a, b = v
        # torch: where(a == b, grad / 2, grad).masked_fill_(the other one wins, 0)
        t = torch.where(a == b, e(ops.div, g, _const(2.0, g)), g)
        lose_a, lose_b = (a > b, a < b) if pick_min else (a < b, a > b)
        return (
            t.masked_fill(lose_a, 0) if need[0] else None,
            t.masked_fill(lose_b, 0) if need[1] else None,
        )

    return bw


def _unary(
    rule: Callable[[_Emu, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[..., _Grads]:
    def bw(
        e: _Emu, g: torch.Tensor, z: torch.Tensor, v: list[torch.Tensor], need: tuple[bool, ...]
    ) -> _Grads:
        return (rule(e, g, z, v[0]) if need[0] else None,)

    return bw


_BACKWARD: dict[str, Callable[..., _Grads]] = {
    "add": _bw_add,
    "sub": _bw_sub,
    "mul": _bw_mul,
    "div": _bw_div,
    "minimum": _bw_minmax(True),
    "maximum": _bw_minmax(False),
    "sqrt": _unary(lambda e, g, z, a: e(ops.div, g, e(ops.mul, _const(2.0, g), z))),
    "exp": _unary(lambda e, g, z, a: e(ops.mul, g, z)),
    "log": _unary(lambda e, g, z, a: e(ops.div, g, a)),
    "tanh": _unary(lambda e, g, z, a: e(ops.mul, g, e(ops.sub, _const(1.0, g), e(ops.mul, z, z)))),
    "sigmoid": _unary(
        lambda e, g, z, a: e(ops.mul, e(ops.mul, g, e(ops.sub, _const(1.0, g), z)), z)
    ),
    "neg": _unary(lambda e, g, z, a: e(ops.neg, g)),
    "abs": _unary(lambda e, g, z, a: e(ops.mul, g, torch.sign(a))),
}


class _ElementwiseFn(torch.autograd.Function):
    """An elementwise ``lb.arith`` operation with its emulated derivative."""

    @staticmethod
    def forward(ctx: Any, meta: _Meta, fn: Callable[..., Any], *vals: torch.Tensor) -> torch.Tensor:
        z = _emu(meta.stream, fn, *vals)
        ctx.meta, ctx.key = meta, fn.__name__
        ctx.save_for_backward(*vals, z)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        *vals, z = ctx.saved_tensors
        grads = _BACKWARD[ctx.key](_Emu(ctx.meta.stream), g, z, vals, ctx.needs_input_grad[2:])
        return (
            None,
            None,
            *(
                None if gi is None else _sum_to(gi, v.shape, ctx.meta)
                for gi, v in zip(grads, vals, strict=True)
            ),
        )


class _MatmulFn(torch.autograd.Function):
    """The emulated matmul; gradients ``g @ b^T`` and ``a^T @ g`` by the same emulated matmul
    (numpy ``matmul`` shapes, batch broadcasting summed back with :func:`_sum_to`)."""

    @staticmethod
    def forward(ctx: Any, meta: _Meta, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.meta = meta
        ctx.save_for_backward(a, b)
        return _matmul_values(a, b, meta.stream, a.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        a, b = ctx.saved_tensors
        meta = ctx.meta
        a2 = a.unsqueeze(0) if a.dim() == 1 else a
        b2 = b.unsqueeze(-1) if b.dim() == 1 else b
        g2 = g.unsqueeze(-1) if b.dim() == 1 else g
        g2 = g2.unsqueeze(-2) if a.dim() == 1 else g2
        ga = gb = None
        if ctx.needs_input_grad[1]:
            ga = _matmul_values(g2, b2.transpose(-1, -2), meta.stream, g.device)
            ga = _sum_to(ga, a2.shape, meta).reshape(a.shape)
        if ctx.needs_input_grad[2]:
            gb = _matmul_values(a2.transpose(-1, -2), g2, meta.stream, g.device)
            gb = _sum_to(gb, b2.shape, meta).reshape(b.shape)
        return None, ga, gb


def _matmul_values(
    a: torch.Tensor, b: torch.Tensor, stream: PrecisionContext, device: Any
) -> torch.Tensor:
    an = a.detach().cpu().numpy()
    bn = b.detach().cpu().numpy()
    with E.use_stream(stream):
        r = E.matmul(an, bn, stream.fmt, stream.mode)
    return torch.from_numpy(np.array(np.asarray(r), dtype=np.float64)).to(device)


def _keepdim_shape(g: torch.Tensor, ndim: int, dim: int | None, keepdim: bool) -> torch.Tensor:
    """The gradient of a reduction with the reduced dimension(s) restored as size 1."""
    if dim is None:
        return g.reshape((1,) * ndim)
    return g if keepdim else g.unsqueeze(dim)


class _ReduceFn(torch.autograd.Function):
    """``sum``/``mean``/``cumsum`` through the numpy implementation, emulated derivative."""

    @staticmethod
    def forward(
        ctx: Any, meta: _Meta, kind: str, dim: int | None, keepdim: bool, x: torch.Tensor
    ) -> torch.Tensor:
        a = LowPrecisionArray(x.detach().cpu().numpy(), meta.stream, meta.alg)
        if kind == "cumsum":
            r = a.cumsum(axis=dim)
        else:
            r = {"sum": a.sum, "mean": a.mean}[kind](axis=dim, keepdims=keepdim)
        ctx.meta, ctx.kind, ctx.dim, ctx.keepdim = meta, kind, dim, keepdim
        ctx.shape = x.shape
        return torch.from_numpy(np.array(np.asarray(r), dtype=np.float64)).to(x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        meta, dim, shape = ctx.meta, ctx.dim, ctx.shape
        if ctx.kind == "cumsum":
            from lowbit.linalg.summation import cumsum_along

            d = 0 if dim is None else dim % len(shape)
            flat = g.detach().cpu().numpy()
            with E.use_stream(meta.stream):
                r = np.flip(cumsum_along(np.flip(flat, d), d), d)
            gx = torch.from_numpy(np.ascontiguousarray(r)).to(g.device).reshape(shape)
            return None, None, None, None, gx
        gx = _keepdim_shape(g, len(shape), dim, ctx.keepdim).expand(shape).contiguous()
        if ctx.kind == "mean":
            n = int(np.prod(shape)) if dim is None else shape[dim]
            gx = _emu(meta.stream, ops.div, gx, _const(float(n), gx))
        return None, None, None, None, gx


class _BroadcastFn(torch.autograd.Function):
    """``expand``/``broadcast_to``: exact forward, emulated sum backward."""

    @staticmethod
    def forward(ctx: Any, meta: _Meta, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        ctx.meta, ctx.shape = meta, x.shape
        return x.expand(shape).clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        return None, _sum_to(g, ctx.shape, ctx.meta), None


class _SelectFn(torch.autograd.Function):
    """``amax``/``amin`` and full ``max()``/``min()``: exact forward; the gradient is divided
    (emulated) among the tied extreme elements, as torch's ``scale_grad_by_count`` and
    ``evenly_distribute_backward`` do."""

    @staticmethod
    def forward(
        ctx: Any,
        meta: _Meta,
        full: bool,
        fn: Callable[..., Any],
        dims: tuple[int, ...],
        keepdim: bool,
        x: torch.Tensor,
    ) -> torch.Tensor:
        z = fn(x)
        ctx.meta, ctx.full, ctx.dims, ctx.keepdim = meta, full, dims, keepdim
        ctx.save_for_backward(x, z)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        x, z = ctx.saved_tensors
        dims = ctx.dims or tuple(range(x.dim()))
        zk, gk = z, g
        if not ctx.keepdim:
            for d in sorted(d % max(x.dim(), 1) for d in dims):
                if x.dim():
                    zk, gk = zk.unsqueeze(d), gk.unsqueeze(d)
        if ctx.full:  # evenly_distribute_backward: NaN extreme selects the NaNs
            mask = x.isnan() if bool(z.isnan()) else x == z
            q = _emu(ctx.meta.stream, ops.div, g, _const(float(mask.sum()), g))
            gx = torch.zeros_like(x).masked_fill(mask, q)
        else:  # scale_grad_by_count: (grad / count) * mask
            mask = x == zk
            count = (
                mask.sum(dim=dims, keepdim=True).to(torch.float64)
                if x.dim()
                else mask.to(torch.float64)
            )
            q = _emu(ctx.meta.stream, ops.div, gk, count)
            gx = _emu(ctx.meta.stream, ops.mul, q, mask.to(torch.float64))
        return None, None, None, None, None, gx


# ---- handlers ------------------------------------------------------------------------------------
def _elementwise(fn: Callable[..., Any], nargs: int, reverse: bool = False) -> Callable[..., Any]:
    def h(*args: Any, **kw: Any) -> Any:
        if kw.get("out") is not None:
            raise _Unsupported("out=")
        kw.pop("out", None)
        alpha = kw.pop("alpha", 1)
        rounding_mode = kw.pop("rounding_mode", None)
        if kw or alpha != 1 or rounding_mode is not None:
            bad = [
                *kw,
                *(["alpha"] if alpha != 1 else []),
                *(["rounding_mode"] if rounding_mode is not None else []),
            ]
            raise _Unsupported(", ".join(f"{b}=" for b in bad))
        lead = _lead(args)
        vals = [_values(a, lead) for a in args[:nargs]]
        if reverse:
            vals = vals[::-1]
        if _grad_wanted(*vals):
            return _attach(_ElementwiseFn.apply(_Meta.of(lead), fn, *vals), lead)
        return _wrap(_run(fn, lead, *vals), lead)

    return h


def _minmax(fn: Callable[..., Any]) -> Callable[..., Any]:
    def h(x: Any, y: Any, **kw: Any) -> Any:
        if kw.get("out") is not None:
            raise _Unsupported("out=")
        lead = _lead((x, y))
        a, b = _values(x, lead), _values(y, lead)
        if _grad_wanted(a, b):
            return _attach(_ElementwiseFn.apply(_Meta.of(lead), fn, a, b), lead)
        return _wrap(_run(fn, lead, a, b), lead)

    return h


def _compare(op: str, reverse: bool = False) -> Callable[..., Any]:
    def h(x: Any, y: Any, **kw: Any) -> torch.Tensor:
        lead = _lead((x, y))
        with torch.no_grad():
            a, b = _values(x, lead), _values(y, lead)
        if reverse:
            a, b = b, a
        with _Disable():
            return getattr(torch, op)(a, b)

    return h


# ---- reductions and products via the numpy implementation -------------------------------------
def _to_lpa(t: LowPrecisionTensor) -> LowPrecisionArray:
    return LowPrecisionArray(t.plain().detach().cpu().numpy(), t._lb_stream, t._lb_alg)


def _from_lpa(a: Any, lead: LowPrecisionTensor) -> LowPrecisionTensor:
    return _wrap(torch.from_numpy(np.array(np.asarray(a), dtype=np.float64)).to(lead.device), lead)


def _reduction(name: str) -> Callable[..., Any]:
    def h(
        x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None, out: Any = None
    ) -> LowPrecisionTensor:
        lead = _lead((x,))
        if dtype is not None or out is not None:
            raise _Unsupported("dtype=/out=")
        if isinstance(dim, list | tuple):
            if len(dim) != 1:
                raise _Unsupported("several dims")
            dim = dim[0]
        v = _values(lead, lead)
        if _grad_wanted(v):
            if name == "prod":
                raise _no_backward(f"torch.{name}", "not implemented")
            return _attach(_ReduceFn.apply(_Meta.of(lead), name, dim, keepdim, v), lead)
        a = _to_lpa(lead)
        fn = {"sum": a.sum, "mean": a.mean, "prod": a.prod}[name]
        return _from_lpa(fn(axis=dim, keepdims=keepdim), lead)

    return h


def _cumsum(x: Any, dim: int, *, dtype: Any = None, out: Any = None) -> LowPrecisionTensor:
    lead = _lead((x,))
    if dtype is not None or out is not None:
        raise _Unsupported("dtype=/out=")
    v = _values(lead, lead)
    if _grad_wanted(v):
        return _attach(_ReduceFn.apply(_Meta.of(lead), "cumsum", dim, False, v), lead)
    return _from_lpa(_to_lpa(lead).cumsum(axis=dim), lead)


def _matmul(x: Any, y: Any, *, out: Any = None, reverse: bool = False) -> LowPrecisionTensor:
    if out is not None:
        raise _Unsupported("out=")
    lead = _lead((x, y))
    a, b = _values(x, lead), _values(y, lead)
    if reverse:
        a, b = b, a
    if _grad_wanted(a, b):
        return _attach(_MatmulFn.apply(_Meta.of(lead), a, b), lead)
    return _wrap(_matmul_values(a, b, lead._lb_stream, lead.device), lead)


def _rmatmul(x: Any, y: Any) -> LowPrecisionTensor:
    return _matmul(x, y, reverse=True)


def _unary_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _elementwise(fn, 1)


# ---- exact functions under autograd ----------------------------------------------------------
def _lp_args(args: Any, kwargs: Any) -> list[LowPrecisionTensor]:
    found: list[LowPrecisionTensor] = []
    stack = [*args, *(kwargs or {}).values()]
    while stack:
        x = stack.pop(0)
        if isinstance(x, LowPrecisionTensor):
            found.append(x)
        elif isinstance(x, list | tuple):
            stack.extend(x)
    return found


def _exact(func: Any, name: str, short: str, args: Any, kwargs: Any) -> Any:
    lead = _lead(args, kwargs)
    if _grad_wanted(*_lp_args(args, kwargs)):
        if short in _BROADCASTING:
            return _broadcast(func, args, kwargs, lead)
        if short in ("amax", "amin") or (short in ("max", "min") and len(args) == 1 and not kwargs):
            return _select(func, short, args, kwargs, lead)
        if short in _REPEATING:
            _refuse_repeats(func, name, args, kwargs, lead)
        if short in ("where", "masked_select", "__setitem__"):
            _refuse_broadcast_grad(func, name, short, args, kwargs, lead)
    with _Disable():
        out = func(*_unwrap(args, lead), **_unwrap(kwargs, lead))
    return _rewrap(out, lead)


def _refuse_repeats(func: Any, name: str, args: Any, kwargs: Any, lead: LowPrecisionTensor) -> None:
    """Run the function on element numbers: a repeated number means torch's backward would
    add the gradients of the copies in float64."""
    src = args[0]
    if not (isinstance(src, LowPrecisionTensor) and src.requires_grad):
        return
    with torch.no_grad(), _Disable():
        ids = torch.arange(src.numel(), dtype=torch.float64, device=src.device)
        out = func(ids.reshape(src.shape), *_unwrap(args[1:], lead), **_unwrap(kwargs, lead))
        if out.numel() != torch.unique(out).numel():
            raise _no_backward(
                name + " repeating an element", "torch would add the copies' gradients in float64"
            )


def _refuse_broadcast_grad(
    func: Any, name: str, short: str, args: Any, kwargs: Any, lead: LowPrecisionTensor
) -> None:
    """``where``/``masked_select``/item assignment broadcasting an operand that requires grad:
    torch would sum its gradient over the copies in float64."""
    with torch.no_grad(), _Disable():
        plain = _unwrap(args, lead)
        if short == "__setitem__":
            target, index, value = args[0], args[1], args[2]
            if isinstance(value, LowPrecisionTensor) and value.requires_grad:
                region = plain[0][index]
                if tuple(value.shape) != tuple(region.shape):
                    raise _no_backward(
                        name + " with a broadcast value", "torch would sum its gradient in float64"
                    )
            del target
            return
        out = func(*plain, **_unwrap(kwargs, lead))
        shape = tuple(out.shape) if short == "where" else None
        for x in args:
            if isinstance(x, LowPrecisionTensor) and x.requires_grad:
                if short == "masked_select":
                    mask = args[1]
                    shape = tuple(torch.broadcast_shapes(x.shape, mask.shape))
                if tuple(x.shape) != shape:
                    raise _no_backward(
                        name + " broadcasting an operand that requires grad",
                        "torch would sum its gradient in float64",
                    )


def _broadcast(func: Any, args: Any, kwargs: Any, lead: LowPrecisionTensor) -> Any:
    x = args[0]
    with torch.no_grad(), _Disable():
        shape = tuple(func(*_unwrap(args, lead), **_unwrap(kwargs, lead)).shape)
    return _attach(_BroadcastFn.apply(_Meta.of(lead), _operand(x, lead), shape), lead)


def _select(func: Any, short: str, args: Any, kwargs: Any, lead: LowPrecisionTensor) -> Any:
    x = args[0]
    full = short in ("max", "min")
    dim = kwargs.get("dim", args[1] if len(args) > 1 else ())
    keepdim = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
    dims = (dim,) if isinstance(dim, int) else tuple(dim or ())
    rest = {k: v for k, v in kwargs.items()}

    def fn(v: torch.Tensor) -> torch.Tensor:
        with _Disable():
            return func(v, *args[1:], **rest)

    return _attach(
        _SelectFn.apply(_Meta.of(lead), full, fn, dims, keepdim, _operand(x, lead)), lead
    )


# ---- autograd entry points -----------------------------------------------------------------------
def _check_create_graph(kw: dict[str, Any]) -> None:
    if kw.get("create_graph"):
        raise _no_backward(
            "double backward (create_graph=True)", "the emulated derivatives are not differentiable"
        )


def _backward(
    self: Any,
    gradient: Any = None,
    retain_graph: Any = None,
    create_graph: bool = False,
    inputs: Any = None,
) -> None:
    _check_create_graph({"create_graph": create_graph})
    with _Disable():
        torch.autograd.backward(self, gradient, retain_graph, create_graph, inputs=inputs)


def _autograd_backward(tensors: Any, *args: Any, **kw: Any) -> None:
    _check_create_graph(kw)
    with _Disable():
        torch.autograd.backward(tensors, *args, **kw)


def _autograd_grad(outputs: Any, inputs: Any, *args: Any, **kw: Any) -> Any:
    _check_create_graph(kw)
    ins = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    for x in ins:
        if isinstance(x, LowPrecisionTensor):
            _hook_leaf(x)
    with _Disable():
        res = torch.autograd.grad(outputs, inputs, *args, **kw)
    return tuple(
        LowPrecisionTensor(r, x._lb_stream, x._lb_alg)
        if r is not None and isinstance(x, LowPrecisionTensor)
        else r
        for r, x in zip(res, ins, strict=True)
    )


def _iter(self: Any) -> Any:
    # unbind through __torch_function__: the rows stay LowPrecisionTensors (and in the graph)
    if self.dim() == 0:
        raise TypeError("iteration over a 0-d tensor")
    return iter(self.unbind(0))


def _requires_grad_(self: Any, requires_grad: bool = True) -> Any:
    with _Disable():
        self.requires_grad_(requires_grad)
    if requires_grad:
        _hook_leaf(self)
    return self


def _set_requires_grad(self: Any, value: bool) -> None:
    with _Disable():
        self.requires_grad = value
    if value:
        _hook_leaf(self)


_HANDLERS: dict[str, Callable[..., Any]] = {}


def _register(names: tuple[str, ...], h: Callable[..., Any]) -> None:
    for n in names:
        _HANDLERS[n] = h


_register(
    ("torch.add", "torch.Tensor.add", "torch.Tensor.__add__", "torch.Tensor.__radd__"),
    _elementwise(ops.add, 2),
)
_register(
    ("torch.sub", "torch.subtract", "torch.Tensor.sub", "torch.Tensor.__sub__"),
    _elementwise(ops.sub, 2),
)
_register(("torch.Tensor.__rsub__", "torch.rsub"), _elementwise(ops.sub, 2, reverse=True))
_register(
    (
        "torch.mul",
        "torch.multiply",
        "torch.Tensor.mul",
        "torch.Tensor.__mul__",
        "torch.Tensor.__rmul__",
    ),
    _elementwise(ops.mul, 2),
)
_register(
    (
        "torch.div",
        "torch.divide",
        "torch.true_divide",
        "torch.Tensor.div",
        "torch.Tensor.__truediv__",
        "torch.Tensor.__div__",
    ),
    _elementwise(ops.div, 2),
)
_register(
    ("torch.Tensor.__rtruediv__", "torch.Tensor.__rdiv__"), _elementwise(ops.div, 2, reverse=True)
)
for _n, _f in (
    ("sqrt", ops.sqrt),
    ("exp", ops.exp),
    ("log", ops.log),
    ("tanh", ops.tanh),
    ("sigmoid", ops.sigmoid),
    ("neg", ops.neg),
    ("negative", ops.neg),
    ("abs", ops.abs),
    ("absolute", ops.abs),
):
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
_register(
    (
        "torch.matmul",
        "torch.Tensor.matmul",
        "torch.Tensor.__matmul__",
        "torch.mm",
        "torch.Tensor.mm",
        "torch.mv",
        "torch.Tensor.mv",
        "torch.dot",
        "torch.Tensor.dot",
    ),
    _matmul,
)
_register(("torch.Tensor.__rmatmul__",), _rmatmul)
_register(("torch.Tensor.backward",), _backward)
_register(("torch.autograd.backward",), _autograd_backward)
_register(("torch.autograd.grad",), _autograd_grad)
_register(("torch.Tensor.requires_grad_",), _requires_grad_)
_register(("torch.Tensor.__iter__",), _iter)
_register(("torch.Tensor.requires_grad.__set__",), _set_requires_grad)


def tensor(
    data: Any,
    fmt: Format | str | None = None,
    mode: RoundMode | str | None = None,
    *,
    seed: int | None = None,
    algorithm: str = "recursive",
    device: Any = None,
    requires_grad: bool = False,
) -> LowPrecisionTensor:
    """A :class:`LowPrecisionTensor`: ``data`` rounded to ``fmt`` in ``mode``.

    Same arguments and stream rules as :func:`lowbit.arith.lparray.array` (the conversion
    draws from the same counter positions, so ``tensor(x, f, "sr", seed=s)`` and
    ``array(x, f, "sr", seed=s)`` hold the same values), plus ``device`` and
    ``requires_grad`` (a leaf whose gradient is emulated, see the module docstring).
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
    out = LowPrecisionTensor(t, a.stream, algorithm)
    if requires_grad:
        out.requires_grad_(True)
    return out


__all__ = ["LowPrecisionTensor", "tensor"]
