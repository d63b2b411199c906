"""A2Q (Colbert, Pappalardo, Petri-Koenig, ICCV 2023, arXiv 2308.13504): accumulator-aware
quantization with guaranteed overflow avoidance.

Per output channel the integer weights satisfy ``‖q‖₁ <= T = (2**(P-1) - 1) · 2**(1_signed-N)``
(weight normalisation ``w = g·v/‖v‖₁`` with ``g <= s·T``, rounding toward zero), so no dot
product with ``N``-bit inputs can overflow a signed ``P``-bit accumulator. A plain-QAT
baseline (``qat_int``) with the same widths needs the data-type bound instead.

Typical use::

    import lowbit.nn as lbnn
    from lowbit.methods import a2q

    lbnn.quantize_(model, a2q.a2q(acc_bits=16, weight_bits=4, act_bits=8))
    a2q.train(model, train_loader, epochs=2)           # Adam, clamp_ after every step
    acc, rep = a2q.accuracy(model, test_loader, integer=True)   # int GEMMs, 16-bit wrap
    rep.total.overflow_steps                           # 0: guaranteed
    a2q.l1_report(model)                               # ‖q‖₁, budget, sparsity per layer

Importing this package registers the methods ``"a2q"`` and ``"qat_int"`` with
:func:`lowbit.nn.register_method` (``nn.Linear`` and ``nn.Conv2d``).
"""

from lowbit.methods.a2q.bounds import (
    acc_bits_for_l1,
    datatype_acc_bits,
    datatype_bound,
    input_max_abs,
    l1_bound,
    l1_budget,
    worst_case_inputs,
)
from lowbit.methods.a2q.config import METHODS, A2QArgs, a2q, qat_int
from lowbit.methods.a2q.evaluate import (
    IntegerReport,
    LayerL1,
    accuracy,
    clamp_,
    integer_inference,
    l1_report,
    sparsity,
    train,
)
from lowbit.methods.a2q.layers import (
    A2QConv2d,
    A2QLayer,
    A2QLinear,
    OverflowStats,
    a2q_layers,
    register,
)
from lowbit.methods.a2q.quantizers import A2QActQuantizer, A2QWeightQuantizer

register()

__all__ = [
    "METHODS",
    "A2QActQuantizer",
    "A2QArgs",
    "A2QConv2d",
    "A2QLayer",
    "A2QLinear",
    "A2QWeightQuantizer",
    "IntegerReport",
    "LayerL1",
    "OverflowStats",
    "a2q",
    "a2q_layers",
    "acc_bits_for_l1",
    "accuracy",
    "clamp_",
    "datatype_acc_bits",
    "datatype_bound",
    "input_max_abs",
    "integer_inference",
    "l1_bound",
    "l1_budget",
    "l1_report",
    "qat_int",
    "register",
    "sparsity",
    "train",
    "worst_case_inputs",
]
