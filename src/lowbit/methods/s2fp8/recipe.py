"""The S2FP8 training recipe and the paper's plain-FP8 baseline, as :class:`QuantConfig` s.

What the paper does (Cambier et al. 2020, §3-4) and how it maps onto a ``QuantConfig``:

* every GEMM/convolution input is stored as S2FP8 (1-5-2 values plus per-tensor
  ``alpha``/``beta`` recomputed every iteration): the weights (``weight``), the activations
  (``act``) and the back-propagated errors ``dL/dy`` (``grad_act``, which in lowbit also rounds
  the input gradient ``dL/dx`` a layer passes down — one more S2FP8 rounding than the paper,
  of a tensor that is rounded again as the next GEMM input);
* the GEMMs accumulate in FP32 (torch's float32 matmul on the decoded values);
* the weight gradient (a GEMM output) and the master weights stay FP32 (``grad_weight=None``;
  the optimizer updates the float32 parameters);
* no loss scaling and no per-layer exceptions: the first and last layers are S2FP8 too;
* rounding to nearest even.

The baseline "plain FP8" of the paper's tables is the same set of tensors cast to e5m2 with no
scaling at all (and no loss scaling), which loses small gradients to underflow.
"""

from __future__ import annotations

from typing import Any

from lowbit.nn.config import QuantConfig

#: The paper's top-1 accuracies (%), FP32 / S2FP8 / plain FP8 (1-5-2, no loss scaling), as
#: recalled in shared/notes/papers.md §7 [mem, approximate]: quoted beside ours, never targets.
PAPER_RESULTS: dict[str, dict[str, float | None]] = {
    "cifar10_resnet20": {"fp32": 91.5, "s2fp8": 91.1, "fp8": 18.0},
    "cifar10_resnet34": {"fp32": 92.5, "s2fp8": 92.0, "fp8": None},
    "cifar10_resnet50": {"fp32": 93.0, "s2fp8": 93.2, "fp8": None},
    "imagenet_resnet18": {"fp32": 70.3, "s2fp8": 69.6, "fp8": None},
    "imagenet_resnet50": {"fp32": 76.2, "s2fp8": 75.2, "fp8": None},
}


def s2fp8_training(fmt: str = "e5m2", **changes: Any) -> QuantConfig:
    """The S2FP8 training recipe: S2FP8 weights, activations and output gradients.

    ``QuantConfig(weight=fmt, act=fmt, grad_act=fmt, scaling="s2fp8", grad_scaling="s2fp8")``
    with round-to-nearest-even casts, float32 weight gradients, no skipped layers (see the
    module docstring for the mapping to the paper).

    Args:
        fmt: the 8-bit storage format (the paper: ``"e5m2"``, whose top exponent 15 is the
            squeeze target).
        changes: fields of the config to replace (e.g. ``seed``, ``skip``).

    Raises:
        ValueError: ``fmt`` is not a float format, or a change is invalid.
    """
    base: dict[str, Any] = dict(
        weight=fmt,
        act=fmt,
        grad_act=fmt,
        grad_weight=None,
        scaling="s2fp8",
        grad_scaling="s2fp8",
        weight_mode="rne",
        act_mode="rne",
        grad_mode="rne",
    )
    return QuantConfig(**{**base, **changes})


def fp8_training_no_scaling(fmt: str = "e5m2", **changes: Any) -> QuantConfig:
    """The paper's plain-FP8 baseline: the same tensors as :func:`s2fp8_training` cast to
    ``fmt`` without any scaling (``scaling="none"``, ``grad_scaling="none"``) and trained
    without loss scaling.

    Forward casts saturate (lowbit's default for <= 8-bit formats); gradient casts keep the
    format's own overflow (inf for e5m2).
    """
    base: dict[str, Any] = dict(
        weight=fmt,
        act=fmt,
        grad_act=fmt,
        grad_weight=None,
        scaling="none",
        grad_scaling="none",
        weight_mode="rne",
        act_mode="rne",
        grad_mode="rne",
    )
    return QuantConfig(**{**base, **changes})


__all__ = ["PAPER_RESULTS", "fp8_training_no_scaling", "s2fp8_training"]
