"""PositNN's SGD: weight gradients divided by the batch in the gradient posit, weights and
momentum stored in the update (``Optimizer``) posit; and one training step.

PositNN's layers form the weight gradient of the whole batch in the quire, round it to the
``Gradient`` posit, divide it by the batch size (rounded again) and add it to the gradient
held in the ``Optimizer`` posit; its SGD then updates momentum and weights with fused
operations, one rounding each. :class:`PositSGD` does the same on top of
:class:`lowbit.optim.LowPrecisionSGD`: ``g = R_grad(p.grad / grad_divisor)`` (``p.grad`` is the
layer's already rounded batch-sum gradient), then the SGD update in float32 (float64 for
float64 parameters) with one rounding of the momentum and of the weight to their format.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lowbit.optim import LowPrecisionSGD
from lowbit.optim._base import check_fmt, check_hyper, round_to
from lowbit.rounding import RoundMode


class PositSGD(LowPrecisionSGD):
    """:class:`~lowbit.optim.LowPrecisionSGD` that first divides and rounds the gradient.

    Args:
        params: parameters or param groups.
        lr, momentum, weight_decay, nesterov, dampening: as ``LowPrecisionSGD``.
        weight_fmt: format of the stored weights (PositNN's ``Optimizer`` posit; None: fp32).
        state_fmt: format of the momentum buffer.
        grad_fmt: format ``p.grad / grad_divisor`` is rounded to (None: not rounded).
        grad_divisor: the batch size when the loss is a sum over the batch (> 0); param
            groups may override it, :func:`train_step` sets it per batch.
        seed: as ``LowPrecisionSGD`` (the posit roundings here are RNE).

    Raises:
        ValueError: a bad format, divisor or hyper-parameter.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        dampening: float = 0.0,
        weight_fmt: Any = None,
        state_fmt: Any = None,
        grad_fmt: Any = None,
        grad_divisor: float = 1.0,
        seed: int = 0,
    ) -> None:
        check_fmt(grad_fmt, "grad_fmt")
        check_hyper("grad_divisor", grad_divisor, 0.0)
        if grad_divisor <= 0:
            raise ValueError(f"grad_divisor={grad_divisor!r} must be > 0")
        self._grad_defaults = dict(grad_fmt=grad_fmt, grad_divisor=float(grad_divisor))
        super().__init__(
            params,
            lr,
            momentum,
            weight_decay,
            nesterov,
            dampening=dampening,
            weight_fmt=weight_fmt,
            state_fmt=state_fmt,
            seed=seed,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for k, v in getattr(self, "_grad_defaults", {}).items():
            param_group.setdefault(k, v)
        if "grad_fmt" in param_group:
            check_fmt(param_group["grad_fmt"], "grad_fmt")
        if "grad_divisor" in param_group:
            dv = check_hyper("grad_divisor", param_group["grad_divisor"], 0.0)
            if dv <= 0:
                raise ValueError(f"grad_divisor={dv!r} must be > 0")
        super().add_param_group(param_group)

    def set_batch_size(self, n: int) -> None:
        """Divide the next step's gradients by ``n`` (every param group)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"batch size must be an int >= 1, got {n!r}")
        for g in self.param_groups:
            g["grad_divisor"] = float(n)

    def _grad(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        assert p.grad is not None
        g = p.grad.detach().to(torch.float64) / group["grad_divisor"]
        return round_to(g, group["grad_fmt"], RoundMode.RNE, 0, 0)


def train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: Any, loss_fn: Any
) -> tuple[float, int]:
    """One step: forward, loss, backward, update; returns (mean loss, correct predictions).

    When ``loss_fn`` sums over the batch (``reduction == "sum"``) and ``optimizer`` is a
    :class:`PositSGD`, the gradient divisor is set to this batch's size first.
    """
    optimizer.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    summed = getattr(loss_fn, "reduction", "mean") == "sum"
    if isinstance(optimizer, PositSGD):
        optimizer.set_batch_size(len(y) if summed else 1)
    optimizer.step()
    value = float(loss.detach()) / (len(y) if summed else 1)
    return value, int((out.detach().argmax(dim=1) == y).sum())


__all__ = ["PositSGD", "train_step"]
