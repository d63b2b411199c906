"""Shared machinery of the low-precision optimizers: option checks, rounding, SR counters.

Storage model (emulated): every tensor the optimizer keeps (the parameter, the moments, the
optional master copy) is held in a float32 (float64 for float64 parameters) container whose
values lie on the grid of its lowbit format. One step reads those values, computes the new
values in the container dtype, and rounds each result once to its format.

Stochastic rounding is counter based: the ``i``-th element of the parameter at position
``param_offset`` (its first element's index in the flat concatenation of all parameters, in
``param_groups`` order) at optimizer step ``k`` (0 for the first step) uses counter
``k * numel_total + param_offset + i`` of its seed. Every (step, element) pair therefore gets
its own draw, and a run is reproducible from ``seed`` alone. The weights use ``seed`` itself
(so ``lb.round(w, fmt, "sr", seed=seed, offset=k * numel_total + param_offset)`` reproduces
an update); each moment uses its own stream derived from ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lowbit.formats import BlockFormat, get_format
from lowbit.kernels.randbits import seed_keys
from lowbit.rounding import RoundMode
from lowbit.rounding import round as lb_round
from lowbit.rounding.modes import as_mode

# Stream numbers of the optimizer states (the weights use the seed itself).
STREAMS = {"exp_avg": 1, "exp_avg_sq": 2, "momentum_buffer": 3}

_FMT_KEYS = ("weight_fmt", "state_fmt")
_MODE_KEYS = ("update_mode", "state_mode")


def check_fmt(fmt: Any, name: str) -> Any:
    """Validate a storage format: ``None`` (keep the container dtype) or an element format."""
    if fmt is None:
        return None
    try:
        f = get_format(fmt)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{name}={fmt!r} is not a lowbit format ({e}); accepted: None "
            "(fp32) or an element format name such as 'bf16', 'fp16', 'e4m3'"
        ) from None
    if isinstance(f, BlockFormat):
        raise ValueError(
            f"{name}={fmt!r} is a block format; accepted: None or an element "
            "format ('bf16', 'fp16', 'e4m3', ...)"
        )
    return fmt


def check_mode(mode: Any, name: str) -> RoundMode:
    """Validate a rounding mode name (any :class:`~lowbit.RoundMode`)."""
    try:
        return as_mode(mode)
    except (ValueError, TypeError):
        accepted = ", ".join(m.value for m in RoundMode)
        raise ValueError(f"{name}={mode!r} is not a rounding mode; accepted: {accepted}") from None


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return seed


def stream_seed(seed: int, stream: int) -> int:
    """A seed for ``stream`` that is independent of ``seed``'s own draws."""
    k0, k1 = seed_keys(seed, stream)
    return ((k0 << 32) | k1) & ((1 << 63) - 1)


def compute_dtype(p: torch.Tensor) -> torch.dtype:
    """fp32 arithmetic for fp32 and narrower parameters, fp64 for fp64 ones."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def round_to(x: torch.Tensor, fmt: Any, mode: RoundMode, seed: int, offset: int) -> torch.Tensor:
    """``x`` rounded to ``fmt`` (``None``: returned unchanged)."""
    if fmt is None:
        return x
    return lb_round(x.contiguous(), fmt, mode, seed=seed, offset=offset)


class LowPrecisionOptimizer(torch.optim.Optimizer):
    """Base class: validates the storage options and keeps the parameters on their grid.

    Subclasses implement :meth:`_update` for one parameter. The storage options live in each
    param group (``weight_fmt``, ``state_fmt``, ``update_mode``, ``state_mode``,
    ``master_weights``, ``seed``), so a group may override them (e.g. ``weight_fmt=None``
    for normalisation layers).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)

    # ---- groups ------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for k in _FMT_KEYS:
            if k in param_group:
                check_fmt(param_group[k], k)
        for k in _MODE_KEYS:
            if k in param_group:
                check_mode(param_group[k], k)
        if "seed" in param_group:
            check_seed(param_group["seed"])
        if "master_weights" in param_group and not isinstance(param_group["master_weights"], bool):
            raise ValueError(
                f"master_weights must be a bool, got {param_group['master_weights']!r}"
            )
        super().add_param_group(param_group)
        self._put_on_grid(self.param_groups[-1])

    @torch.no_grad()
    def _put_on_grid(self, group: dict[str, Any]) -> None:
        """Round the group's parameters to ``weight_fmt`` (RNE); keep fp32 masters first."""
        for p in group["params"]:
            cd = compute_dtype(p)
            if group["master_weights"] and "master" not in self.state[p]:
                self.state[p]["master"] = p.detach().to(cd, copy=True)
            if group["weight_fmt"] is not None:
                p.copy_(round_to(p.detach().to(cd), group["weight_fmt"], RoundMode.RNE, 0, 0))

    # ---- step --------------------------------------------------------------------------
    def _layout(self) -> tuple[dict[int, int], int]:
        """``id(param) -> param_offset`` and ``numel_total`` over all groups, in order."""
        offsets: dict[int, int] = {}
        total = 0
        for group in self.param_groups:
            for p in group["params"]:
                offsets[id(p)] = total
                total += p.numel()
        return offsets, total

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        offsets, total = self._layout()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                k = state.get("step", 0)
                state["step"] = k + 1
                self._update(p, group, state, k * total + offsets[id(p)])
        return loss

    def _update(
        self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any], offset: int
    ) -> None:
        raise NotImplementedError

    # ---- helpers for subclasses ---------------------------------------------------------
    @staticmethod
    def _weight(p: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        """A fresh copy of the current weight in the compute dtype (master when kept)."""
        if group["master_weights"]:
            return state["master"].clone()
        return p.detach().to(compute_dtype(p), copy=True)

    @staticmethod
    def _store_weight(
        p: torch.Tensor, w: torch.Tensor, group: dict[str, Any], state: dict[str, Any], offset: int
    ) -> None:
        if group["master_weights"]:
            state["master"] = w
        mode = as_mode(group["update_mode"])
        p.copy_(round_to(w, group["weight_fmt"], mode, group["seed"], offset))

    @staticmethod
    def _store_state(
        state: dict[str, Any], key: str, value: torch.Tensor, group: dict[str, Any], offset: int
    ) -> None:
        mode = as_mode(group["state_mode"])
        seed = stream_seed(group["seed"], STREAMS[key])
        state[key] = round_to(value, group["state_fmt"], mode, seed, offset)

    # ---- checkpoints -------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`; the states keep their saved dtype (torch would cast them
        to the parameter's dtype, which would round an fp32 master copy of a bf16 parameter).
        """
        saved = {k: dict(v) for k, v in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for idx, p in zip(saved_ids, params, strict=True):
            for key, value in saved.get(idx, {}).items():
                if torch.is_tensor(value):
                    self.state[p][key] = value.to(device=p.device, copy=True)


def check_hyper(
    name: str, value: Any, lo: float, hi: float | None = None, *, hi_open: bool = False
) -> float:
    """A float hyper-parameter in ``[lo, hi]`` (``[lo, hi)`` when ``hi_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = not v >= lo or (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        rng = f"[{lo}, {hi})" if hi_open else (f"[{lo}, {hi}]" if hi is not None else f">= {lo}")
        raise ValueError(f"{name}={value!r} is out of range; accepted: {rng}")
    return v


__all__ = ["LowPrecisionOptimizer", "check_fmt", "check_mode", "round_to", "stream_seed"]
