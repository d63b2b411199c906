"""Mixed-precision deployment search: layer sensitivities → scores → ILP sweep → Pareto front.

Two scores of layer ``l`` at width ``b`` (higher is better). ``sensitivity="hessian"`` (the
paper's HASB score, the default)::

    score(l, b) = −t_l · ‖Ŵ_b − Ŵ_h‖²

the second-order estimate of the loss increase (``½ tr(H_l)/n_l · ‖ΔW‖²`` up to the factor ½)
when the layer drops from the stored width ``h`` to ``b``; ``Ŵ`` are the dequantized weights
obtained by the integer switch of the stored codes, so the search needs nothing but the int8
model. ``t_l`` below 0.1 % of the largest is raised to that floor, so that a layer with a flat
or noisy (negative) estimate still prefers more bits to fewer. It sees the weights only,
although a width applies to the layer's input activations as well.

``sensitivity="loss"`` measures instead what the Hessian score estimates::

    score(l, b) = −L(layer l at b, every other layer at h)

the mean training loss over a few fixed batches of ``train_loader`` with the transitional
BatchNorm statistics recalibrated for that configuration, so weights, activations and
BatchNorm all count and nothing is assumed small. It costs ``layers × widths`` short
evaluations and no second derivatives. Only differences within a layer matter to the ILP.

Each searched configuration is evaluated after :func:`recalibrate_bn` (transitional BatchNorm
statistics), next to the uniform-width models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowbit.methods.double_rounding.convert import (
    dr_layers,
    get_bits,
    layer_params,
    model_widths,
    set_bits,
)
from lowbit.methods.double_rounding.evaluate import evaluate, recalibrate_bn
from lowbit.methods.double_rounding.hasb import layer_traces
from lowbit.methods.double_rounding.ilp import MixedPrecisionSolution, sweep
from lowbit.methods.double_rounding.quantizer import dequantize


def quantization_errors(
    model: nn.Module, bits: Sequence[int] | None = None
) -> dict[str, dict[int, float]]:
    """``‖Ŵ_b − Ŵ_h‖²`` of every switchable layer at every width (Double Rounding switch)."""
    widths = tuple(bits) if bits is not None else model_widths(model)
    out: dict[str, dict[int, float]] = {}
    for n, m in dr_layers(model).items():
        h = m.weight_quant.h
        s = m.weight_quant.step_scale()
        ref = dequantize(m.int_weight(h, "round"), s, 0).double()
        out[n] = {
            b: float(((dequantize(m.int_weight(b, "round"), s, h - b).double() - ref) ** 2).sum())
            for b in widths
        }
    return out


def layer_scores(
    traces: dict[str, float], errors: dict[str, dict[int, float]]
) -> dict[str, dict[int, float]]:
    """``score(l, b) = −max(t_l, floor) · err(l, b)`` (see the module docstring)."""
    if set(traces) != set(errors):
        raise ValueError(
            f"traces and errors name different layers: {sorted(traces)} vs {sorted(errors)}"
        )
    top = max(traces.values())
    floor = 1e-3 * top if top > 0 else 1.0
    return {n: {b: -max(traces[n], floor) * e for b, e in errors[n].items()} for n in errors}


@torch.no_grad()
def measured_scores(
    model: nn.Module,
    loader: Iterable,
    bits: Sequence[int] | None = None,
    *,
    n_batches: int = 4,
    calib_batches: int = 8,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    progress: bool = False,
) -> dict[str, dict[int, float]]:
    """``score(l, b) = −L(l at b, the rest at h)``: measured loss sensitivity of every layer.

    The first ``calib_batches`` batches of ``loader`` recalibrate the transitional BatchNorm
    statistics of each one-layer-switched configuration and the next ``n_batches`` measure its
    mean loss (eval mode). The batches are drawn once, so every configuration sees the same
    ones. The model's widths and mode are restored.
    """
    from tqdm.auto import tqdm

    layers = dr_layers(model)
    if not layers:
        raise ValueError("model has no switchable layer; convert it first")
    widths = tuple(bits) if bits is not None else model_widths(model)
    h = max(model_widths(model))
    if n_batches < 1 or calib_batches < 0:
        raise ValueError(
            f"n_batches={n_batches}, calib_batches={calib_batches}; accepted: n_batches >= 1, "
            "calib_batches >= 0"
        )
    batches = []
    for i, batch in enumerate(loader):
        if i >= calib_batches + n_batches:
            break
        batches.append(batch)
    if len(batches) <= calib_batches:
        raise ValueError(
            f"loader gave {len(batches)} batches; need more than calib_batches={calib_batches}"
        )
    calib, measure = batches[:calib_batches], batches[calib_batches:]
    device = next(model.parameters()).device
    saved, was_training = get_bits(model), model.training
    out: dict[str, dict[int, float]] = {n: {} for n in layers}
    jobs = [(n, b) for n in layers for b in widths]
    try:
        for n, b in tqdm(jobs, desc="layer sensitivities", disable=not progress, leave=False):
            config = dict.fromkeys(layers, h)
            config[n] = b
            set_bits(model, config)
            recalibrate_bn(model, calib, n_batches=calib_batches)
            model.eval()
            total = count = 0.0
            for x, y in measure:
                logits = model(x.to(device))
                total += float(loss_fn(logits, y.to(device))) * int(y.numel())
                count += int(y.numel())
            out[n][b] = -total / count
    finally:
        set_bits(model, saved)
        model.train(was_training)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(mean_bits, accuracy)`` that no other point dominates (fewer or
    equal bits and higher or equal accuracy, one of them strictly), by increasing bits."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -np.inf
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


@dataclass
class SearchResult:
    """Outcome of :func:`search`.

    Attributes:
        traces: HASB sensitivities ``t_l``.
        scores: ``score(l, b)``.
        solutions: the ILP solutions of the sweep (distinct configurations).
        points: one dict per evaluated configuration (``kind`` "ilp" or "uniform",
            ``mean_bits``, ``accuracy``, ``target``, ``config``).
        front: indices into ``points`` of the Pareto front.
        seconds: wall time.
        plot_path: the plot written, if any.
    """

    traces: dict[str, float]
    scores: dict[str, dict[int, float]]
    solutions: list[MixedPrecisionSolution]
    points: list[dict[str, Any]]
    front: list[int]
    seconds: float
    plot_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """Rows ``kind, target, mean_bits, accuracy, on_front`` sorted by mean bits."""
        on = set(self.front)
        rows = [
            {
                "kind": p["kind"],
                "target": p["target"],
                "mean_bits": p["mean_bits"],
                "accuracy": p["accuracy"],
                "on_front": i in on,
            }
            for i, p in enumerate(self.points)
        ]
        return sorted(rows, key=lambda r: (r["mean_bits"], r["kind"]))


def search(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    *,
    bits: Sequence[int] | None = None,
    targets: Iterable[float] | None = None,
    traces: dict[str, float] | None = None,
    trace_batches: int = 2,
    n_probes: int = 8,
    calib_batches: int = 8,
    seed: int = 0,
    sensitivity: str = "hessian",
    loss_batches: int = 4,
    progress: bool = True,
    plot: str | Path | None = None,
    title: str | None = None,
) -> SearchResult:
    """Layer sensitivities + ILP mixed-precision search and its evaluation.

    Args:
        model: a trained (or loaded) Double Rounding model.
        train_loader: batches for the Hessian traces and the BatchNorm recalibration.
        test_loader: batches for the accuracies.
        bits: candidate widths (default: the model's).
        targets: mean-bits targets (default ``min(bits)…max(bits)`` by 0.25).
        traces: precomputed ``t_l`` (skips the Hutchinson estimate).
        trace_batches, n_probes: Hutchinson batches and probes.
        calib_batches: batches for the transitional BatchNorm statistics of each config.
        seed: seed of the probes.
        sensitivity: "hessian" (HASB traces × weight error, the paper's score) or "loss"
            (measured loss with one layer switched, :func:`measured_scores`).
        loss_batches: batches measuring each loss when ``sensitivity="loss"``.
        progress: tqdm bar over the configurations.
        plot: write the accuracy-vs-mean-bits plot there.
        title: plot title.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    widths = tuple(sorted(bits if bits is not None else model_widths(model), reverse=True))
    saved = get_bits(model)
    if sensitivity not in ("hessian", "loss"):
        raise ValueError(f"sensitivity={sensitivity!r}; accepted: 'hessian', 'loss'")
    if sensitivity == "hessian":
        if traces is None:
            traces = layer_traces(
                model, train_loader, n_batches=trace_batches, n_probes=n_probes, seed=seed
            )
        scores = layer_scores(traces, quantization_errors(model, widths))
    else:
        traces = traces or {}
        scores = measured_scores(
            model,
            train_loader,
            widths,
            n_batches=loss_batches,
            calib_batches=calib_batches,
            progress=progress,
        )
    params = layer_params(model)
    solutions = sweep(scores, params, widths, targets)
    points: list[dict[str, Any]] = []
    try:
        for b in tqdm(widths, desc="uniform widths", disable=not progress, leave=False):
            points.append(
                {
                    "kind": "uniform",
                    "target": float(b),
                    "mean_bits": float(b),
                    "accuracy": evaluate(model, test_loader, bits=b),
                    "config": b,
                }
            )
        for sol in tqdm(solutions, desc="ILP configurations", disable=not progress, leave=False):
            set_bits(model, sol.config)
            recalibrate_bn(model, train_loader, n_batches=calib_batches)
            points.append(
                {
                    "kind": "ilp",
                    "target": sol.target,
                    "mean_bits": sol.mean_bits,
                    "accuracy": evaluate(model, test_loader),
                    "config": sol.config,
                }
            )
    finally:
        set_bits(model, saved)
    front = pareto_front([(p["mean_bits"], p["accuracy"]) for p in points])
    res = SearchResult(
        traces=traces,
        scores=scores,
        solutions=solutions,
        points=points,
        front=front,
        seconds=time.perf_counter() - t0,
        meta={"bits": list(widths), "sensitivity": sensitivity},
    )
    if plot is not None:
        res.plot_path = plot_search(res, plot, title=title)
    return res


def plot_search(result: SearchResult, path: str | Path, *, title: str | None = None) -> Path:
    """Accuracy vs mean bits: the ILP configurations, their Pareto front and the uniform
    widths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ilp = [p for p in result.points if p["kind"] == "ilp"]
    uni = [p for p in result.points if p["kind"] == "uniform"]
    ax.scatter(
        [p["mean_bits"] for p in ilp],
        [100 * p["accuracy"] for p in ilp],
        s=18,
        color="tab:blue",
        alpha=0.6,
        label="ILP configurations ("
        + ("measured loss scores" if result.meta.get("sensitivity") == "loss" else "HASB scores")
        + ")",
    )
    front = [result.points[i] for i in result.front]
    ax.plot(
        [p["mean_bits"] for p in front],
        [100 * p["accuracy"] for p in front],
        "-",
        color="tab:blue",
        lw=1.2,
        label="Pareto front",
    )
    ax.scatter(
        [p["mean_bits"] for p in uni],
        [100 * p["accuracy"] for p in uni],
        s=60,
        marker="s",
        color="tab:red",
        label="uniform widths",
        zorder=3,
    )
    ax.set_xlabel("mean weight bits (parameter-weighted, switchable layers)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Double Rounding: mixed-precision search")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
