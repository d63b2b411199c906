"""Mixed-precision floating-point assignment (Lee, Sharma & Aiken, TMLR 2023, arXiv 2301.13464).

Every tensor of a training step (weights ``P``, activations ``Y`` and their gradients) is
stored in a 16-bit high format (``fp_6_9``) or an 8-bit low one (``fp_4_3_4`` for ``P``/``Y``,
``fp_5_2`` for ``GY``). Tensors are demoted in groups (the input or one Conv/Linear and the
operations after it), largest groups first, until a target fraction ``r`` of the step's
tensor elements is low; an overflow rule moves tensors that overflow back to high precision.

Typical use::

    from lowbit.methods import assign

    a = assign.lee_assignment(model, images[:8], r=0.5, batch_size=128)
    print(a.ratio, a.memory_bits)          # the memory metric and the bits saved
    a.apply(model)                         # lowbit.nn.quantize_(model, a.config)
    promoter = assign.OverflowPromoter(model, a, threshold=0.01)
    scaler = assign.LeeLossScaler(len(train_loader), model=model, promoter=promoter)
    fit(model, train_loader, test_loader, optimizer=opt, epochs=5, scaler=scaler)

This package takes models and batches as arguments; it never imports ``lowbit.data`` or
``lowbit.models`` (the CLI and experiments wire them).
"""

from lowbit.methods.assign.assignment import (
    DEMOTED,
    SCHEMES,
    Assignment,
    Promotion,
    assign,
    group_order,
    lee_assignment,
    scheme_name,
)
from lowbit.methods.assign.formats import (
    FORMATS,
    HIGH,
    LOW,
    LOW_GRAD,
    format_label,
    overflow_threshold,
    overflow_threshold_exact,
)
from lowbit.methods.assign.groups import (
    GEMM_TYPES,
    Group,
    Op,
    TensorGraph,
    TensorInfo,
    tensor_groups,
)
from lowbit.methods.assign.overflow import LeeLossScaler, OverflowPromoter, overflow_fraction

__all__ = [
    "DEMOTED",
    "FORMATS",
    "GEMM_TYPES",
    "HIGH",
    "LOW",
    "LOW_GRAD",
    "SCHEMES",
    "Assignment",
    "Group",
    "LeeLossScaler",
    "Op",
    "OverflowPromoter",
    "Promotion",
    "TensorGraph",
    "TensorInfo",
    "assign",
    "format_label",
    "group_order",
    "lee_assignment",
    "overflow_fraction",
    "overflow_threshold",
    "overflow_threshold_exact",
    "scheme_name",
    "tensor_groups",
]
