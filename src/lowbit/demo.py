"""``lowbit demo`` / ``make demo``: round real data to every 8- and 16-bit format.

The data are real and small enough to need no download: scikit-learn's digits images
(1797 grey 8×8 images; pixels 0..16 scaled to [0, 1]) and the weights and hidden activations
of a small MLP (64-64-10, ReLU) trained on them with torch in a second or two. Each tensor is
rounded to each format in modes rne, rtz and sr (seeded), and the table reports the relative
RMS error, the largest absolute error, the fraction of values that changed, and the MLP's test
accuracy when its weights (and biases) are rounded.

Needs the ``torch`` and ``demo`` extras (torch, scikit-learn, matplotlib).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import lowbit as lb

MODES = ("rne", "rtz", "sr")
TENSORS = ("pixels", "weights", "activations")


@dataclass(frozen=True)
class DemoFormat:
    """One column of formats in the demo: a label and how values are quantized."""

    label: str
    kind: str  # "elem" (lb.round), "int_tensor" (per-tensor scaled integer), "mx" (quantize_mx)
    name: str
    note: str = ""


FORMATS: tuple[DemoFormat, ...] = (
    DemoFormat("bf16", "elem", "bf16"),
    DemoFormat("fp16", "elem", "fp16"),
    DemoFormat("e5m2", "elem", "e5m2"),
    DemoFormat("e4m3fn", "elem", "e4m3fn"),
    DemoFormat("e4m3fnuz", "elem", "e4m3fnuz"),
    DemoFormat("e5m2fnuz", "elem", "e5m2fnuz"),
    DemoFormat("e4m3-ieee", "elem", "e4m3-ieee"),
    DemoFormat("posit8", "elem", "posit8"),
    DemoFormat("posit16", "elem", "posit16"),
    DemoFormat("int8 (per-tensor)", "int_tensor", "int8", "symmetric scale amax/127 per tensor"),
    DemoFormat("mxfp8_e4m3", "mx", "mxfp8_e4m3", "blocks of 32 along the last axis"),
    DemoFormat("mxfp8_e5m2", "mx", "mxfp8_e5m2", "blocks of 32 along the last axis"),
    DemoFormat("mxint8", "mx", "mxint8", "blocks of 32 along the last axis"),
)


@dataclass
class Metrics:
    """Errors of one rounded tensor against its fp32 original."""

    rel_rms: float
    max_abs: float
    changed: float
    nonfinite: int = 0


@dataclass
class DemoRow:
    """One line of the result table (a format and a mode)."""

    format: str
    mode: str
    metrics: dict[str, Metrics] = field(default_factory=dict)
    test_acc: float = math.nan
    note: str = ""


@dataclass
class DemoResult:
    """What :func:`run_demo` measured and wrote."""

    rows: list[DemoRow]
    fp32_acc: float
    files: dict[str, Path]
    seconds: float
    description: str


# ---------------------------------------------------------------------------------------------
# data and model
# ---------------------------------------------------------------------------------------------
def load_digits_data(quick: bool, seed: int) -> dict[str, np.ndarray]:
    """Digits images scaled to [0, 1] (float32) and a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    pixels = x[:300] if quick else x
    return {"x": x, "pixels": pixels, "xtr": xtr, "xte": xte, "ytr": ytr, "yte": yte}


