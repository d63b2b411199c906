"""Tensor groups of one training step, measured by tracing a forward pass on an example batch.

Lee, Sharma & Aiken assign a precision to every tensor of a training step: per operation
its parameters ``P``, its output ``Y`` and their gradients ``GP``, ``GY`` (an operation's
input ``X`` and ``GX`` are its producer's ``Y`` and ``GY``, so they are not counted twice).
Their repository (``ext3/core/emodlobj/emodlobjmgr.py``) groups the operations in forward
(execution) order: the input and every Conv/Linear (a GEMM) opens a new group, and every
other operation (BatchNorm, ReLU, pooling, the residual add, ...) joins the group of the GEMM
that ran last before it. A group holds the ``Y`` and ``GY`` of its operations and the ``P``
(and ``GP``) of the operations whose input it produced: demoting a group puts a GEMM's
input and weights in low precision together, as a low-precision multiplier needs.

:func:`tensor_groups` runs the model once on a copy (training mode, gradients on) with

* forward hooks on every *leaf* module (a Conv/Linear, or a module without children): one
  operation per call, named by the module (``stages.0.0.relu``; a second call of the same
  module is ``stages.0.0.relu#2``);
* a :class:`torch.overrides.TorchFunctionMode` that sees the tensor functions called outside
  leaf modules (the residual ``out + shortcut``: ``stages.0.0.add``).

An operation that returns its input unchanged (``nn.Identity``, views such as ``flatten``)
creates no tensor: its output is its input. An in-place operation (``ReLU(inplace=True)``)
does: its result is a new tensor of the step, as in the paper's accounting. ``Y``/``GY``
sizes are measured on the example batch and scaled to ``batch_size`` (tensors whose first
dimension is the batch); ``GY`` exists where the output requires a gradient (the input
batch has none). The loss (outside the model) is not part of the graph.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

#: module types that are GEMMs (exact types and their subclasses, quantized layers included)
GEMM_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
KINDS = ("Y", "GY", "P", "GP")
INPUT = "input"


@dataclass(frozen=True)
class Op:
    """One operation (module call or tensor function) of the forward pass.

    Attributes:
        index: position in execution order (0: the input batch).
        name: unique name (module name, ``#k`` for its k-th call; functions: the enclosing
            module's name + the function's, e.g. ``stages.0.0.add``).
        type: module class or function name (``"Conv2d"``, ``"add"``, ``"Input"``).
        gemm: whether it is a Conv/Linear module call.
        module: qualified module name (None for functions and the input).
        group: index of its group.
        preds: indices of the operations that produced its tensor inputs, first input first.
    """

    index: int
    name: str
    type: str
    gemm: bool
    module: str | None
    group: int
    preds: tuple[int, ...]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the training step.

    Attributes:
        name: ``"<op>.<kind>"`` (``"stem.0.Y"``).
        op: name of its operation.
        kind: ``"Y"``, ``"GY"``, ``"P"`` or ``"GP"``.
        size: elements at the training batch size.
        group: the group it is counted in (``Y``/``GY``: its operation's; ``P``/``GP``: the
            group of the operation that produced its operation's first input), None when it
            belongs to none (parameters of an operation without traced inputs).
        requires: groups that must all be demoted for it to be demoted (``P``: the groups of
            every producer of its operation's inputs, as the repository's ``all(prv)``).
    """

    name: str
    op: str
    kind: str
    size: int
    group: int | None
    requires: frozenset[int]


