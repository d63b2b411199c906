"""Training of small models with every tensor of the step in its own format.

``TrainConfig`` (a frozen dataclass read from TOML/JSON), ``fit`` / ``evaluate`` (the loop,
with a tqdm bar and a per-epoch ``History``), the builders that turn a config into a quantized
model, an optimizer and a loss scaler, and the report writers (tables and the accuracy plot).
This package takes models and loaders as arguments; ``lowbit train`` (``lowbit.cli``) builds
them from ``lowbit.models`` and ``lowbit.data``.
"""

from __future__ import annotations

from lowbit.train.build import build_optimizer, build_scaler, quantize_model
from lowbit.train.config import TrainConfig
from lowbit.train.loop import COLUMNS, Evaluation, History, evaluate, fit
from lowbit.train.report import (
    epoch_rows,
    markdown_table,
    plot_accuracy,
    rich_table,
    summary_rows,
    write_history,
)

__all__ = [
    "COLUMNS",
    "Evaluation",
    "History",
    "TrainConfig",
    "build_optimizer",
    "build_scaler",
    "epoch_rows",
    "evaluate",
    "fit",
    "markdown_table",
    "plot_accuracy",
    "quantize_model",
    "rich_table",
    "summary_rows",
    "write_history",
]
