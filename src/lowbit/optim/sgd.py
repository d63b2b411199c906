"""SGD (with momentum) whose weights and momentum buffer are stored in low-precision formats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lowbit.optim._base import (
    LowPrecisionOptimizer,
    check_fmt,
    check_hyper,
    check_mode,
    check_seed,
)


class LowPrecisionSGD(LowPrecisionOptimizer):
    """SGD with weights and momentum buffer on low-precision grids.

    One step, computed in fp32 (fp64 for fp64 parameters) with the operations of
    ``torch.optim.SGD(foreach=False)``::

        d   = g + weight_decay * w
        buf = d                                  (first step)
        buf = momentum * buf + (1 - dampening) * d
        d   = d + momentum * buf   if nesterov else buf
        w   = w - lr * d

    then ``w`` is rounded once to ``weight_fmt`` with ``update_mode`` and ``buf`` once to
    ``state_fmt`` with ``state_mode`` (the update uses this step's fp32 ``buf``). With every
    format ``None`` the result equals ``torch.optim.SGD(foreach=False)`` bit for bit. See
    :class:`~lowbit.optim.LowPrecisionAdamW` for ``master_weights`` and the seeding of SR.

    Args:
        params: parameters or param groups (groups may override every keyword below).
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        dampening: dampening of the momentum (>= 0).
        weight_fmt: format of the parameter values (``None``: keep the parameter dtype).
        state_fmt: format of the momentum buffer (``None``: fp32).
        update_mode: rounding of the new weight.
        state_mode: rounding of the stored momentum buffer.
        master_weights: keep an fp32 master copy of each weight.
        seed: seed of the counter-based stochastic rounding.

    Raises:
        ValueError: a hyper-parameter out of range, an unknown format or mode.
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
        weight_fmt: Any = "bf16",
        state_fmt: Any = "bf16",
        update_mode: str = "rne",
        state_mode: str = "rne",
        master_weights: bool = False,
        seed: int = 0,
    ) -> None:
        check_hyper("lr", lr, 0.0)
        check_hyper("momentum", momentum, 0.0)
        check_hyper("weight_decay", weight_decay, 0.0)
        check_hyper("dampening", dampening, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"nesterov=True needs momentum > 0 and dampening == 0, got "
                f"momentum={momentum!r}, dampening={dampening!r}"
            )
        check_fmt(weight_fmt, "weight_fmt")
        check_fmt(state_fmt, "state_fmt")
        check_mode(update_mode, "update_mode")
        check_mode(state_mode, "state_mode")
        check_seed(seed)
        if not isinstance(master_weights, bool):
            raise ValueError(f"master_weights must be a bool, got {master_weights!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=bool(nesterov),
            dampening=dampening,
            weight_fmt=weight_fmt,
            state_fmt=state_fmt,
            update_mode=update_mode,
            state_mode=state_mode,
            master_weights=master_weights,
            seed=seed,
        )
        super().__init__(params, defaults)

    def _grad(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """The gradient the update uses; subclasses may scale or round it first."""
        assert p.grad is not None
        return p.grad

    def _update(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], offset: int
    ) -> None:
        lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
        w = self._weight(p, group, state)
        d = self._grad(p, group).to(w.dtype)
        if wd != 0:
            d = d.add(w, alpha=wd)
        if mom != 0:
            if "momentum_buffer" not in state:
                buf = d.clone()
            else:
                buf = state["momentum_buffer"].mul(mom).add_(d, alpha=1 - group["dampening"])
            self._store_state(state, "momentum_buffer", buf, group, offset)
            d = d.add(buf, alpha=mom) if group["nesterov"] else buf
        w.add_(d, alpha=-lr)
        self._store_weight(p, w, group, state, offset)


__all__ = ["LowPrecisionSGD"]
