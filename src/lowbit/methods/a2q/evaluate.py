"""Training and evaluation helpers: clamp after steps, integer inference, ℓ1 and sparsity reports.

The package takes models and loaders as arguments; it never imports ``lowbit.data`` or
``lowbit.models``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.arith.intgemm import OVERFLOW_MODES
from lowbit.methods.a2q.bounds import acc_bits_for_l1, l1_budget
from lowbit.methods.a2q.layers import A2QLayer, OverflowStats, a2q_layers


def clamp_(model: nn.Module) -> None:
    """Apply A2Q's constraint ``g <= s·T`` to the stored parameters of every A2Q layer.

    Call after every optimizer step (the forward pass applies it anyway; this keeps ``g`` from
    drifting far above the cap, where its gradient is zero)."""
    for _, m in a2q_layers(model):
        m.clamp_()


@dataclass
class IntegerReport:
    """Per-layer :class:`OverflowStats` of an :func:`integer_inference` block."""

    acc_bits: int | None
    overflow: str
    layers: dict[str, OverflowStats] = field(default_factory=dict)

    @property
    def total(self) -> OverflowStats:
        """All layers together."""
        t = OverflowStats()
        for st in self.layers.values():
            t.add(st)
        return t

    def to_dict(self) -> dict[str, Any]:
        return {
            "acc_bits": self.acc_bits,
            "overflow": self.overflow,
            "total": self.total.to_dict(),
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
        }


@contextlib.contextmanager
def integer_inference(
    model: nn.Module, acc_bits: int | None = None, overflow: str = "wrap"
) -> Iterator[IntegerReport]:
    """Run the A2Q/QAT layers of ``model`` as integer GEMMs into a ``acc_bits`` accumulator.

    Args:
        model: a model quantized with method ``"a2q"`` or ``"qat_int"``.
        acc_bits: accumulator width ``P`` (None: each A2Q layer's own target; required for
            ``qat_int`` layers, which have none).
        overflow: ``"wrap"`` (hardware), ``"saturate"`` or ``"raise"``.

    Yields:
        an :class:`IntegerReport` that fills in as the model runs (no gradients inside).
    """
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow={overflow!r}; accepted: {', '.join(OVERFLOW_MODES)}")
    layers = a2q_layers(model)
    if not layers:
        raise ValueError(
            "model has no A2Q/qat_int layers; quantize_ it with "
            "lowbit.methods.a2q.a2q(...) or qat_int(...) first"
        )
    report = IntegerReport(acc_bits, overflow)
    for name, m in layers:
        p = acc_bits if acc_bits is not None else m.a2q_args.acc_bits
        if p is None:
            raise ValueError(f"layer {name!r} (qat_int) has no accumulator target; pass acc_bits")
        m.int_acc = (int(p), overflow)
        m.overflow_stats = OverflowStats()
        report.layers[name] = m.overflow_stats
    try:
        with torch.no_grad():
            yield report
    finally:
        for _, m in layers:
            m.int_acc = None


@torch.no_grad()
def accuracy(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    acc_bits: int | None = None,
    integer: bool = False,
    overflow: str = "wrap",
) -> tuple[float, IntegerReport | None]:
    """Test accuracy in [0, 1]: fake-quantized float (``integer=False``) or integer inference
    with a ``acc_bits`` accumulator; returns the integer report too (None for float)."""
    was = model.training
    model.eval()
    correct = total = 0
    report = None
    try:
        ctx = (
            integer_inference(model, acc_bits, overflow)
            if integer
            else contextlib.nullcontext(None)
        )
        with ctx as report:
            for x, y in loader:
                pred = model(x).argmax(dim=1)
                correct += int((pred == y).sum())
                total += int(y.numel())
    finally:
        model.train(was)
    return (correct / total if total else float("nan")), report


def train(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    progress: bool = False,
) -> list[float]:
    """Short QAT with Adam and cross-entropy, :func:`clamp_` after every step.

    Returns the mean training loss of each epoch."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    for ep in range(epochs):
        it: Iterable[Any] = loader
        if progress:
            from tqdm import tqdm

            it = tqdm(loader, desc=f"epoch {ep + 1}/{epochs}", leave=False)
        tot, n = 0.0, 0
        for x, y in it:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            clamp_(model)
            tot += float(loss.detach()) * int(y.numel())
            n += int(y.numel())
        losses.append(tot / max(n, 1))
    return losses


@dataclass(frozen=True)
class LayerL1:
    """ℓ1 facts of one layer's integer weights.

    Attributes:
        name: layer name.
        k: dot-product length.
        max_l1: largest per-channel ``‖q‖₁``.
        budget: ``floor(T)`` of its target ``P`` (None for ``qat_int``).
        act_signed: input signedness used.
        min_acc_bits: smallest ``P`` that provably avoids overflow for these weights.
        sparsity: fraction of zero integer weights.
    """

    name: str
    k: int
    max_l1: int
    budget: int | None
    act_signed: bool
    min_acc_bits: int
    sparsity: float


def l1_report(model: nn.Module) -> list[LayerL1]:
    """One :class:`LayerL1` per A2Q/QAT layer."""
    out = []
    for name, m in a2q_layers(model):
        q = m.int_weight()
        l1 = int(q.abs().sum(dim=1).max()) if q.numel() else 0
        args = m.a2q_args
        signed = m.act_signed
        budget = None if args.acc_bits is None else l1_budget(args.acc_bits, args.act_bits, signed)
        out.append(
            LayerL1(
                name,
                int(q.shape[1]),
                l1,
                budget,
                signed,
                acc_bits_for_l1(l1, args.act_bits, signed),
                float((q == 0).double().mean()) if q.numel() else 0.0,
            )
        )
    return out


def sparsity(model: nn.Module) -> float:
    """Fraction of zero integer weights over every A2Q/QAT layer."""
    zeros = total = 0
    for _, m in a2q_layers(model):
        q = m.int_weight()
        zeros += int((q == 0).sum())
        total += q.numel()
    return zeros / total if total else 0.0


__all__ = [
    "A2QLayer",
    "IntegerReport",
    "LayerL1",
    "accuracy",
    "clamp_",
    "integer_inference",
    "l1_report",
    "sparsity",
    "train",
]
