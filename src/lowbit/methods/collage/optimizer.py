"""``CollageAdamW``: AdamW in bf16 with multi-component-float weights (Collage), and baselines.

Variants (``variant=``), from the paper's options (Yu et al., ICML 2024) and the authors'
``adamw_collage_single_tensor.py``:

=================  ==========  ==========================================  =================
variant            parameters  optimizer state                             bytes / parameter
=================  ==========  ==========================================  =================
``"bf16"``         bf16        m, v in bf16 (pure bf16 AdamW, option A)    8 = 2+2+2+2
``"light"``        bf16        m, v in bf16; residual θ_r (bf16) for θ     10 = 8 + 2
``"plus"``         bf16        as light, and residual v_r (bf16) for v     12 = 8 + 2 + 2
``"fp32_master"``  bf16        fp32 master weights, m, v (mixed precision) 16 = 2+2+4+4+4
``"fp32"``         fp32        fp32 m, v (``torch.optim.AdamW``)           16 = 4+4+4+4
=================  ==========  ==========================================  =================

(bytes count the parameter, its gradient and every optimizer tensor.)

bf16 variants (``bf16``, ``light``, ``plus``): every step is a torch op on bf16 tensors that
rounds its result to bf16 once (see :mod:`lowbit.methods.collage.mcf`; the fused ``lerp`` and
``addcmul`` evaluate their small expression in fp32 inside the op, as the authors' GPU kernels
do), with Python-float scalars, in the authors' order::

    m1 = lerp(m1, g, 1 - beta1)
    v  = v * beta2 + (1 - beta2) * g * g          # bf16 / light; v * 0.999 rounds back to v
    (v, v_r) = MultMC(v, v_r, bf16(beta2), bf16(beta2 - bf16(beta2)))       # plus
    (v, v_r) = Grow(v, v_r, (1 - beta2) * g * g)                            # plus
    u  = -lr / (1 - beta1**t) * m1 / (sqrt(v) / sqrt(1 - beta2**t) + eps) - lr * wd * θ
    θ  = θ + u                                    # bf16: updates below ulp(θ)/2 are lost
    (θ, θ_r) = Grow(θ, θ_r, u)                    # light / plus

The weight decay is part of the raw update ``u`` (the authors' "compact" style), so it goes
through the MCF as well; a separate ``θ *= 1 - lr*wd`` in bf16 would be rounded away.

fp32 variants (``fp32_master``, ``fp32``) run ``torch.optim.AdamW``'s single-tensor step on
fp32 tensors, op for op (``fp32`` equals ``torch.optim.AdamW(foreach=False)`` bit for bit);
``fp32_master`` then copies the master weight into the bf16 parameter (round to nearest).

Metrics (``track_metrics=True``, the default; ``last_metrics`` after each step): the raw
update ``u`` the optimizer wanted and the effective update ``e`` realised in storage
(``θ_new - θ_old``, with θ the stored value: ``m + r`` of the MCF for light/plus, the fp32
master for fp32_master), both in fp64 over all parameters:

* ``edq = <e, u> / ||u||`` (effective descent quality: the length of ``e`` along ``u``),
* ``edq_normalised = <e, u> / ||u||²`` (1 = lossless, 0 = every update lost),
* ``imprecision``: fraction of elements whose update was completely lost (``u != 0`` and the
  stored value unchanged),
* ``weight_unchanged``: fraction of elements whose model-visible weight (the bf16 parameter,
  ``m`` for an MCF) did not change this step (the authors' code reports this one as
  "imprecision" for Collage; an MCF moves ``m`` only when ``r`` has grown to an ulp).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from lowbit.methods.collage.mcf import grow, mult_mc, split_scalar

VARIANTS: tuple[str, ...] = ("bf16", "light", "plus", "fp32_master", "fp32")

# Bytes per parameter: parameter + gradient + optimizer tensors (see the module docstring).
BYTES_PER_PARAM: dict[str, int] = {
    "bf16": 2 + 2 + 2 + 2,
    "light": 2 + 2 + 2 + 2 + 2,
    "plus": 2 + 2 + 2 + 2 + 2 + 2,
    "fp32_master": 2 + 2 + 4 + 4 + 4,
    "fp32": 4 + 4 + 4 + 4,
}

_BF16_VARIANTS = ("bf16", "light", "plus")


def check_variant(variant: Any) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else ValueError listing them."""
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown; accepted: {', '.join(VARIANTS)}")
    return variant