def train_mlp(xtr: np.ndarray, ytr: np.ndarray, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Train a 64-64-10 ReLU MLP full-batch with Adam; returns its fp32 parameters."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and does not fight numba
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    names = ("w1", "b1", "w2", "b2")
    return {
        n: p.detach().numpy().astype(np.float32).copy()
        for n, p in zip(names, model.parameters(), strict=True)
    }


def hidden(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Hidden-layer activations (after ReLU), float32."""
    return np.maximum(x @ params["w1"].T + params["b1"], np.float32(0))


def accuracy(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of the MLP with the given (possibly rounded) parameters."""
    logits = hidden(params, x) @ params["w2"].T + params["b2"]
    return float(np.mean(np.argmax(logits, axis=1) == y))


# ---------------------------------------------------------------------------------------------
# quantizers
# ---------------------------------------------------------------------------------------------
class NotAvailable(Exception):
    """A format/mode pair the demo cannot run (reason in the message)."""


def _mx_quantizer() -> Callable[..., Any]:
    """``quantize_mx`` from the public API (``lb.quantize_mx``, else ``lowbit.blocks``)."""
    import importlib

    for mod in ("lowbit", "lowbit.blocks", "lowbit.blocks.mx"):
        try:
            fn = getattr(importlib.import_module(mod), "quantize_mx", None)
        except ImportError:
            fn = None
        if fn is not None:
            return fn
    raise NotAvailable("quantize_mx is not available in this build")


def quantize(x: np.ndarray, fmt: DemoFormat, mode: str, seed: int) -> np.ndarray:
    """Round ``x`` (float32) to ``fmt`` in ``mode``; the result is float32 of x's shape.

    Raises:
        NotAvailable: the format does not support the mode, or its implementation is missing.
    """
    try:
        if fmt.kind == "elem":
            return np.asarray(lb.round(x, fmt.name, mode, seed=seed))
        if fmt.kind == "int_tensor":
            amax = float(np.max(np.abs(x))) if x.size else 0.0
            if amax == 0.0:
                return x.copy()
            scale = amax / 127.0
            q = lb.round(x.astype(np.float64) / scale, fmt.name, mode, seed=seed)
            return (np.asarray(q) * scale).astype(np.float32)
        out = _mx_quantizer()(x, fmt.name, mode=mode, seed=seed)  # blocks along the last axis
        return np.asarray(out).astype(np.float32)
    except (ValueError, NotImplementedError, ImportError) as e:
        raise NotAvailable(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def metrics(x: np.ndarray, y: np.ndarray) -> Metrics:
    """Relative RMS error, largest absolute error and fraction changed (float64 arithmetic)."""
    x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    bad = int(np.sum(~np.isfinite(y64) & np.isfinite(x64)))
    d = y64 - x64
    denom = float(np.sum(x64 * x64))
    rel = math.sqrt(float(np.sum(d * d)) / denom) if denom > 0 else 0.0
    with np.errstate(invalid="ignore"):
        changed = float(np.mean(~(y64 == x64)))
    mx = float(np.max(np.abs(d))) if d.size else 0.0
    if bad:
        rel, mx = math.nan, math.nan
    return Metrics(rel, mx, changed, bad)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _fmt(v: float, kind: str) -> str:
    if math.isnan(v):
        return "—"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "acc":
        return f"{v:.4f}"
    return "0" if v == 0 else f"{v:.2e}"


def _columns() -> list[tuple[str, str, str]]:
    """(key, header, kind) of the table columns after format and mode."""
    short = {"pixels": "px", "weights": "W", "activations": "act"}
    cols = []
    for metric, head, kind in (
        ("rel_rms", "relRMS", "sci"),
        ("max_abs", "max|err|", "sci"),
        ("changed", "changed", "pct"),
    ):
        for t in TENSORS:
            cols.append((f"{t}.{metric}", f"{head} {short[t]}", kind))
    cols.append(("test_acc", "test acc (W rounded)", "acc"))
    return cols


def _value(row: DemoRow, key: str) -> float:
    if key == "test_acc":
        return row.test_acc
    t, m = key.split(".")
    if t not in row.metrics:
        return math.nan
    return float(getattr(row.metrics[t], m))


def _write_csv(rows: list[DemoRow], path: Path) -> None:
    cols = _columns()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["format", "mode", *[k for k, _, _ in cols], "note"])
        for r in rows:
            w.writerow([r.format, r.mode, *[repr(_value(r, k)) for k, _, _ in cols], r.note])


def _write_markdown(rows: list[DemoRow], path: Path, description: str) -> None:
    cols = _columns()
    lines = [
        "# lowbit demo: rounding real data",
        "",
        description,
        "",
        "| format | mode | " + " | ".join(h for _, h, _ in cols) + " | note |",
        "|---|---|" + "---:|" * len(cols) + "---|",
    ]
    for r in rows:
        vals = " | ".join(_fmt(_value(r, k), kind) for k, _, kind in cols)
        lines.append(f"| {r.format} | {r.mode} | {vals} | {r.note} |")
    path.write_text("\n".join(lines).replace("|err|", "\\|err\\|") + "\n")


def _plot(rows: list[DemoRow], fp32_acc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fmts = [f.label for f in FORMATS]
    by = {(r.format, r.mode): r for r in rows}
    fig, axes = plt.subplots(4, 1, figsize=(13, 14), sharex=True)
    width = 0.8 / len(MODES)
    xs = np.arange(len(fmts))
    accs = [r.test_acc for r in rows if not math.isnan(r.test_acc)]
    for ax, (key, title) in zip(
        axes,
        (
            ("pixels.rel_rms", "digits pixels: relative RMS error"),
            ("weights.rel_rms", "MLP weights: relative RMS error"),
            ("activations.rel_rms", "MLP hidden activations (test set): relative RMS error"),
            ("test_acc", "MLP test accuracy with rounded weights"),
        ),
        strict=True,
    ):
        for i, mode in enumerate(MODES):
            pos = xs + (i - (len(MODES) - 1) / 2) * width
            vals = [_value(by[(f, mode)], key) if (f, mode) in by else math.nan for f in fmts]
            if key != "test_acc":  # log scale: mark exact (0) results with a label
                for p, v in zip(pos, vals, strict=True):
                    if v == 0:
                        ax.text(p, 2e-9, "exact", rotation=90, ha="center", va="bottom", fontsize=7)
            ax.bar(pos, vals, width, label=mode)
        ax.set_title(title)
        if key == "test_acc":
            ax.axhline(fp32_acc, color="k", lw=1, ls="--", label=f"fp32 {fp32_acc:.3f}")
            ax.set_ylim(max(0.0, min(accs) - 0.05), 1.0)
        else:
            ax.set_yscale("log")
            ax.set_ylim(1e-9, 1.0)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(ncol=len(MODES) + 1, fontsize=8, loc="upper right")
    axes[-1].set_xticks(xs, fmts, rotation=30, ha="right")
    fig.suptitle(
        "lowbit demo: error per format and rounding mode (no bar: mode not supported by the format)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    quick: bool = False,
    seed: int = 0,
    console: Console | None = None,
    progress: bool = True,
) -> DemoResult:
    """Train the MLP, round every tensor to every format and mode, print and save the table.

    Args:
        out_dir: directory for ``results.csv``, ``results.md`` and ``errors.png``.
        quick: fewer training steps and 300 of the 1797 images (for tests).
        seed: seed of the data split, of training and of stochastic rounding.
        console: where to print (default: a new rich console on stdout).
        progress: show a progress bar while rounding.

    Returns:
        The rows of the table, the fp32 test accuracy, the written files and the run time.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.perf_counter()
    console = console or Console(highlight=False, markup=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = load_digits_data(quick, seed)
    steps = 100 if quick else 200
    t_train = time.perf_counter()
    params = train_mlp(data["xtr"], data["ytr"], steps, seed)
    t_train = time.perf_counter() - t_train
    fp32_acc = accuracy(params, data["xte"], data["yte"])
    acts = hidden(params, data["xte"])
    n_w = sum(p.size for p in params.values())
    description = (
        f"Data: scikit-learn digits, {len(data['x'])} real 8×8 grey images of handwritten "
        f"digits; pixels 0..16 scaled to [0, 1] (so every pixel is k/16: formats with at "
        f"least 4 significant bits hold them exactly). pixels: {data['pixels'].size} values "
        f"({len(data['pixels'])} images). Model: MLP 64-64-10 (ReLU) trained with torch, Adam, "
        f"{steps} full-batch steps on {len(data['xtr'])} images ({t_train:.1f} s); fp32 test "
        f"accuracy {fp32_acc:.4f} on {len(data['xte'])} held-out images. weights: all "
        f"{n_w} parameters (weights and biases, each tensor rounded on its own). activations: "
        f"the {acts.size} hidden ReLU outputs on the test images. sr uses seed {seed} "
        f"(counter-based: rerunning gives the same draws). relRMS = ||q(x) - x|| / ||x||."
    )
    console.print(description)

    tensors = {"pixels": data["pixels"], "activations": acts}
    rows = [
        DemoRow(
            "fp32 (reference)",
            "—",
            {t: Metrics(0.0, 0.0, 0.0) for t in TENSORS},
            fp32_acc,
            "unrounded model",
        )
    ]
    combos = [(f, m) for f in FORMATS for m in MODES]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not progress,
    ) as bar:
        task = bar.add_task("rounding", total=len(combos))
        for fmt, mode in combos:
            bar.update(task, description=f"{fmt.label:>18} {mode:<4}")
            row = DemoRow(fmt.label, mode, note=fmt.note)
            try:
                for i, (name, x) in enumerate(tensors.items()):
                    row.metrics[name] = metrics(x, quantize(x, fmt, mode, seed + 1000 * i))
                q_params = {
                    k: quantize(v, fmt, mode, seed + 2000 + 10 * j)
                    for j, (k, v) in enumerate(params.items())
                }
                w = np.concatenate([v.ravel() for v in params.values()])
                qw = np.concatenate([v.ravel() for v in q_params.values()])
                row.metrics["weights"] = metrics(w, qw)
                if all(np.all(np.isfinite(v)) for v in q_params.values()):
                    row.test_acc = accuracy(q_params, data["xte"], data["yte"])
                else:
                    row.note = "; ".join(s for s in (row.note, "NaN in rounded weights") if s)
            except NotAvailable as e:
                row.metrics.clear()
                row.note = f"n/a: {e}"
            rows.append(row)
            bar.advance(task)

    table = Table(title="lowbit demo: rounding errors per format and mode", title_justify="left")
    table.add_column("format", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    for _, head, _ in _columns():
        table.add_column(head, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r.format, r.mode, *[_fmt(_value(r, k), kind) for k, _, kind in _columns()])
    console.print(table)
    notes = [
        f"{r.format} {r.mode}: {r.note}"
        for r in rows
        if r.note.startswith("n/a") or "NaN" in r.note
    ]
    for n in notes:
        console.print(n)

    files = {"csv": out / "results.csv", "markdown": out / "results.md", "plot": out / "errors.png"}
    _write_csv(rows, files["csv"])
    _write_markdown(rows, files["markdown"], description)
    _plot(rows, fp32_acc, files["plot"])
    seconds = time.perf_counter() - t0
    console.print(f"wrote {files['csv']}, {files['markdown']}, {files['plot']} in {seconds:.1f} s")
    return DemoResult(rows, fp32_acc, files, seconds, description)


__all__ = ["FORMATS", "MODES", "DemoResult", "DemoRow", "Metrics", "quantize", "run_demo"]
