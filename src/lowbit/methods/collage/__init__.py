"""Collage (Yu et al., "Collage: Light-Weight Low-Precision Strategy for LLM Training",
ICML 2024, arXiv 2405.03637): AdamW entirely in bf16, with no fp32 master weights, where the
precision that bf16 rounds away is kept in multi-component floats (a bf16 value plus a bf16
residual).

* :mod:`~lowbit.methods.collage.mcf`: Fast2Sum, Grow, MultMC on bf16 tensors;
  :mod:`~lowbit.methods.collage.reference`: the same on exact rationals (tests).
* :class:`CollageAdamW` with ``variant`` "light", "plus" and the baselines "bf16",
  "fp32_master", "fp32"; per-step effective descent quality in ``last_metrics``.
* Recipes: :func:`collage_light`, :func:`collage_plus`, :func:`collage`.

Typical use::

    from lowbit.methods import collage

    model = model.to(collage.param_dtype("plus"))
    opt = collage.collage_plus(model.parameters(), lr=1e-3)
    ...
    opt.step(); print(opt.last_metrics.edq_normalised)

This package takes parameters as arguments; it never imports ``lowbit.data`` or
``lowbit.models``.
"""

from lowbit.methods.collage.mcf import (
    fast2sum,
    grow,
    mcf_value,
    mult_mc,
    split_scalar,
    two_prod_error,
)
from lowbit.methods.collage.optimizer import (
    BYTES_PER_PARAM,
    VARIANTS,
    CollageAdamW,
    StepMetrics,
    bytes_per_param,
    check_variant,
    param_dtype,
)
from lowbit.methods.collage.recipes import collage, collage_light, collage_plus

__all__ = [
    "BYTES_PER_PARAM",
    "VARIANTS",
    "CollageAdamW",
    "StepMetrics",
    "bytes_per_param",
    "check_variant",
    "collage",
    "collage_light",
    "collage_plus",
    "fast2sum",
    "grow",
    "mcf_value",
    "mult_mc",
    "param_dtype",
    "split_scalar",
    "two_prod_error",
]
