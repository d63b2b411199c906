"""INT16 dynamic fixed point training (Das et al., ICLR 2018, arXiv 1802.00930).

Every Linear and Conv2d GEMM of a training step — forward, backward-data and weight-gradient —
runs on DFP-16 tensors (INT16 integers with one shared exponent per tensor) as INT16 x INT16
products accumulated in INT32 chunks whose length provably cannot overflow, converted to fp32
and combined in fp32 (:mod:`lowbit.arith.dfp`). Non-GEMM layers and the optimizer stay fp32, on
fp32 master weights.

Typical use::

    import lowbit.nn as lbnn
    from lowbit.methods.dfp import dfp16_training, overflow_report

    lbnn.quantize_(model, dfp16_training())     # Linear/Conv2d -> DFPLinear/DFPConv2d
    ...train as usual...
    overflow_report(model)                      # per layer: overflows (0), max INT32 sums

Importing this package registers the ``"dfp16"`` method with :func:`lowbit.nn.register_method`.
"""

from torch import nn

from lowbit.methods.dfp.functional import (
    GEMM_ROLES,
    DFPConv2dFunction,
    DFPLayerStats,
    DFPLinearFunction,
    dfp_conv2d,
    dfp_linear,
)
from lowbit.methods.dfp.layers import (
    DFPConv2d,
    DFPLinear,
    audit_unchunked,
    conv2d_handler,
    dfp_layers,
    linear_handler,
    overflow_report,
    reset_stats,
    total_overflows,
)
from lowbit.methods.dfp.settings import METHOD, DFPSettings, dfp16_training
from lowbit.nn.quantize import register_method

register_method(METHOD, nn.Linear, linear_handler)
register_method(METHOD, nn.Conv2d, conv2d_handler)

__all__ = [
    "GEMM_ROLES",
    "METHOD",
    "DFPConv2d",
    "DFPConv2dFunction",
    "DFPLayerStats",
    "DFPLinear",
    "DFPLinearFunction",
    "DFPSettings",
    "audit_unchunked",
    "dfp16_training",
    "dfp_conv2d",
    "dfp_layers",
    "dfp_linear",
    "overflow_report",
    "reset_stats",
    "total_overflows",
]
