"""I-ViT (Li & Gu, "I-ViT: Integer-only Quantization for Efficient Vision Transformer
Inference", ICCV 2023, arXiv 2207.01405; code zkkli/I-ViT): integer-only transformer inference
with dyadic requantization, Shiftmax, ShiftGELU and I-LayerNorm.

Typical use::

    from lowbit.methods import ivit

    net = ivit.convert(vit, calib_loader, input_mean=splits.mean, input_std=splits.std)
    bert = ivit.convert(minilm, text_batches, config=ivit.ivit_recipe("symmetric-gelu"))
    net.train(); ...                        # QAT: any float optimizer on net's parameters
    net.eval()
    codes = net.run_int(images_uint8)       # int64 logit codes, integer ops only
    logits = codes * net.output_scale       # == net(images) exactly

* :mod:`~lowbit.methods.ivit.ops` — the integer operators (numpy or torch integers).
* :mod:`~lowbit.methods.ivit.fake` — their fake-quant (QAT) modules, float64, bit-exact.
* :mod:`~lowbit.methods.ivit.model` — :class:`IViT` (a ``ViTTiny``) and :class:`IBert` (a
  MiniLM/BERT encoder).

This package takes models and loaders as arguments; it never imports ``lowbit.data`` or
``lowbit.models`` (experiments wire them).
"""

from lowbit.methods.ivit.convert import calibrate, convert
from lowbit.methods.ivit.fake import (
    QLayerNorm,
    QLinear,
    QShiftGELU,
    QShiftmax,
    QuantAct,
    requant_f64,
)
from lowbit.methods.ivit.model import (
    RECIPES,
    IBert,
    IBertLayer,
    IViT,
    IViTBlock,
    IViTConfig,
    ivit_recipe,
)
from lowbit.methods.ivit.ops import (
    add_requant,
    dyadic,
    exp_x0,
    i_layernorm,
    int_linear,
    isqrt_newton,
    layernorm_scale,
    quantize_symmetric,
    requant,
    shift_exp,
    shiftgelu,
    shiftmax,
    symmetric_scale,
)

__all__ = [
    "RECIPES",
    "IBert",
    "IBertLayer",
    "IViT",
    "IViTBlock",
    "IViTConfig",
    "QLayerNorm",
    "QLinear",
    "QShiftGELU",
    "QShiftmax",
    "QuantAct",
    "add_requant",
    "calibrate",
    "convert",
    "dyadic",
    "exp_x0",
    "i_layernorm",
    "int_linear",
    "isqrt_newton",
    "ivit_recipe",
    "layernorm_scale",
    "quantize_symmetric",
    "requant",
    "requant_f64",
    "shift_exp",
    "shiftgelu",
    "shiftmax",
    "symmetric_scale",
]
