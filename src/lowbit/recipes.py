"""Every seed method's recipe under one name: ``lb.recipes.<name>(...)``.

A recipe returns what a user plugs into a model: a :class:`lowbit.nn.QuantConfig` for
:func:`lowbit.nn.quantize_`, an optimizer, or an assignment object holding both. Each name is
the method package's own function (same signature and docstring), imported on first use so
that ``import lowbit`` stays light.

==========================  ==============================================  ==================
recipe                      what it returns                                 paper
==========================  ==============================================  ==================
``dfp16_training``          QuantConfig: DFP-16 GEMMs fwd + both bwd        Das et al. 2018
``a2q``                     QuantConfig: accumulator-aware QAT              Colbert et al. 2023
``qat_int``                 QuantConfig: the plain-QAT baseline of A2Q      -
``lee_assignment``          Assignment: per-tensor fp8/fp16 formats         Lee et al. 2023
``OverflowPromoter``        promotes overflowing tensors during training    Lee et al. 2023
``LeeLossScaler``           the paper's dynamic loss scaling                Lee et al. 2023
``collage``                 bf16 AdamW with multi-component floats          Yu et al. 2024
``collage_light``           Collage-light optimizer                         Yu et al. 2024
``collage_plus``            Collage-plus optimizer                          Yu et al. 2024
``s2fp8_training``          QuantConfig: S2FP8 for every GEMM input         Cambier et al. 2020
``fp8_training_no_scaling`` QuantConfig: plain e5m2, S2FP8's baseline       Cambier et al. 2020
``posit_training``          PositRecipe: posits per stage, quire GEMMs      Raposo et al. 2021
``ivit``                    IViTConfig for ``lb.ivit.convert``              Li & Gu 2023
``double_rounding``         converts a model to bit-switchable DR layers    Huang et al. 2025
==========================  ==============================================  ==================
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE: dict[str, tuple[str, str]] = {
    "dfp16_training": ("lowbit.methods.dfp", "dfp16_training"),
    "a2q": ("lowbit.methods.a2q", "a2q"),
    "qat_int": ("lowbit.methods.a2q", "qat_int"),
    "lee_assignment": ("lowbit.methods.assign", "lee_assignment"),
    "OverflowPromoter": ("lowbit.methods.assign", "OverflowPromoter"),
    "LeeLossScaler": ("lowbit.methods.assign", "LeeLossScaler"),
    "collage": ("lowbit.methods.collage", "collage"),
    "collage_light": ("lowbit.methods.collage", "collage_light"),
    "collage_plus": ("lowbit.methods.collage", "collage_plus"),
    "s2fp8_training": ("lowbit.methods.s2fp8", "s2fp8_training"),
    "fp8_training_no_scaling": ("lowbit.methods.s2fp8", "fp8_training_no_scaling"),
    "posit_training": ("lowbit.methods.posit_training", "posit_training"),
    "ivit": ("lowbit.methods.ivit", "ivit_recipe"),
    "double_rounding": ("lowbit.methods.double_rounding", "convert"),
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(
            f"lowbit.recipes has no recipe {name!r}; recipes: {', '.join(sorted(_WHERE))}"
        )
    module, attr = _WHERE[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
