"""Optimizers whose weights and states are stored in low-precision formats (layer 5).

``LowPrecisionAdamW`` and ``LowPrecisionSGD``: every stored tensor lies on its format's grid,
each step computes in fp32 and rounds once per stored tensor, with RNE or counter-based
stochastic rounding (reproducible from ``seed``), and optional fp32 master weights.
"""

from lowbit.optim._base import LowPrecisionOptimizer
from lowbit.optim.adamw import LowPrecisionAdamW
from lowbit.optim.sgd import LowPrecisionSGD

__all__ = ["LowPrecisionAdamW", "LowPrecisionOptimizer", "LowPrecisionSGD"]
