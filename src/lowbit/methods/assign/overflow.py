"""The overflow rule and the dynamic loss scaling of Lee, Sharma & Aiken.

Overflow rule: after every training step, for each low-precision ``P`` and ``Y`` tensor, the
fraction of its elements with ``|x| >= overflow_threshold(format)`` (31 for ``fp_4_3_4``);
a tensor whose fraction reaches ``threshold`` (1 %) is stored in high precision for the rest
of training. It keeps the all-8-bit assignment (r = 1) from diverging.

:class:`OverflowPromoter` measures the fractions with forward hooks on the quantized model's
GEMM layers, on the values *before* rounding (training-mode forwards only):

* ``P`` of a layer: its weight (the fp32 master copy the forward rounds);
* ``Y`` of a GEMM: its output, in a pre-hook of the layer's output quantizer;
* ``Y`` of the operation that feeds a GEMM (``X`` of that GEMM): the layer's input.

:meth:`OverflowPromoter.step` promotes, reconfigures the affected layers in place
(``QuantLayer.configure``; parameters and optimizer state are untouched) and updates
``model.lowbit_config``. Call it after every step: :meth:`OverflowPromoter.attach` registers
it as an optimizer step hook, or pass the promoter to :class:`LeeLossScaler`, which calls it
from ``update()`` (also after a step the scaler skipped).

:class:`LeeLossScaler` is :class:`lowbit.amp.LossScaler` with the paper's schedule (initial
scale 65536, ×2 after every epoch without overflow, ×0.5 on overflow). The repository rounds
gradients with inf on overflow, so the scaler sees an overflowing gradient; lowbit's
``fp_*`` formats have no inf and saturate, so the scaler instead flags a step whose activation
gradient ``dL/dy`` of some GEMM reaches the overflow threshold of its ``grad_act`` format, or
whose parameter gradient reaches the high format's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lowbit.amp import LossScaler
from lowbit.formats import FloatFormat, get_format
from lowbit.methods.assign.assignment import Assignment
from lowbit.methods.assign.formats import HIGH, overflow_threshold
from lowbit.nn.layers import QuantLayer


def _threshold(fmt_name: str) -> float:
    f = get_format(fmt_name)
    if not isinstance(f, FloatFormat):
        raise TypeError(f"format {fmt_name!r} is not a float format")
    return overflow_threshold(f)


def overflow_fraction(x: torch.Tensor, fmt: str | FloatFormat) -> float:
    """Fraction of the elements of ``x`` with ``|x| >= overflow_threshold(fmt)`` (NaN counts)."""
    thr = overflow_threshold(fmt)
    if x.numel() == 0:
        return 0.0
    a = x.detach().abs()
    return float(((a >= thr) | torch.isnan(a)).sum()) / a.numel()


def _check_quantized(model: nn.Module, assignment: Assignment) -> dict[str, QuantLayer]:
    layers: dict[str, QuantLayer] = {}
    for name in assignment.graph.gemm_modules():
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"the model has no module {name!r} of the assignment; was the "
                "assignment traced from this model?"
            ) from None
        if not isinstance(mod, QuantLayer):
            raise ValueError(
                f"layer {name!r} is not quantized; call assignment.apply(model) "
                "(lowbit.nn.quantize_(model, assignment.config)) first"
            )
        layers[name] = mod
    return layers


class OverflowPromoter:
    """Promote low-precision ``P``/``Y`` tensors that overflow, for the rest of training.

    Args:
        model: the model quantized with ``assignment.config``.
        assignment: the starting assignment (not changed; :attr:`assignment` is the current
            one).
        threshold: promote when the overflow fraction is ``>= threshold`` (in (0, 1]).

    Attributes:
        assignment: the current assignment (with the promotions so far).
        steps: training steps seen by :meth:`step`.
        fractions: the fractions measured since the last step (tensor name -> fraction).

    Raises:
        ValueError: bad threshold, or the model is not quantized with GEMM layers of the
            assignment.
    """

    def __init__(self, model: nn.Module, assignment: Assignment, threshold: float = 0.01) -> None:
        if not isinstance(assignment, Assignment):
            raise TypeError(f"assignment must be an Assignment, got {type(assignment).__name__}")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not (0.0 < float(threshold) <= 1.0)
        ):
            raise ValueError(f"threshold={threshold!r} must be a fraction in (0, 1]")
        self.model = model
        self.assignment = assignment
        self.threshold = float(threshold)
        self.steps = 0
        self.fractions: dict[str, float] = {}
        self._layers = _check_quantized(model, assignment)
        self._handles: dict[str, list[Any]] = {}
        self._step_handles: list[Any] = []
        g = assignment.graph
        self._p: dict[str, list[str]] = {}
        self._x: dict[str, list[str]] = {}
        self._y: dict[str, list[str]] = {}
        for name in self._layers:
            calls = [o for o in g.calls(name) if o.gemm]
            self._p[name] = [t for t in (f"{o.name}.P" for o in calls) if g.has_tensor(t)]
            self._y[name] = [t for t in (f"{o.name}.Y" for o in calls) if g.has_tensor(t)]
            self._x[name] = [
                t
                for t in dict.fromkeys(f"{g.ops[o.preds[0]].name}.Y" for o in calls if o.preds)
                if g.has_tensor(t)
            ]
            self._install(name)

    # ---- measuring ---------------------------------------------------------------------------
    def _record(self, tensors: list[str], x: torch.Tensor) -> None:
        low = [t for t in tensors if self.assignment.is_low(t)]
        if not low:
            return
        frac = overflow_fraction(x, self.assignment.formats[low[0]])
        for t in low:
            self.fractions[t] = max(self.fractions.get(t, 0.0), frac)

    def _install(self, name: str) -> None:
        for h in self._handles.pop(name, []):
            h.remove()
        layer = self._layers[name]
        assert isinstance(layer, nn.Module)

        def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
            if not mod.training:
                return
            w = getattr(mod, "weight", None)
            if isinstance(w, torch.Tensor):
                self._record(self._p[name], w)
            if args and isinstance(args[0], torch.Tensor):
                self._record(self._x[name], args[0])

        handles = [layer.register_forward_pre_hook(pre)]
        oq = getattr(layer, "output_quant", None)
        if isinstance(oq, nn.Module):

            def out_pre(q: nn.Module, args: tuple[Any, ...]) -> None:
                if layer.training and args and isinstance(args[0], torch.Tensor):
                    self._record(self._y[name], args[0])

            handles.append(oq.register_forward_pre_hook(out_pre))
        self._handles[name] = handles

    # ---- the rule ----------------------------------------------------------------------------
    def step(self) -> list[str]:
        """End a training step: promote the tensors whose fraction reached the threshold.

        Returns:
            The tensors promoted now (empty when none).
        """
        self.steps += 1
        hits = {
            t: f
            for t, f in self.fractions.items()
            if f >= self.threshold and self.assignment.is_low(t)
        }
        self.fractions = {}
        if not hits:
            return []
        old = self.assignment
        new = old.promoted(sorted(hits), step=self.steps, fractions=hits)
        cfg = new.config
        for name, layer in self._layers.items():
            if new.layer_formats(name) != old.layer_formats(name):
                layer.configure(cfg.for_layer(name), name)
                self._install(name)
        self.assignment = new
        if hasattr(self.model, "lowbit_config"):
            self.model.lowbit_config = cfg
        return sorted(hits)

    @property
    def promoted(self) -> list[str]:
        """Every tensor promoted so far, in order."""
        return [p.tensor for p in self.assignment.promotions]

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Run :meth:`step` after every ``optimizer.step()`` (returns the hook handle).

        A step skipped by a loss scaler never calls ``optimizer.step()``; with a loss scaler
        pass the promoter to :class:`LeeLossScaler` instead.
        """
        h = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())
        self._step_handles.append(h)
        return h

    def remove(self) -> None:
        """Remove every hook of this promoter (the layers keep their formats)."""
        for hs in self._handles.values():
            for h in hs:
                h.remove()
        self._handles = {}
        for h in self._step_handles:
            h.remove()
        self._step_handles = []

    def __repr__(self) -> str:
        return (
            f"OverflowPromoter(threshold={self.threshold}, steps={self.steps}, "
            f"promoted={self.promoted})"
        )


