"""Cross-entropy in a posit: PositNN's ``cross_entropy_loss<Loss>`` (forward and derivative).

Per sample, with ``R`` the rounding to the loss posit (RNE) and logits ``z``:

    m = max_k z_k,   d_k = R(z_k - m),   e_k = R(exp(d_k)),   s = R(Σ_k e_k)
    loss = -R(d_t - R(log s))                                  (t: the target class)
    dloss/dz_k = R(e_k / s)  (k ≠ t),   R((e_t - s) · R(1/s))  (k = t)

— the operations of PositNN's forward and its best-performing derivative ("fam": the
target entry is one fused add-multiply with the rounded reciprocal). Each ``R`` rounds the
float64 result of its operation (the exact value for the subtractions, products and sums of
these few-bit posits up to a float64 rounding before it); the sum ``s`` (PositNN's quire) is
``math.fsum``, correctly rounded to float64. The per-sample losses are summed with
``math.fsum`` too (PositNN keeps the loss value in float); the result is returned in the
logits' dtype. With ``fmt=None`` nothing is rounded: plain float64 softmax cross-entropy.

Scaling: ``reduction="sum"`` returns ``Σ_i loss_i`` and sends ``dloss/dz`` back unscaled, so
the error signal is ``softmax - onehot`` (entries of order one, where posits are most
precise) as in PositNN; the ``1/batch`` of the mean is applied to the weight gradients by
:class:`~lowbit.methods.posit_training.PositSGD`. ``reduction="mean"`` divides the value and
the gradient by the batch (the gradient rounded again after the division).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lowbit.rounding.api import round as lb_round

REDUCTIONS = ("sum", "mean")


def _rounder(fmt: str | None) -> Any:
    if fmt is None:
        return lambda t: t
    return lambda t: lb_round(t.contiguous(), fmt)


def _fsum_rows(e: torch.Tensor) -> torch.Tensor:
    """Row sums (keepdim) correctly rounded to float64 (``math.fsum``): the quire's sum."""
    return torch.tensor(
        [[math.fsum(row)] for row in e.tolist()], dtype=torch.float64, device=e.device
    )


class _PositCE(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, target: torch.Tensor, fmt: str | None, reduction: str
    ) -> torch.Tensor:
        r = _rounder(fmt)
        z = r(logits.detach().to(torch.float64))
        d = r(z - z.max(dim=1, keepdim=True).values)
        e = r(torch.exp(d))
        s = r(_fsum_rows(e))
        t = target.reshape(-1, 1)
        losses = -r(d.gather(1, t) - r(torch.log(s)))
        total = torch.tensor(math.fsum(losses.reshape(-1).tolist()), dtype=torch.float64)
        if reduction == "mean":
            total = total / logits.shape[0]
        ctx.save_for_backward(e, s, t)
        ctx.fmt = fmt
        ctx.reduction = reduction
        ctx.dtype = logits.dtype
        return total.to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        e, s, t = ctx.saved_tensors
        r = _rounder(ctx.fmt)
        g = r(e / s)
        den = r(1.0 / s)
        g_t = r((e.gather(1, t) - s) * den)
        g = g.scatter(1, t, g_t)
        scale = grad_out.to(torch.float64)
        if ctx.reduction == "mean":
            scale = scale / e.shape[0]
        if not bool(scale == 1):
            g = r(g * scale)
        return g.to(ctx.dtype), None, None, None


def posit_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, fmt: str | None, reduction: str = "sum"
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (batch, classes) and class indices, in the posit ``fmt``.

    Raises:
        ValueError: ``reduction`` is not ``"sum"`` or ``"mean"``, or bad shapes.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; accepted: {', '.join(REDUCTIONS)}")
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (batch, classes) and target (batch,), got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    return _PositCE.apply(logits, target.to(torch.int64), fmt, reduction)


def per_sample_losses(logits: torch.Tensor, target: torch.Tensor, fmt: str | None) -> torch.Tensor:
    """The rounded per-sample losses ``-R(d_t - R(log s))`` (float64), without autograd."""
    r = _rounder(fmt)
    z = r(logits.detach().to(torch.float64))
    d = r(z - z.max(dim=1, keepdim=True).values)
    s = r(_fsum_rows(r(torch.exp(d))))
    return -r(d.gather(1, target.reshape(-1, 1).to(torch.int64)) - r(torch.log(s))).reshape(-1)


class PositCrossEntropy(nn.Module):
    """``loss_fn(logits, target)``: :func:`posit_cross_entropy` with a fixed format.

    Args:
        fmt: the loss posit (a format name; None: float64, no rounding).
        reduction: ``"sum"`` (PositNN's scaling) or ``"mean"``.
    """

    def __init__(self, fmt: str | None, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}; accepted: {', '.join(REDUCTIONS)}")
        if fmt is not None:
            from lowbit.formats import get_element_format

            get_element_format(fmt)  # ValueError for unknown names
        self.fmt = fmt
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return posit_cross_entropy(logits, target, self.fmt, self.reduction)

    def extra_repr(self) -> str:
        return f"fmt={self.fmt!r}, reduction={self.reduction!r}"


__all__ = ["REDUCTIONS", "PositCrossEntropy", "per_sample_losses", "posit_cross_entropy"]
