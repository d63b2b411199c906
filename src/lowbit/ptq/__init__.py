"""Post-training quantization (layer 5): calibration, BatchNorm folding, reports.

``calibrate(model, loader, weight="int8", act="int8", method=...)`` returns a model whose
Linear/Conv layers fake-quantize their weights (per tensor / channel / group) and inputs
(per tensor) with lowbit's integer semantics; ``fold_bn(model)`` folds BatchNorms;
``report(model_fp, model_q, loader)`` compares the two.
"""

from lowbit.ptq.bn_folding import fold_bn
from lowbit.ptq.calibration import calibrate
from lowbit.ptq.config import PTQConfig
from lowbit.ptq.fake_quant import fake_quant_int
from lowbit.ptq.modules import PTQConv1d, PTQConv2d, PTQLayer, PTQLinear
from lowbit.ptq.observers import (
    KLObserver,
    MinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    kl_threshold,
    make_observer,
)
from lowbit.ptq.reporting import PTQReport, report

__all__ = [
    "KLObserver",
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "PTQConfig",
    "PTQConv1d",
    "PTQConv2d",
    "PTQLayer",
    "PTQLinear",
    "PTQReport",
    "PercentileObserver",
    "calibrate",
    "fake_quant_int",
    "fold_bn",
    "kl_threshold",
    "make_observer",
    "report",
]