class LeeLossScaler(LossScaler):
    """Dynamic loss scaling as Lee et al.: 65536 initially, ×2 per epoch, ×0.5 on overflow.

    Args:
        steps_per_epoch: the growth interval (the repository grows once per epoch).
        model: the quantized model; when given, a GEMM output gradient ``dL/dy`` reaching the
            overflow threshold of the layer's ``grad_act`` format counts as an overflow (the
            repository's gradients become inf there; lowbit's ``fp_*`` formats saturate). The
            check sees ``dL/dy`` before the layer rounds it when the layer rounds its output
            (every layer of an :class:`Assignment`'s config does).
        promoter: an :class:`OverflowPromoter` whose :meth:`~OverflowPromoter.step` runs in
            every :meth:`update`.
        init_scale: initial scale.
        max_scale: upper bound of the scale (torch's GradScaler has none; 2^64 by default).
    """

    def __init__(
        self,
        steps_per_epoch: int,
        *,
        model: nn.Module | None = None,
        promoter: OverflowPromoter | None = None,
        init_scale: float = 65536.0,
        max_scale: float = 2.0**64,
    ) -> None:
        if (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, int)
            or steps_per_epoch < 1
        ):
            raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
        super().__init__(
            init_scale,
            growth_factor=2.0,
            backoff_factor=0.5,
            growth_interval=steps_per_epoch,
            max_scale=max_scale,
        )
        if promoter is not None and not isinstance(promoter, OverflowPromoter):
            raise TypeError(f"promoter must be an OverflowPromoter, got {promoter!r}")
        self.promoter = promoter
        self.grad_overflows = 0
        self._gy_overflow = False
        self._handles: list[Any] = []
        self._gp_threshold = overflow_threshold(HIGH)
        if model is not None:
            for mod in model.modules():
                if isinstance(mod, QuantLayer):
                    self._handles.append(mod.register_forward_hook(self._watch))

    def _watch(self, mod: nn.Module, args: Any, out: Any) -> None:
        if not (mod.training and isinstance(out, torch.Tensor) and out.requires_grad):
            return
        name = getattr(mod, "lowbit_layer_config", None)
        fmt = name.grad_act if name is not None else None
        if fmt is None or not isinstance(get_format(fmt), FloatFormat):
            return
        thr = _threshold(fmt)

        def check(g: torch.Tensor) -> None:
            a = g.detach().abs()
            if bool((a >= thr).any()) or bool(torch.isnan(a).any()):
                self._gy_overflow = True

        out.register_hook(check)

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        gp = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and bool((p.grad.abs() >= self._gp_threshold).any()):
                    gp = True
        extra = self._gy_overflow or gp
        self._gy_overflow = False
        super().unscale_(optimizer)
        if extra:
            self._found_inf = True
            self.grad_overflows += 1

    def update(self) -> None:
        super().update()
        if self.promoter is not None:
            self.promoter.step()

    def remove(self) -> None:
        """Remove the gradient watch hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d["grad_overflows"] = self.grad_overflows
        return d

    def __repr__(self) -> str:
        return (
            f"LeeLossScaler(scale={self.loss_scale!r}, growth_interval="
            f"{self.growth_interval}, grad_overflows={self.grad_overflows})"
        )


__all__ = ["LeeLossScaler", "OverflowPromoter", "overflow_fraction"]
