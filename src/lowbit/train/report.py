"""Tables (rich and Markdown) and the accuracy-vs-epoch plot of training runs, written to files."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lowbit.train.loop import History

_HEADERS = {
    "epoch": "epoch",
    "train_loss": "train loss",
    "train_acc": "train acc %",
    "test_loss": "test loss",
    "test_acc": "test acc %",
    "seconds": "time (s)",
    "skipped_steps": "skipped steps",
}


def _fmt(key: str, v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if key.endswith("_acc"):
            return f"{100 * v:.2f}"
        if key.endswith("loss"):
            return f"{v:.4f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def _as_list(histories: History | Sequence[History]) -> list[History]:
    return [histories] if isinstance(histories, History) else list(histories)


def epoch_rows(history: History) -> list[dict[str, str]]:
    """The per-epoch rows of ``history`` as display strings keyed by column header."""
    return [{_HEADERS[k]: _fmt(k, v) for k, v in r.items()} for r in history.rows()]


def summary_rows(histories: History | Sequence[History]) -> list[dict[str, str]]:
    """One row per run: label, epochs, final and best test accuracy, mean time per epoch."""
    rows = []
    for h in _as_list(histories):
        rows.append(
            {
                "run": h.label or "train",
                "epochs": str(len(h)),
                "final test acc %": _fmt("test_acc", h.final_test_acc),
                "best test acc %": _fmt("test_acc", h.best_test_acc),
                "final train loss": _fmt("train_loss", h.train_loss[-1] if len(h) else math.nan),
                "s / epoch": _fmt("seconds", h.mean_epoch_seconds),
            }
        )
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub Markdown table of ``rows`` (the keys of the first row are the columns)."""
    if not rows:
        return ""
    cols = list(rows[0])
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Any:
    """A ``rich.table.Table`` of ``rows`` (the keys of the first row are the columns)."""
    from rich.table import Table

    table = Table(title=title)
    cols = list(rows[0]) if rows else []
    for i, c in enumerate(cols):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(str(r.get(c, "")) for c in cols))
    return table


def plot_accuracy(
    histories: History | Sequence[History],
    path: str | Path,
    *,
    title: str = "Test accuracy per epoch",
) -> Path:
    """Save a plot of test accuracy (%) against epoch, one line per run; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    p = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        for h in _as_list(histories):
            ax.plot(
                h.epoch, [100 * a for a in h.test_acc], marker="o", ms=3, label=h.label or "train"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if any(h.label for h in _as_list(histories)):
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(p, dpi=120)
    finally:
        plt.close(fig)
    return p


def write_history(
    history: History, out_dir: str | Path, *, stem: str = "history", title: str | None = None
) -> dict[str, Path]:
    """Write one run's per-epoch record: CSV, Markdown table, JSON and the accuracy plot.

    Args:
        history: the run.
        out_dir: folder (created when missing).
        stem: file name stem: ``{stem}.csv``, ``{stem}.md``, ``{stem}.json``, ``{stem}.png``.
        title: heading of the Markdown file and title of the plot.

    Returns:
        The written paths by kind ("csv", "markdown", "json", "plot").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or (f"Training run {history.label}" if history.label else "Training run")
    md = out / f"{stem}.md"
    md.write_text(f"# {title}\n\n" + markdown_table(epoch_rows(history)), encoding="utf-8")
    js = out / f"{stem}.json"
    js.write_text(json.dumps(history.to_dict(), indent=2) + "\n", encoding="utf-8")
    return {
        "csv": history.to_csv(out / f"{stem}.csv"),
        "markdown": md,
        "json": js,
        "plot": plot_accuracy(history, out / f"{stem}.png", title=title),
    }