def param_dtype(variant: str) -> torch.dtype:
    """The dtype the model's parameters must have for ``variant`` (bf16, or fp32 for
    ``"fp32"``): cast the model with ``model.to(param_dtype(variant))`` before building the
    optimizer."""
    return torch.float32 if check_variant(variant) == "fp32" else torch.bfloat16


def bytes_per_param(variant: str) -> int:
    """Bytes of storage per parameter of ``variant``: the parameter, its gradient and the
    optimizer state (8 bf16, 10 light, 12 plus, 16 fp32_master, 16 fp32)."""
    return BYTES_PER_PARAM[check_variant(variant)]


@dataclass(frozen=True)
class StepMetrics:
    """Update-quality metrics of one optimizer step over all parameters with a gradient."""

    step: int
    edq: float
    edq_normalised: float
    imprecision: float
    weight_unchanged: float
    raw_norm: float
    effective_norm: float
    numel: int


def _check_number(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not v >= lo or (hi is not None and not v < hi):
        rng = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value!r} is out of range; accepted: {rng}")
    return v


class CollageAdamW(torch.optim.Optimizer):
    """AdamW with bf16 multi-component-float weights (Collage-light/plus) or a baseline.

    Args:
        params: parameters or param groups (groups may override lr, betas, eps,
            weight_decay). Their dtype must be :func:`param_dtype` of ``variant``.
        lr: learning rate (>= 0).
        betas: ``(beta1, beta2)``, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: decoupled weight decay (>= 0).
        variant: ``"light"``, ``"plus"`` (Collage), or a baseline ``"bf16"``,
            ``"fp32_master"``, ``"fp32"`` (see the module docstring).
        track_metrics: compute :class:`StepMetrics` each step (``last_metrics``); costs a
            few fp64 passes over the parameters.

    Raises:
        ValueError: an unknown variant, a hyper-parameter out of range, a parameter whose
            dtype does not fit the variant.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        variant: str = "light",
        track_metrics: bool = True,
    ) -> None:
        self.variant = check_variant(variant)
        if not isinstance(track_metrics, bool):
            raise ValueError(f"track_metrics must be a bool, got {track_metrics!r}")
        self.track_metrics = track_metrics
        self.last_metrics: StepMetrics | None = None
        self._n_steps = 0
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @property
    def bytes_per_param(self) -> int:
        """Bytes per parameter of this optimizer's variant (see :func:`bytes_per_param`)."""
        return BYTES_PER_PARAM[self.variant]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "variant" in param_group:
            raise ValueError("variant is an optimizer-wide option; it cannot be set per group")
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        _check_number("lr", g["lr"], 0.0)
        _check_number("eps", g["eps"], 0.0)
        _check_number("weight_decay", g["weight_decay"], 0.0)
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_number("betas[0]", betas[0], 0.0, 1.0)
        _check_number("betas[1]", betas[1], 0.0, 1.0)
        g["betas"] = (float(betas[0]), float(betas[1]))
        want = param_dtype(self.variant)
        for p in g["params"]:
            if p.dtype != want:
                raise ValueError(
                    f"variant {self.variant!r} needs {want} parameters, got one "
                    f"of dtype {p.dtype} and shape {tuple(p.shape)}; cast the "
                    f"model with model.to(param_dtype({self.variant!r}))"
                )

    # ---- state -------------------------------------------------------------------------
    def _init_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        state["step"] = 0
        sdt = torch.bfloat16 if self.variant in _BF16_VARIANTS else torch.float32
        state["exp_avg"] = torch.zeros_like(p, dtype=sdt, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, dtype=sdt, memory_format=torch.preserve_format)
        if self.variant in ("light", "plus"):
            state["param_residual"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.variant == "plus":
            state["exp_avg_sq_residual"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.variant == "fp32_master":
            state["master"] = p.detach().to(torch.float32, copy=True)

    def state_bytes(self) -> int:
        """Bytes actually held: parameters, their gradients (counted at the parameter's size
        whether or not they exist yet) and every tensor of the optimizer state."""
        total = 0
        for group in self.param_groups:
            for p in group["params"]:
                total += 2 * p.numel() * p.element_size()
                for v in self.state.get(p, {}).values():
                    if torch.is_tensor(v):
                        total += v.numel() * v.element_size()
        return total

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` keeping every state tensor's saved dtype (torch would cast
        them to the parameter's dtype, rounding fp32 masters and moments of bf16 weights)."""
        saved = {k: dict(v) for k, v in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for idx, p in zip(saved_ids, params, strict=True):
            for key, value in saved.get(idx, {}).items():
                if torch.is_tensor(value):
                    self.state[p][key] = value.to(device=p.device, copy=True)

    # ---- step --------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient; sets ``last_metrics``.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        acc = [0.0, 0.0, 0.0, 0, 0, 0] if self.track_metrics else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("CollageAdamW does not support sparse gradients")
                state = self.state[p]
                if "step" not in state:
                    self._init_state(p, state)
                state["step"] += 1
                if self.variant in _BF16_VARIANTS:
                    self._step_bf16(p, group, state, acc)
                else:
                    self._step_fp32(p, group, state, acc)
        self._n_steps += 1
        if acc is not None:
            ip, uu, ee, lost, unchanged, n = acc
            self.last_metrics = StepMetrics(
                step=self._n_steps,
                edq=ip / math.sqrt(uu) if uu > 0 else float("nan"),
                edq_normalised=ip / uu if uu > 0 else float("nan"),
                imprecision=lost / n if n else float("nan"),
                weight_unchanged=unchanged / n if n else float("nan"),
                raw_norm=math.sqrt(uu),
                effective_norm=math.sqrt(ee),
                numel=n,
            )
        return loss

    @staticmethod
    def _accumulate(
        acc: list[Any], u: torch.Tensor, e: torch.Tensor, visible_unchanged: torch.Tensor
    ) -> None:
        """Add one tensor's fp64 update ``u``, effective update ``e`` to the running sums."""
        acc[0] += float((e * u).sum())
        acc[1] += float((u * u).sum())
        acc[2] += float((e * e).sum())
        acc[3] += int(((e == 0) & (u != 0)).sum())
        acc[4] += int(visible_unchanged.sum())
        acc[5] += u.numel()

    def _step_bf16(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], acc: list[Any] | None
    ) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        t = state["step"]
        g = p.grad
        if g.dtype != torch.bfloat16:
            raise ValueError(f"variant {self.variant!r} needs bf16 gradients, got {g.dtype}")
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        if self.variant == "plus":
            b2_hi, b2_lo = split_scalar(beta2)
            vr = state["exp_avg_sq_residual"]
            v, vr2 = mult_mc(exp_avg_sq, vr, b2_hi, b2_lo)
            v, vr2 = grow(v, vr2, torch.addcmul(torch.zeros_like(g), g, g, value=1 - beta2))
            exp_avg_sq.copy_(v)
            vr.copy_(vr2)
        else:
            exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        u = -step_size * exp_avg / denom
        if wd != 0:
            u = u - lr * wd * p
        if self.variant == "bf16":
            if acc is not None:
                old = p.double()
            p.add_(u)
            if acc is not None:
                e = p.double() - old
                self._accumulate(acc, u.double(), e, e == 0)
            return
        r = state["param_residual"]
        if acc is not None:
            old_m = p.clone()
            old = p.double() + r.double()
        m2, r2 = grow(p, r, u)
        p.copy_(m2)
        r.copy_(r2)
        if acc is not None:
            e = (p.double() + r.double()) - old
            self._accumulate(acc, u.double(), e, p == old_m)

    def _step_fp32(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], acc: list[Any] | None
    ) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        t = state["step"]
        w = state["master"] if self.variant == "fp32_master" else p
        g = p.grad if p.grad.dtype == torch.float32 else p.grad.float()
        if acc is not None:
            old = w.double()
            old_visible = p.clone()
        # torch.optim.adam._single_tensor_adam with decoupled weight decay, op for op
        if wd != 0:
            w.mul_(1 - lr * wd)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        w.addcdiv_(exp_avg, denom, value=-step_size)
        if self.variant == "fp32_master":
            p.copy_(w)
        if acc is not None:
            u = (-step_size) * exp_avg.double() / denom.double()
            if wd != 0:
                u = u - (lr * wd) * old
            e = w.double() - old
            self._accumulate(acc, u, e, p == old_visible)


__all__ = [
    "BYTES_PER_PARAM",
    "VARIANTS",
    "CollageAdamW",
    "StepMetrics",
    "bytes_per_param",
    "check_variant",
    "param_dtype",
]
