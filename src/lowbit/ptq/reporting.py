"""``report``: how far a PTQ model is from its float original (accuracy, agreement, SQNR)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lowbit.ptq.bn_folding import fold_bn
from lowbit.ptq.modules import PTQLayer


@dataclass(frozen=True)
class PTQReport:
    """Comparison of a float model and its PTQ version on the same batches.

    Attributes:
        accuracy_fp: top-1 accuracy of the float model (``None`` without labels).
        accuracy_q: top-1 accuracy of the quantized model (``None`` without labels).
        agreement: fraction of samples where both predict the same class.
        sqnr_db: per quantized layer, ``10 log10(sum y**2 / sum (y - y_q)**2)`` of its output
            in the quantized model (``y_q``) against the same layer's output in the float
            model (``y``): the error accumulated up to that layer (``inf`` when exact).
        samples: number of samples compared.
    """

    accuracy_fp: float | None
    accuracy_q: float | None
    agreement: float
    sqnr_db: dict[str, float] = field(default_factory=dict)
    samples: int = 0

    def to_markdown(self) -> str:
        """The report as two markdown tables (summary, per-layer SQNR)."""

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f} %"

        lines = [
            "| metric | value |",
            "|---|---|",
            f"| accuracy (float) | {pct(self.accuracy_fp)} |",
            f"| accuracy (quantized) | {pct(self.accuracy_q)} |",
            f"| agreement | {pct(self.agreement)} |",
            f"| samples | {self.samples} |",
            "",
            "| layer | SQNR (dB) |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.2f} |" for k, v in self.sqnr_db.items()]
        return "\n".join(lines)


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


@torch.no_grad()
def report(
    model_fp: nn.Module,
    model_q: nn.Module,
    loader: Iterable[Any],
    *,
    num_batches: int | None = None,
) -> PTQReport:
    """Compare ``model_q`` (from :func:`~lowbit.ptq.calibrate`) with ``model_fp``.

    The float model is compared in the form the quantized one was made from: a copy with its
    BatchNorms folded when the PTQ config folded them, so layer names and outputs match.

    Args:
        model_fp: the float model (not modified).
        model_q: its quantized version.
        loader: batches ``(x, y)`` (or ``x``: then no accuracy).
        num_batches: batches to use (``None``: all).

    Raises:
        ValueError: a quantized layer has no float counterpart of the same name, or the
            loader is empty, or ``num_batches <= 0``.
    """
    if num_batches is not None and (
        isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1
    ):
        raise ValueError(f"num_batches must be an int >= 1 or None, got {num_batches!r}")
    ref = copy.deepcopy(model_fp).eval()
    cfg = getattr(model_q, "lowbit_ptq_config", None)
    if cfg is None or cfg.fold_bn:
        fold_bn(ref)
    model_q.eval()
    qlayers = {n: m for n, m in model_q.named_modules() if isinstance(m, PTQLayer)}
    ref_mods = dict(ref.named_modules())
    missing = [n for n in qlayers if n not in ref_mods]
    if missing:
        raise ValueError(f"quantized layers {missing} have no counterpart in model_fp")
    outs: dict[str, dict[str, torch.Tensor]] = {"fp": {}, "q": {}}

    def hook(tag: str, name: str) -> Any:
        def fn(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
            outs[tag][name] = out.detach().to(torch.float64)

        return fn

    handles = [m.register_forward_hook(hook("q", n)) for n, m in qlayers.items()]
    handles += [ref_mods[n].register_forward_hook(hook("fp", n)) for n in qlayers]
    sig = dict.fromkeys(qlayers, 0.0)
    noise = dict.fromkeys(qlayers, 0.0)
    n_total = n_agree = n_fp = n_q = 0
    has_labels = True
    p = next(model_q.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    try:
        for i, batch in enumerate(loader):
            x, y = _split(batch)
            x = x.to(device)
            outs["fp"].clear()
            outs["q"].clear()
            pf = ref(x).argmax(dim=-1)
            pq = model_q(x).argmax(dim=-1)
            for n in qlayers:
                if n in outs["fp"] and n in outs["q"]:
                    a, b = outs["fp"][n], outs["q"][n]
                    sig[n] += float((a * a).sum())
                    noise[n] += float(((a - b) ** 2).sum())
            n_total += pf.numel()
            n_agree += int((pf == pq).sum())
            if y is None:
                has_labels = False
            else:
                y = y.to(device)
                n_fp += int((pf == y).sum())
                n_q += int((pq == y).sum())
            if num_batches is not None and i + 1 >= num_batches:
                break  # before fetching another batch
    finally:
        for h in handles:
            h.remove()
    if n_total == 0:
        raise ValueError("the loader yielded no samples")
    sqnr = {
        n: (
            math.inf
            if noise[n] == 0
            else (10 * math.log10(sig[n] / noise[n]) if sig[n] > 0 else -math.inf)
        )
        for n in qlayers
    }
    return PTQReport(
        accuracy_fp=n_fp / n_total if has_labels else None,
        accuracy_q=n_q / n_total if has_labels else None,
        agreement=n_agree / n_total,
        sqnr_db=sqnr,
        samples=n_total,
    )


__all__ = ["PTQReport", "report"]
