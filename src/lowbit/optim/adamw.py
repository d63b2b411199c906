"""AdamW whose weights and moments are stored in low-precision formats."""

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


class LowPrecisionAdamW(LowPrecisionOptimizer):
    """AdamW (decoupled weight decay) with weights and moments on low-precision grids.

    One step, for a parameter with gradient ``g`` at step ``t`` (1 for the first), computed in
    fp32 (fp64 for fp64 parameters) with the same operations, in the same order, as
    ``torch.optim.AdamW(foreach=False)``::

        w  = w * (1 - lr * weight_decay)
        m  = lerp(m, g, 1 - beta1)                 # m + (1 - beta1) * (g - m)
        v  = v * beta2 + (1 - beta2) * g * g
        w  = w - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    then ``w`` is rounded once to ``weight_fmt`` with ``update_mode`` and ``m``, ``v`` once to
    ``state_fmt`` with ``state_mode``. The update uses the fp32 moments of this step; only what
    is stored is rounded (as fused low-precision optimizer kernels do). With every format
    ``None`` the result equals ``torch.optim.AdamW(foreach=False)`` bit for bit.

    With ``master_weights=True`` the fp32 weight ``w`` is kept in ``state["master"]`` and the
    parameter holds ``round(w, weight_fmt, update_mode)``; without it the rounded value is the
    only copy, so an update smaller than half a spacing of ``weight_fmt`` is lost under RNE
    (the weights stall) and kept in expectation under SR.

    The second moment in a narrow ``state_fmt``: ``v`` is nonnegative and rounding keeps it
    nonnegative in every mode, but

    1. formats with a narrow exponent range lose it: in fp16, ``(1 - beta2) * g**2`` rounds
       to 0 for ``|g|`` below about ``5.5e-3`` (where it falls under half of fp16's smallest
       subnormal ``2**-24``), after which ``m / (sqrt(v) + eps)`` blows up; bf16 has fp32's
       exponent range and loses ``v`` only where fp32 nearly does (``g**2`` below ``1e-38``);
    2. under RNE the running average stalls: ``v * beta2 + (1 - beta2) * g**2`` rounds back
       to ``v`` once the relative change ``(1 - beta2) * (g**2 / v - 1)`` is below half a
       spacing (``2**-9`` to ``2**-8`` of ``v`` in bf16), so with ``beta2 = 0.999`` and a
       steady gradient ``v`` freezes between ``g**2 / 5`` and ``g**2 / 3`` instead of
       reaching ``g**2`` (the steps come out about twice too large).

    This class stores ``v`` as it is (no rescaling) and leaves the remedy to the caller:
    ``state_mode="sr"`` makes the stored average unbiased, ``state_fmt=None`` keeps fp32
    moments.

    Args:
        params: parameters or param groups (groups may override every keyword below).
        lr: learning rate (>= 0).
        betas: ``(beta1, beta2)``, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: decoupled weight decay (>= 0).
        weight_fmt: format of the parameter values (``None``: keep the parameter dtype).
        state_fmt: format of ``m`` and ``v`` (``None``: fp32).
        update_mode: rounding of the new weight (``"rne"``, ``"sr"``, any lowbit mode).
        state_mode: rounding of the stored moments.
        master_weights: keep an fp32 master copy of each weight.
        seed: seed of the counter-based stochastic rounding (see :mod:`lowbit.optim._base`).

    Raises:
        ValueError: a hyper-parameter out of range, an unknown format or mode.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        weight_fmt: Any = "bf16",
        state_fmt: Any = "bf16",
        update_mode: str = "rne",
        state_mode: str = "rne",
        master_weights: bool = False,
        seed: int = 0,
    ) -> None:
        check_hyper("lr", lr, 0.0)
        check_hyper("eps", eps, 0.0)
        check_hyper("weight_decay", weight_decay, 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        check_hyper("betas[0]", betas[0], 0.0, 1.0, hi_open=True)
        check_hyper("betas[1]", betas[1], 0.0, 1.0, hi_open=True)
        check_fmt(weight_fmt, "weight_fmt")
        check_fmt(state_fmt, "state_fmt")
        check_mode(update_mode, "update_mode")
        check_mode(state_mode, "state_mode")
        check_seed(seed)
        if not isinstance(master_weights, bool):
            raise ValueError(f"master_weights must be a bool, got {master_weights!r}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            weight_fmt=weight_fmt,
            state_fmt=state_fmt,
            update_mode=update_mode,
            state_mode=state_mode,
            master_weights=master_weights,
            seed=seed,
        )
        super().__init__(params, defaults)

    def _update(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], offset: int
    ) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        w = self._weight(p, group, state)
        g = p.grad.to(w.dtype)
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(w)
            state["exp_avg_sq"] = torch.zeros_like(w)
        t = state["step"]
        if wd != 0:
            w.mul_(1 - lr * wd)
        m = state["exp_avg"].lerp(g, 1 - beta1)
        v = state["exp_avg_sq"].mul(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr / (1 - beta1**t)
        denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)
        w.addcdiv_(m, denom, value=-step_size)
        self._store_state(state, "exp_avg", m, group, offset)
        self._store_state(state, "exp_avg_sq", v, group, offset)
        self._store_weight(p, w, group, state, offset)


__all__ = ["LowPrecisionAdamW"]
