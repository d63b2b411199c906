"""Optimizer recipes: ``collage_light``, ``collage_plus`` and ``collage(params, variant=...)``.

Typical use::

    from lowbit.methods.collage import collage_light, param_dtype

    model = model.to(param_dtype("light"))          # bf16 weights, no fp32 copy anywhere
    opt = collage_light(model.parameters(), lr=1e-3, weight_decay=0.1)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lowbit.methods.collage.optimizer import CollageAdamW


def collage(params: Iterable[Any], variant: str = "light", **adamw_kw: Any) -> CollageAdamW:
    """An AdamW optimizer of any :data:`~lowbit.methods.collage.VARIANTS`.

    ``"light"`` and ``"plus"`` are Collage; ``"bf16"`` (pure bf16 AdamW), ``"fp32_master"``
    (bf16 weights with fp32 master weights and moments) and ``"fp32"`` (plain AdamW) are the
    baselines the paper compares against, built by the same class so that every run logs
    the same metrics.

    Args:
        params: parameters or param groups, of dtype ``param_dtype(variant)``.
        variant: ``"light"``, ``"plus"``, ``"bf16"``, ``"fp32_master"`` or ``"fp32"``.
        **adamw_kw: ``lr``, ``betas``, ``eps``, ``weight_decay``, ``track_metrics``.

    Raises:
        ValueError: an unknown variant or a bad hyper-parameter.
    """
    return CollageAdamW(params, variant=variant, **adamw_kw)


def collage_light(params: Iterable[Any], **adamw_kw: Any) -> CollageAdamW:
    """Collage-light: bf16 weights kept as (θ, θ_r) pairs updated with Grow; bf16 moments.
    10 bytes per parameter."""
    return collage(params, "light", **adamw_kw)


def collage_plus(params: Iterable[Any], **adamw_kw: Any) -> CollageAdamW:
    """Collage-plus: light, plus the second moment as a (v, v_r) pair decayed by MultMC with
    β2 split in two bf16 terms (bf16(0.999) is 1.0). 12 bytes per parameter."""
    return collage(params, "plus", **adamw_kw)


__all__ = ["collage", "collage_light", "collage_plus"]
