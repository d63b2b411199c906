"""Experiment (b): full low-precision training of a ResNet-style model on Fashion-MNIST.

Trains ``resnet-small`` (lowbit.models) with every tensor of the training step in a chosen
format and compares the test accuracy per epoch and the time per epoch:

* compute in fp32, in bf16 (weights, activations, error signals and weight gradients rounded
  to bf16) and in fp8 (``QuantConfig.from_recipe("fp8")``: e4m3 weights and activations
  forward, e5m2 gradients backward; with dynamic loss scaling, ``lowbit.amp.LossScaler``);
* each with the optimizer storing the weights in bf16 (``LowPrecisionAdamW(weight_fmt="bf16",
  master_weights=False)``, fp32 moments) and rounding the update with RNE or with SR;
* the fp32 reference: fp32 compute and ``torch.optim.AdamW`` on fp32 weights;
* a small-learning-rate group (fp32 compute; fp32 weights vs bf16 weights with RNE vs SR)
  that shows the known stall of RNE: an update smaller than half an ulp of a bf16 weight is
  rounded away, so the weight never moves, while SR moves it by the right amount on average.
  The column "weights moved %" counts the parameter elements that differ from their initial
  (bf16-rounded) value at the end.

Every run is a ``lowbit.train.TrainConfig`` built with ``lowbit.train``'s builders and trained
with ``lowbit.train.fit``. Writes ``low_precision_training.md`` (tables, settings, command)
and ``low_precision_training.png`` (test accuracy per epoch) to ``--out``.

Usage::

    python experiments/low_precision_training.py            # ~15-20 min on 1-2 cores
    python experiments/low_precision_training.py --quick    # smoke test: digits, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import lowbit as lb
from lowbit.data import load_dataset, make_loader
from lowbit.models import build_model
from lowbit.train import (
    History,
    TrainConfig,
    build_optimizer,
    build_scaler,
    fit,
    markdown_table,
    quantize_model,
)


def compute_config(kind: str) -> Any:
    """The QuantConfig of a compute precision: None (fp32), "bf16" or "fp8"."""
    from lowbit.nn import QuantConfig

    if kind == "fp32":
        return None
    if kind == "bf16":
        return QuantConfig(weight="bf16", act="bf16", grad_act="bf16", grad_weight="bf16")
    if kind == "fp8":
        return QuantConfig.from_recipe("fp8")
    raise ValueError(f"unknown compute precision {kind!r}; accepted: fp32, bf16, fp8")


LOAD_NOTE = (
    "a shared machine: epoch times vary with the load; benchmarks/bench_nn.py "
    "measures step-time ratios with interleaved steps"
)

COMPUTE_TEXT = {
    "fp32": "fp32",
    "bf16": "bf16 fwd + bwd",
    "fp8": "e4m3 fwd / e5m2 bwd",
}


@dataclass(frozen=True)
class Run:
    """One training run of the experiment."""

    group: str  # "main" or "small lr"
    compute: str  # "fp32", "bf16", "fp8"
    weights: str  # "fp32" or "bf16"
    update: str  # "rne" or "sr"
    lr: float

    @property
    def label(self) -> str:
        w = (
            "fp32 weights (AdamW)"
            if self.weights == "fp32"
            else f"bf16 weights {self.update.upper()}"
        )
        lr = f", lr {self.lr:g}" if self.group != "main" else ""
        return f"{self.compute} compute, {w}{lr}"


def plan(lr: float, small_lr: float, with_small: bool) -> list[Run]:
    """The runs: 7 at ``lr`` and (optionally) 3 at ``small_lr``."""
    runs = [Run("main", "fp32", "fp32", "rne", lr)]
    for compute in ("fp32", "bf16", "fp8"):
        for update in ("rne", "sr"):
            runs.append(Run("main", compute, "bf16", update, lr))
    if with_small:
        runs += [
            Run("small lr", "fp32", "fp32", "rne", small_lr),
            Run("small lr", "fp32", "bf16", "rne", small_lr),
            Run("small lr", "fp32", "bf16", "sr", small_lr),
        ]
    return runs


def moved_fraction(model: torch.nn.Module, initial: list[torch.Tensor]) -> float:
    """Fraction of parameter elements that differ from their value before training."""
    changed = total = 0
    for p, p0 in zip(model.parameters(), initial, strict=True):
        changed += int((p.detach() != p0).sum())
        total += p.numel()
    return changed / total


def train_one(run: Run, args: argparse.Namespace, splits: Any) -> tuple[History, float, Any, Any]:
    """Train one run; (history, fraction of weights moved, its TrainConfig, loss scaler)."""
    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        data_dir=args.data_dir,
        subset=args.subset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=run.lr,
        optimizer="adamw",
        weight_fmt=run.weights,
        state_fmt="fp32",
        update_mode=run.update,
        loss_scaling="dynamic" if run.compute == "fp8" else "none",
        seed=args.seed,
        quant=compute_config(run.compute),
    )
    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model,
        in_channels=splits.in_channels,
        num_classes=splits.num_classes,
        image_size=splits.image_size,
    )
    quantize_model(model, cfg)
    opt = build_optimizer(model.parameters(), cfg)  # puts bf16 weights on their grid first
    initial = [p.detach().clone() for p in model.parameters()]
    scaler = build_scaler(cfg)
    train_loader = make_loader(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_loader = make_loader(splits.test, 1000, shuffle=False)
    # main group: cosine decay to 0 over all steps (a calm last epoch to compare); the small-lr
    # group keeps its constant rate, the regime where RNE-rounded bf16 updates vanish
    sched = None
    if run.group == "main":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=cfg.epochs * len(train_loader)
        )
    hist = fit(
        model,
        train_loader,
        test_loader,
        optimizer=opt,
        epochs=cfg.epochs,
        scaler=scaler,
        progress=not args.no_progress,
        label=run.label,
        scheduler=sched,
    )
    return hist, moved_fraction(model, initial), cfg, scaler


def observations(results: list[tuple[Run, History, float]], scales: dict[Run, float]) -> str:
    """Bullet points computed from the results: RNE vs SR, the stall, the cost of emulation."""
    by = {r: (h, moved) for r, h, moved in results}
    lines = []
    for g in ("main", "small lr"):
        for compute in ("fp32", "bf16", "fp8"):
            pair = [
                next(
                    (
                        (r, *by[r])
                        for r in by
                        if (r.group, r.compute, r.weights, r.update) == (g, compute, "bf16", u)
                    ),
                    None,
                )
                for u in ("rne", "sr")
            ]
            if None in pair:
                continue
            (r1, h1, m1), (_, h2, m2) = pair  # type: ignore[misc]
            lines.append(
                f"- {g}, {COMPUTE_TEXT[compute]} compute, lr {r1.lr:g}: bf16 weights with RNE "
                f"{100 * h1.final_test_acc:.2f}% ({100 * m1:.1f}% of the weights moved), with "
                f"SR {100 * h2.final_test_acc:.2f}% ({100 * m2:.1f}% moved): SR "
                f"{100 * (h2.final_test_acc - h1.final_test_acc):+.2f} pp."
            )
    ref = next((h for r, h, _ in results if (r.group, r.weights) == ("main", "fp32")), None)
    if ref is not None:
        for compute in ("bf16", "fp8"):
            hs = [h for r, h, _ in results if r.group == "main" and r.compute == compute]
            if hs:
                ratio = sum(h.mean_epoch_seconds for h in hs) / len(hs) / ref.mean_epoch_seconds
                lines.append(
                    f"- Emulating {COMPUTE_TEXT[compute]} costs {ratio:.2f}x the fp32 "
                    "epoch time here."
                )
    if scales:
        skipped = sum(sum(by[r][0].skipped_steps) for r in scales)
        lines.append(
            f"- Loss scaling (fp8 runs): the scaler skipped {skipped} step(s) in total, final "
            f"scales {', '.join(f'{v:g}' for v in scales.values())}. The 8-bit casts saturate "
            "(QuantConfig's default overflow for formats of at most 8 bits), so an overflow "
            "in the backward pass is clipped to ±57344 rather than reported to the scaler."
        )
    return "\n".join(lines)


def plot(results: list[tuple[Run, History, float]], path: Path, title: str) -> None:
    """Test accuracy per epoch: main runs on the left, small-lr runs on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = [g for g in ("main", "small lr") if any(r.group == g for r, _, _ in results)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 4.4), squeeze=False)
    colors = {"fp32": "tab:blue", "bf16": "tab:green", "fp8": "tab:red"}
    try:
        for ax, g in zip(axes[0], groups, strict=True):
            for run, h, _ in results:
                if run.group != g:
                    continue
                style = ":" if run.weights == "fp32" else ("-" if run.update == "sr" else "--")
                color = "black" if run.weights == "fp32" else colors[run.compute]
                ax.plot(
                    h.epoch,
                    [100 * a for a in h.test_acc],
                    style,
                    marker="o",
                    ms=3,
                    color=color,
                    label=run.label,
                )
            lr = next(r.lr for r, _, _ in results if r.group == g)
            ax.set_title(
                f"{title}\n({g}: lr {lr:g})" if g != "main" else f"{title}\n(lr {lr:g})", fontsize=9
            )
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fashion-mnist", help="data set (default fashion-mnist)")
    ap.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    ap.add_argument("--model", default="resnet-small", help="model (default resnet-small)")
    ap.add_argument(
        "--subset",
        type=int,
        default=10000,
        help="train on the first N of a seeded shuffle (default 10000; 0: all)",
    )
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run (default 4)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    ap.add_argument(
        "--small-lr",
        type=float,
        default=1e-4,
        help="learning rate of the RNE-stall group (default 1e-4)",
    )
    ap.add_argument("--no-small-lr", action="store_true", help="skip the small-lr group")
    ap.add_argument(
        "--only", default=None, help="comma-separated compute precisions to run (fp32,bf16,fp8)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--out",
        default=None,
        help="output folder (default docs/results; --quick: a temporary folder)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: digits, 1 epoch, results to a temporary folder",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.data, args.epochs, args.subset = "digits", 1, None
    if args.subset == 0:
        args.subset = None
    out = Path(
        args.out or (Path(tempfile.gettempdir()) / "lowbit-quick" if args.quick else "docs/results")
    )
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load0 = f"{_load():.2f}"

    splits = load_dataset(args.data, args.data_dir, subset=args.subset, seed=args.seed)
    runs = plan(args.lr, args.small_lr, not args.no_small_lr)
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r.compute in keep]
    results: list[tuple[Run, History, float]] = []
    scales: dict[Run, float] = {}
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run.label}", flush=True)
        hist, moved, _, scaler = train_one(run, args, splits)
        if scaler is not None:
            scales[run] = scaler.loss_scale
        print(
            f"    test acc per epoch {[round(100 * a, 2) for a in hist.test_acc]}, "
            f"{hist.mean_epoch_seconds:.1f} s/epoch, weights moved {100 * moved:.1f}%, "
            f"skipped steps {sum(hist.skipped_steps)}",
            flush=True,
        )
        results.append((run, hist, moved))

    base = {g: h.final_test_acc for r, h, _ in results if r.weights == "fp32" for g in [r.group]}
    table = []
    for run, h, moved in results:
        ref = base.get(run.group)
        table.append(
            {
                "group": run.group,
                "compute (fwd / bwd)": COMPUTE_TEXT[run.compute],
                "weights, update": "fp32, AdamW"
                if run.weights == "fp32"
                else f"bf16, {run.update.upper()}",
                "loss scale (final)": f"dynamic ({scales[run]:g})" if run in scales else "—",
                "lr": f"{run.lr:g}",
                "final test acc %": f"{100 * h.final_test_acc:.2f}",
                "Δ vs fp32 (pp)": "—" if ref is None else f"{100 * (h.final_test_acc - ref):+.2f}",
                "best %": f"{100 * h.best_test_acc:.2f}",
                "weights moved %": f"{100 * moved:.1f}",
                "s / epoch": f"{h.mean_epoch_seconds:.1f}",
                "× fp32 time": f"{h.mean_epoch_seconds / results[0][1].mean_epoch_seconds:.2f}",
                "skipped steps": str(sum(h.skipped_steps)),
            }
        )
    per_epoch = [
        {
            "run": f"{r.label}",
            **{f"epoch {e}": f"{100 * a:.2f}" for e, a in zip(h.epoch, h.test_acc, strict=True)},
        }
        for r, h, _ in results
    ]
    md_main = markdown_table(table)
    notes = observations(results, scales)
    print(md_main)

    title = f"Low-precision training of {args.model} on {splits.name}"
    plot_path = out / "low_precision_training.png"
    plot(results, plot_path, title)
    cmd = "python experiments/low_precision_training.py" + (
        " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    total_s = time.perf_counter() - t_start
    n_params = sum(
        p.numel()
        for p in build_model(
            args.model,
            in_channels=splits.in_channels,
            num_classes=splits.num_classes,
            image_size=splits.image_size,
        ).parameters()
    )
    subset_text = (
        f"the first {len(splits.train)} of a seed-{args.seed} shuffle of the training set"
        if args.subset
        else f"all {len(splits.train)} training images"
    )
    quant_text = {
        k: "none" if compute_config(k) is None else compute_config(k).to_json()
        for k in COMPUTE_TEXT
        if any(r.compute == k for r, _, _ in results)
    }
    opt_text = (
        f"AdamW, lr {args.lr:g} with cosine decay to 0 over the steps (small-lr group: "
        f"constant {args.small_lr:g}), weight decay 0, batch {args.batch_size}, "
        f"{args.epochs} epoch(s)"
    )
    machine = (
        f"{_cpu_name()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
        f"torch {torch.__version__}, lowbit {lb.__version__}"
    )
    text = f"""# {title}

Full low-precision training with lowbit: every tensor of the training step in its own format
(`lowbit.nn.quantize_` with a `QuantConfig`), the weights stored by the optimizer in bf16 with
the update rounded by RNE or by stochastic rounding (`lowbit.optim.LowPrecisionAdamW`,
`weight_fmt="bf16"`, `master_weights=False`, fp32 moments), dynamic loss scaling for the fp8
runs (`lowbit.amp.LossScaler`). The fp32 row of each group is the reference (fp32 compute,
`torch.optim.AdamW` on fp32 weights). Each run trains on {subset_text} for {args.epochs}
epoch(s) (a reduced budget, so the accuracies are below those of full training) and is
evaluated on all {len(splits.test)} test images (one image = {100 / len(splits.test):.2f} pp).
"weights moved %" is the share of parameter elements that differ from their initial value at
the end; "s / epoch" is the training time of one epoch (evaluation excluded), "× fp32 time"
its ratio to the first row's.

{md_main}
{notes}

Test accuracy (%) after each epoch:

{markdown_table(per_epoch)}
![accuracy per epoch](low_precision_training.png)

## Settings

| | |
|---|---|
| model | `{args.model}` (lowbit.models), {n_params} parameters |
| data | {splits.name}: {len(splits.train)} train / {len(splits.test)} test images |
| optimizer | {opt_text} |
| seed | {args.seed} (initialisation, shuffling, stochastic rounding) |
| QuantConfig per compute precision | {"; ".join(f"{k}: `{v}`" for k, v in quant_text.items())} |
| machine | {machine} |
| wall time of the whole experiment | {total_s / 60:.1f} min |
| load average (1 min) at start / end | {load0} / {_load():.2f} ({LOAD_NOTE}) |

Reproduce: `{cmd}`
"""
    md_path = out / "low_precision_training.md"
    md_path.write_text(text, encoding="utf-8")
    print(f"wrote {md_path} and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