@dataclass(frozen=True)
class Group:
    """A tensor group: the input or one GEMM call and the operations after it.

    Attributes:
        index: position in execution order (0: the input).
        name: ``"input"`` or the GEMM operation's name.
        ops: names of its operations.
        tensors: names of the tensors counted in it (``Y``, ``GY``, ``P``, ``GP``).
        size: elements of its ``Y``, ``GY`` and ``P`` tensors: what demoting it puts in low
            precision (``GP`` always stays high and is left out).
    """

    index: int
    name: str
    ops: tuple[str, ...]
    tensors: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class TensorGraph:
    """Operations, tensors and groups of one training step (see :func:`tensor_groups`).

    Attributes:
        ops: every operation in execution order.
        tensors: every tensor, in operation order (``Y``, ``GY``, ``P``, ``GP`` per op).
        groups: every group in execution order.
        batch_size: the training batch size the sizes are given for.
        example_batch_size: batch size of the traced example.
    """

    ops: tuple[Op, ...]
    tensors: tuple[TensorInfo, ...]
    groups: tuple[Group, ...]
    batch_size: int
    example_batch_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tensors})
        object.__setattr__(self, "_ops", {o.name: o for o in self.ops})

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called ``name``.

        Raises:
            KeyError: no such tensor (the message lists a few names).
        """
        try:
            return self._by_name[name]  # type: ignore[attr-defined,no-any-return]
        except KeyError:
            raise KeyError(
                f"no tensor {name!r}; tensors: {', '.join(t.name for t in self.tensors[:8])}, ..."
            ) from None

    def has_tensor(self, name: str) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    def op(self, name: str) -> Op:
        """The operation called ``name``."""
        return self._ops[name]  # type: ignore[attr-defined,no-any-return]

    @property
    def total_size(self) -> int:
        """Elements of every tensor of the step (``P``, ``Y``, ``GY``, ``GP``)."""
        return sum(t.size for t in self.tensors)

    def gemm_modules(self) -> list[str]:
        """Qualified names of the GEMM modules, in order of their first call."""
        return list(dict.fromkeys(o.module for o in self.ops if o.gemm and o.module))

    def calls(self, module: str) -> list[Op]:
        """The operations that are calls of ``module``."""
        return [o for o in self.ops if o.module == module]


# ---- tracing ----------------------------------------------------------------------------------
def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _is_gemm(m: nn.Module) -> bool:
    return isinstance(m, GEMM_TYPES)


def _storage(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
        return -1


class _Tracer:
    """Builds the op list; shared by the module hooks and the function mode."""

    def __init__(self, example_bs: int, batch_size: int) -> None:
        self.example_bs = example_bs
        self.batch_size = batch_size
        self.ops: list[dict[str, Any]] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> op index
        self.keep: list[torch.Tensor] = []  # keeps ids unique while tracing
        self.frames: list[tuple[str, bool, bool, dict[int, int]]] = []
        self.leaf_depth = 0
        self.busy = False
        self.calls: Counter[str] = Counter()
        self.seen_params: set[int] = set()

    # sizes at the training batch size
    def scaled(self, t: torch.Tensor) -> int:
        n = t.numel()
        if t.ndim > 0 and t.shape[0] == self.example_bs:
            return n // self.example_bs * self.batch_size
        return n

    def traced(self, obj: Any) -> list[torch.Tensor]:
        return [t for t in _tensors(obj) if id(t) in self.producer]

    def scope(self) -> str:
        for name, leaf, _, _ in reversed(self.frames):
            if not leaf:
                return name
        return ""

    def new_outputs(
        self, ins: list[torch.Tensor], versions: dict[int, int], out: Any
    ) -> list[torch.Tensor]:
        """Outputs that are new tensors of the step; aliases inherit their producer."""
        new: list[torch.Tensor] = []
        in_storage = {_storage(t): t for t in ins}
        for o in _tensors(out):
            if not o.is_floating_point():
                continue
            if any(o is t for t in ins):
                if o._version != versions.get(id(o), o._version):
                    new.append(o)  # modified in place: a new value of the step
                continue  # returned unchanged
            base = in_storage.get(_storage(o))
            if base is not None and o.numel() > 0:  # a view of an input
                self.producer[id(o)] = self.producer[id(base)]
                self.keep.append(o)
                continue
            new.append(o)
        return new

    def add_op(
        self,
        name: str,
        type_: str,
        gemm: bool,
        module: str | None,
        ins: list[torch.Tensor],
        outs: list[torch.Tensor],
        params: list[nn.Parameter],
    ) -> None:
        preds = tuple(dict.fromkeys(self.producer[id(t)] for t in ins if id(t) in self.producer))
        y = sum(self.scaled(o) for o in outs)
        gy = sum(self.scaled(o) for o in outs if o.requires_grad)
        p = sum(q.numel() for q in params)
        gp = sum(q.numel() for q in params if q.requires_grad)
        idx = len(self.ops)
        self.ops.append(
            dict(
                index=idx,
                name=name,
                type=type_,
                gemm=gemm,
                module=module,
                preds=preds,
                sizes={"Y": y, "GY": gy, "P": p, "GP": gp},
            )
        )
        for o in outs:
            self.producer[id(o)] = idx
            self.keep.append(o)

    def op_name(self, base: str) -> str:
        self.calls[base] += 1
        k = self.calls[base]
        return base if k == 1 else f"{base}#{k}"

    # module hooks
    def pre_hook(self, name: str, leaf: bool) -> Any:
        def hook(mod: nn.Module, args: Any, kwargs: Any) -> None:
            inside = self.leaf_depth > 0
            versions: dict[int, int] = {}
            if leaf and not inside:
                self.busy = True
                try:
                    versions = {id(t): t._version for t in self.traced((args, kwargs))}
                finally:
                    self.busy = False
            if leaf:
                self.leaf_depth += 1
            self.frames.append((name, leaf, inside, versions))

        return hook

    def post_hook(self, name: str, leaf: bool) -> Any:
        def hook(mod: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            fname, _, inside, versions = self.frames.pop()
            if leaf:
                self.leaf_depth -= 1
            if not leaf or inside:
                return
            self.busy = True
            try:
                ins = [
                    t
                    for t in _tensors((args, kwargs))
                    if id(t) in versions or id(t) in self.producer
                ]
                new = self.new_outputs(ins, versions, out)
                params = [q for q in mod.parameters(recurse=False) if id(q) not in self.seen_params]
                if not new and not params:
                    return  # a pass-through (nn.Identity): no tensor of its own
                self.seen_params.update(id(q) for q in params)
                self.add_op(
                    self.op_name(fname), type(mod).__name__, _is_gemm(mod), fname, ins, new, params
                )
            finally:
                self.busy = False

        return hook

    # tensor functions outside leaf modules
    def function(
        self, func: Any, ins: list[torch.Tensor], versions: dict[int, int], out: Any
    ) -> None:
        self.busy = True
        try:
            new = self.new_outputs(ins, versions, out)
            if not new:
                return
            base = getattr(func, "__name__", type(func).__name__).strip("_") or "fn"
            scope = self.scope()
            name = self.op_name(f"{scope}.{base}" if scope else base)
            self.add_op(name, base, False, None, ins, new, [])
        finally:
            self.busy = False


class _FunctionMode(TorchFunctionMode):
    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        tr = self.tracer
        if tr.busy or tr.leaf_depth > 0:
            return func(*args, **kwargs)
        ins = tr.traced((args, kwargs))
        versions = {id(t): t._version for t in ins}
        out = func(*args, **kwargs)
        if ins:
            tr.function(func, ins, versions, out)
        return out


def _check_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return v


def tensor_groups(
    model: nn.Module, example_input: torch.Tensor, *, batch_size: int | None = None
) -> TensorGraph:
    """Trace one forward pass of ``model`` and return its operations, tensors and groups.

    Args:
        model: the model (float or already quantized; it is copied, never changed).
        example_input: one input batch (its values do not matter, its shape does).
        batch_size: the training batch size sizes are reported for (default: the example's
            first dimension).

    Returns:
        The :class:`TensorGraph` (groups in execution order: ``input`` first).

    Raises:
        TypeError: ``model`` is not a module or ``example_input`` not a tensor.
        ValueError: bad ``batch_size``, or the model has no Conv/Linear layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim == 0:
        raise TypeError(
            "example_input must be a batched tensor (first dimension: the batch), "
            f"got {type(example_input).__name__}"
        )
    ex_bs = int(example_input.shape[0])
    bs = ex_bs if batch_size is None else _check_int("batch_size", batch_size)
    net = copy.deepcopy(model)
    net.train()
    tracer = _Tracer(ex_bs, bs)
    handles = []
    for name, m in net.named_modules():
        leaf = _is_gemm(m) or not any(True for _ in m.children())
        handles.append(m.register_forward_pre_hook(tracer.pre_hook(name, leaf), with_kwargs=True))
        handles.append(m.register_forward_hook(tracer.post_hook(name, leaf), with_kwargs=True))
    x = example_input.detach().clone()
    tracer.add_op(INPUT, "Input", False, None, [], [x], [])
    try:
        with torch.enable_grad(), _FunctionMode(tracer):
            net(x)
    finally:
        for h in handles:
            h.remove()
    return _build_graph(tracer)


