"""Neural-network layer (layer 5): quantizers, QuantConfig, quantize_, DDP gradient rounding.

Typical use::

    import lowbit.nn as lbnn
    cfg = lbnn.QuantConfig(weight="e4m3", act="e4m3", grad_act="e5m2", grad_weight="e5m2",
                           grad_mode="sr", granularity="per_channel")
    lbnn.quantize_(model, cfg)          # Linear, Conv1d/2d, Embedding, MatMul swapped in place
    print(lbnn.summary(model))          # which tensor gets which format

See :mod:`lowbit.nn.config` (what each field rounds), :mod:`lowbit.nn.layers` (the exact
forward/backward of a quantized layer), :mod:`lowbit.nn.functional` (the autograd functions),
:mod:`lowbit.nn.quantizers`, :mod:`lowbit.nn.quantize` and :mod:`lowbit.nn.distributed`.
"""

from lowbit.nn.config import CastSpec, QuantConfig
from lowbit.nn.distributed import rounding_hook, wrap_ddp
from lowbit.nn.functional import (
    derive_seed,
    fake_quantize,
    int_fake_quant,
    lsq_quantize,
    round_grad,
)
from lowbit.nn.layers import (
    QuantConv1d,
    QuantConv2d,
    QuantEmbedding,
    QuantLayer,
    QuantLinear,
    QuantMatMul,
)
from lowbit.nn.matmul import MatMul
from lowbit.nn.quantize import (
    QuantSummary,
    dequantize_,
    is_quantized,
    methods,
    quantize_,
    register_handler,
    register_method,
    summary,
)
from lowbit.nn.quantizers import (
    FloatQuantizer,
    IntQuantizer,
    LSQQuantizer,
    MXQuantizer,
    Quantizer,
    make_quantizer,
)

__all__ = [
    "CastSpec",
    "FloatQuantizer",
    "IntQuantizer",
    "LSQQuantizer",
    "MXQuantizer",
    "MatMul",
    "QuantConfig",
    "QuantConv1d",
    "QuantConv2d",
    "QuantEmbedding",
    "QuantLayer",
    "QuantLinear",
    "QuantMatMul",
    "QuantSummary",
    "Quantizer",
    "dequantize_",
    "derive_seed",
    "fake_quantize",
    "int_fake_quant",
    "is_quantized",
    "lsq_quantize",
    "make_quantizer",
    "methods",
    "quantize_",
    "register_handler",
    "register_method",
    "round_grad",
    "rounding_hook",
    "summary",
    "wrap_ddp",
]
