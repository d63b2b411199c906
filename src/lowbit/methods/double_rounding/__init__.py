"""Double Rounding (Huang et al. 2025, arXiv 2502.01199): one int8 model switchable to lower
widths by integer rounding, trained jointly at every width with ALRS, with Hessian-aware
stochastic bit-switching (HASB) and a mixed-precision integer program.

Typical use::

    from lowbit.methods import double_rounding as dr

    res = dr.train(float_model, train_loader, test_loader, bits=(8, 6, 4, 2), epochs=5)
    dr.export(res.model, "model-int8.safetensors")
    ckpt = dr.load_int8("model-int8.safetensors")
    w4 = ckpt.int_weight("layer1.0.conv1", 4)          # int8 tensor holding 4-bit codes
    dr.switch(ckpt.codes["layer1.0.conv1"], 8, 2)     # integer-only switch

This package takes models and loaders as arguments; it never imports ``lowbit.data`` or
``lowbit.models`` (the CLI and experiments wire them).
"""

from lowbit.methods.double_rounding.alrs import alrs_factor, param_groups, set_learning_rates
from lowbit.methods.double_rounding.convert import (
    DEFAULT_BITS,
    convert,
    dr_layers,
    get_bits,
    layer_params,
    model_widths,
    set_bits,
    switchable_bns,
)
from lowbit.methods.double_rounding.evaluate import (
    accuracy,
    evaluate,
    evaluate_widths,
    recalibrate_bn,
)
from lowbit.methods.double_rounding.export import FORMAT, DRCheckpoint, export, load_int8
from lowbit.methods.double_rounding.hasb import (
    HASBSchedule,
    hutchinson_samples,
    hutchinson_trace,
    layer_traces,
)
from lowbit.methods.double_rounding.ilp import (
    MixedPrecisionSolution,
    solve_mixed_precision,
    sweep,
)
from lowbit.methods.double_rounding.layers import (
    ActivationQuantizer,
    DRConv2d,
    DRLinear,
    SwitchableBatchNorm2d,
)
from lowbit.methods.double_rounding.quantizer import (
    DoubleRoundingQuantizer,
    dequantize,
    init_scale,
    switch,
)
from lowbit.methods.double_rounding.search import (
    SearchResult,
    layer_scores,
    measured_scores,
    pareto_front,
    plot_search,
    quantization_errors,
    search,
)
from lowbit.methods.double_rounding.train import (
    TrainResult,
    train,
    train_fp,
    train_independent,
)

__all__ = [
    "DEFAULT_BITS",
    "FORMAT",
    "ActivationQuantizer",
    "DRCheckpoint",
    "DRConv2d",
    "DRLinear",
    "DoubleRoundingQuantizer",
    "HASBSchedule",
    "MixedPrecisionSolution",
    "SearchResult",
    "SwitchableBatchNorm2d",
    "TrainResult",
    "accuracy",
    "alrs_factor",
    "convert",
    "dequantize",
    "dr_layers",
    "evaluate",
    "evaluate_widths",
    "export",
    "get_bits",
    "hutchinson_samples",
    "hutchinson_trace",
    "init_scale",
    "layer_params",
    "layer_scores",
    "layer_traces",
    "load_int8",
    "measured_scores",
    "model_widths",
    "param_groups",
    "pareto_front",
    "plot_search",
    "quantization_errors",
    "recalibrate_bn",
    "search",
    "set_bits",
    "set_learning_rates",
    "solve_mixed_precision",
    "sweep",
    "switch",
    "switchable_bns",
    "train",
    "train_fp",
    "train_independent",
]
