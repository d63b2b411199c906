"""Static and dynamic loss scaling with overflow detection, for low-precision gradients.

A training step with loss scaling::

    scaler.scale(loss).backward()   # gradients of scale * loss
    scaler.step(optimizer)          # round grads to grad_fmt, check, unscale, step or skip
    scaler.update()                 # adjust the scale (dynamic mode)

Gradients are emulated in a low format by rounding the *scaled* gradients to ``grad_fmt``
(RNE, the format's own overflow rule: IEEE formats such as fp16 and e5m2 give inf, e4m3 gives
NaN). That rounding is where an overflow appears, as when the backward pass stores fp16
gradients; small gradients that the scale lifted above the format's underflow threshold
survive it. The check then looks for inf/NaN in every gradient; the gradients are unscaled
(multiplied by ``1/scale`` in their own dtype, exact for power-of-two scales) whether or not
an overflow was found, and ``step`` calls ``optimizer.step()`` only when none was.

The scale schedule is ``torch.amp.GradScaler``'s: an overflow multiplies the scale by
``backoff_factor`` and restarts the growth count; ``growth_interval`` consecutive steps
without overflow multiply it by ``growth_factor``. The scale is kept as a float32 value (the
products are rounded to float32, as torch's scale tensor is), and additionally clamped to
``[min_scale, max_scale]``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lowbit.formats import BlockFormat, get_format
from lowbit.rounding import round as lb_round


def _f32(x: float) -> float:
    return float(np.float32(x))


def _positive(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


class LossScaler:
    """Loss scaling for training with low-precision (fp16, fp8) gradients.

    Args:
        init_scale: initial scale (> 0, within ``[min_scale, max_scale]``); stored as float32.
        dynamic: adjust the scale (``False``: the scale never changes, overflowing steps are
            still skipped).
        growth_factor: factor applied after ``growth_interval`` clean steps (> 1).
        backoff_factor: factor applied after an overflow (in ``(0, 1)``).
        growth_interval: clean steps needed before growing (int >= 1).
        min_scale: lower bound of the dynamic scale (> 0).
        max_scale: upper bound of the dynamic scale (>= min_scale).
        grad_fmt: format the scaled gradients are rounded to before the check (``None``: no
            rounding, only existing inf/NaN are found), e.g. ``"fp16"`` or ``"e5m2"``.

    Raises:
        ValueError: an option out of range or an unknown format.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        *,
        dynamic: bool = True,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        min_scale: float = 1.0,
        max_scale: float = 2.0**24,
        grad_fmt: Any = None,
    ) -> None:
        self._configure(
            init_scale,
            dynamic,
            growth_factor,
            backoff_factor,
            growth_interval,
            min_scale,
            max_scale,
            grad_fmt,
        )
        self._growth_tracker = 0
        self._found_inf = False
        self._stage: dict[int, str] = {}  # id(optimizer) -> "unscaled" | "stepped"

    def _configure(
        self,
        init_scale: Any,
        dynamic: Any,
        growth_factor: Any,
        backoff_factor: Any,
        growth_interval: Any,
        min_scale: Any,
        max_scale: Any,
        grad_fmt: Any,
    ) -> None:
        if not isinstance(dynamic, bool):
            raise ValueError(f"dynamic must be a bool, got {dynamic!r}")
        scale = _positive("init_scale", init_scale)
        lo, hi = _positive("min_scale", min_scale), _positive("max_scale", max_scale)
        if hi < lo:
            raise ValueError(f"max_scale={max_scale!r} is below min_scale={min_scale!r}")
        if not lo <= scale <= hi:
            raise ValueError(
                f"init_scale={init_scale!r} is outside [min_scale, max_scale] = "
                f"[{min_scale!r}, {max_scale!r}]"
            )
        if not _positive("growth_factor", growth_factor) > 1:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor!r}")
        if not _positive("backoff_factor", backoff_factor) < 1:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor!r}")
        if (
            isinstance(growth_interval, bool)
            or not isinstance(growth_interval, int)
            or growth_interval < 1
        ):
            raise ValueError(f"growth_interval must be an int >= 1, got {growth_interval!r}")
        if grad_fmt is not None:
            try:
                f = get_format(grad_fmt)
            except (ValueError, TypeError) as e:
                raise ValueError(
                    f"grad_fmt={grad_fmt!r} is not a lowbit format ({e}); "
                    "accepted: None or an element format such as 'fp16', "
                    "'bf16', 'e5m2', 'e4m3'"
                ) from None
            if isinstance(f, BlockFormat):
                raise ValueError(
                    f"grad_fmt={grad_fmt!r} is a block format; accepted: None or "
                    "an element format ('fp16', 'e5m2', ...)"
                )
        self._scale = _f32(scale)
        self.dynamic = dynamic
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = growth_interval
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.grad_fmt = grad_fmt

    # ---- the scale -----------------------------------------------------------------------
    def scale(self, loss: Any) -> Any:
        """``loss * scale`` (a tensor, or a list/tuple of tensors)."""
        if isinstance(loss, torch.Tensor):
            return loss * self._scale
        if isinstance(loss, (list, tuple)):
            return type(loss)(self.scale(x) for x in loss)
        raise TypeError(
            f"scale() takes a tensor or a list/tuple of tensors, got {type(loss).__name__}"
        )

    @property
    def loss_scale(self) -> float:
        """The current scale (a float32 value)."""
        return self._scale

    def get_scale(self) -> float:
        """The current scale (as ``torch.amp.GradScaler.get_scale``)."""
        return self._scale

    @property
    def found_inf(self) -> bool:
        """Whether an inf/NaN gradient was found in this iteration (kept after
        :meth:`update` until the next :meth:`unscale_`)."""
        return self._found_inf

    # ---- one iteration -------------------------------------------------------------------
    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Round the gradients to ``grad_fmt``, look for inf/NaN, divide them by the scale.

        Raises:
            RuntimeError: called twice for ``optimizer`` in one iteration, or after ``step``.
        """
        stage = self._stage.get(id(optimizer))
        if stage == "unscaled":
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update()"
            )
        if stage == "stepped":
            raise RuntimeError("unscale_() is being called after step()")
        if not self._stage:
            self._found_inf = False  # first optimizer of a new iteration
        inv = _f32(1.0 / self._scale)
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("LossScaler does not support sparse gradients")
                if self.grad_fmt is not None:
                    g.copy_(lb_round(g.contiguous(), self.grad_fmt, "rne"))
                if not bool(torch.isfinite(g).all()):
                    self._found_inf = True
                g.mul_(inv)
        self._stage[id(optimizer)] = "unscaled"

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> bool:
        """Unscale (unless :meth:`unscale_` was called) and step unless an overflow was found.

        Returns:
            ``True`` when ``optimizer.step(*args, **kwargs)`` ran, ``False`` when it was
            skipped (parameters and optimizer state untouched).
        """
        stage = self._stage.get(id(optimizer))
        if stage == "stepped":
            raise RuntimeError("step() has already been called since the last update()")
        if stage is None:
            self.unscale_(optimizer)
        self._stage[id(optimizer)] = "stepped"
        if self._found_inf:
            return False
        optimizer.step(*args, **kwargs)
        return True

    def update(self) -> None:
        """End the iteration: adjust the scale (dynamic mode) from what was found.

        Raises:
            RuntimeError: no gradients were checked since the last update.
        """
        if not self._stage:
            raise RuntimeError(
                "update() needs unscale_() or step() first: no inf checks "
                "were recorded since the last update()"
            )
        self._stage = {}
        if not self.dynamic:
            return
        if self._found_inf:
            self._scale = max(_f32(self._scale * self.backoff_factor), self.min_scale)
            self._growth_tracker = 0
            return
        self._growth_tracker += 1
        if self._growth_tracker == self.growth_interval:
            grown = _f32(self._scale * self.growth_factor)
            if math.isfinite(grown):
                self._scale = min(grown, self.max_scale)
            self._growth_tracker = 0

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The scale, growth count and options (plain Python values)."""
        return {
            "scale": self._scale,
            "growth_tracker": self._growth_tracker,
            "dynamic": self.dynamic,
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
            "grad_fmt": self.grad_fmt
            if (self.grad_fmt is None or isinstance(self.grad_fmt, str))
            else self.grad_fmt.name,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the options are validated as in the constructor)."""
        missing = {"scale", "growth_tracker"} - set(state)
        if missing:
            raise ValueError(f"state dict lacks {sorted(missing)}")
        self._configure(
            state["scale"],
            state.get("dynamic", self.dynamic),
            state.get("growth_factor", self.growth_factor),
            state.get("backoff_factor", self.backoff_factor),
            state.get("growth_interval", self.growth_interval),
            state.get("min_scale", self.min_scale),
            state.get("max_scale", self.max_scale),
            state.get("grad_fmt", self.grad_fmt),
        )
        tracker = state["growth_tracker"]
        if isinstance(tracker, bool) or not isinstance(tracker, int) or tracker < 0:
            raise ValueError(f"growth_tracker must be an int >= 0, got {tracker!r}")
        self._growth_tracker = tracker
        self._stage = {}

    def __repr__(self) -> str:
        return (
            f"LossScaler(scale={self._scale!r}, dynamic={self.dynamic}, "
            f"growth_factor={self.growth_factor}, backoff_factor={self.backoff_factor}, "
            f"growth_interval={self.growth_interval}, grad_fmt={self.grad_fmt!r})"
        )


__all__ = ["LossScaler"]