def _build_graph(tr: _Tracer) -> TensorGraph:
    raw = tr.ops
    if not any(o["gemm"] for o in raw):
        raise ValueError("the model has no Conv/Linear layer: nothing to assign precisions to")
    group_of: list[int] = []
    group_names = [INPUT]
    for o in raw:
        if o["gemm"]:
            group_names.append(o["name"])
        group_of.append(len(group_names) - 1)
    ops = tuple(
        Op(o["index"], o["name"], o["type"], o["gemm"], o["module"], group_of[i], o["preds"])
        for i, o in enumerate(raw)
    )
    tensors: list[TensorInfo] = []
    for op, o in zip(ops, raw, strict=True):
        for kind in KINDS:
            size = o["sizes"][kind]
            if size == 0:
                continue
            if kind in ("Y", "GY"):
                group: int | None = op.group
                req = frozenset({op.group})
            elif op.preds:
                group = ops[op.preds[0]].group
                req = frozenset(ops[p].group for p in op.preds)
            else:
                group, req = None, frozenset()
            tensors.append(TensorInfo(f"{op.name}.{kind}", op.name, kind, size, group, req))
    groups = []
    for gi, gname in enumerate(group_names):
        members = tuple(t.name for t in tensors if t.group == gi)
        size = sum(t.size for t in tensors if t.group == gi and t.kind != "GP")
        groups.append(Group(gi, gname, tuple(o.name for o in ops if o.group == gi), members, size))
    return TensorGraph(ops, tuple(tensors), tuple(groups), tr.batch_size, tr.example_bs)


__all__ = [
    "GEMM_TYPES",
    "INPUT",
    "KINDS",
    "Group",
    "Op",
    "TensorGraph",
    "TensorInfo",
    "tensor_groups",
]
