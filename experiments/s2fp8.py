"""S2FP8 on Fashion-MNIST: shifted-and-squeezed FP8 vs plain FP8 vs FP32 training.

Cambier et al. (ICLR 2020) train every GEMM input — weights, activations and back-propagated
errors — in their S2FP8 format (e5m2 values plus a per-tensor shift and squeeze recomputed
every step), with FP32 accumulation and FP32 master weights, no loss scaling and no layer
left out, and report accuracy within about half a point of FP32 (CIFAR-10 ResNet-20 ~91.5 vs
~91.1) while the same tensors in plain FP8 (1-5-2, no loss scaling) fail (~18).

Here, for each seed, ``resnet-small`` (3 stages of one BasicBlock, widths 16/32/64) is trained
from the same initialisation three times:

* ``fp32``: the float model;
* ``s2fp8``: ``lowbit.methods.s2fp8.s2fp8_training()`` — S2FP8 e5m2 weights, activations and
  output gradients of every Conv/Linear layer (BatchNorm stays FP32), float32 matmuls;
* ``fp8``: ``fp8_training_no_scaling()`` — the same tensors cast to plain e5m2 (RNE), no
  scaling, no loss scaling.

Besides accuracy it records, on the first batch at initialisation, the fraction of each
layer's non-zero output gradients that e5m2 without scaling flushes to zero, and the same
for S2FP8 — the mechanism behind the paper's claim.

Writes ``docs/results/s2fp8.md``, ``s2fp8.png`` and ``s2fp8.json``. Default size: 6000
training images (a fixed subset), the first 2000 test images, 5 epochs, 3 seeds; about 12
CPU-minutes on one core (38 minutes of wall time on a 2-core machine shared with other jobs).
``--quick`` is a < 1 minute smoke run; ``--report-only`` rewrites the report from the JSON.

Reproduce: ``python experiments/s2fp8.py --no-progress``
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lowbit as lb
import lowbit.nn as lnn
from lowbit.blocks.s2fp8 import s2fp8_round
from lowbit.dr_demo import build, load_data, loaders
from lowbit.methods.s2fp8 import PAPER_RESULTS, fp8_training_no_scaling, s2fp8_training
from lowbit.train import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("fp32", "s2fp8", "fp8")
LABELS = {"fp32": "FP32", "s2fp8": "S2FP8 (e5m2)", "fp8": "plain FP8 (e5m2, no scaling)"}


@dataclass(frozen=True)
class Settings:
    """Sizes of the run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    train_subset: int | None = 6000
    test_subset: int | None = 2000
    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    widths: tuple[int, ...] = (16, 32, 64)


QUICK = Settings(seeds=(0,), train_subset=384, test_subset=256, epochs=1, widths=(8, 8, 8))


def config(name: str) -> lnn.QuantConfig | None:
    if name == "fp32":
        return None
    return s2fp8_training() if name == "s2fp8" else fp8_training_no_scaling()


def train_one(
    name: str, init: nn.Module, data: tuple[Any, Any], st: Settings, seed: int, progress: bool
) -> dict[str, Any]:
    """Train a copy of ``init`` under config ``name``; its history and final accuracy."""
    model = copy.deepcopy(init)
    cfg = config(name)
    if cfg is not None:
        lnn.quantize_(model, cfg)
    train_loader, test_loader = data
    opt = torch.optim.SGD(
        model.parameters(), lr=st.lr, momentum=st.momentum, weight_decay=st.weight_decay
    )
    steps = st.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    torch.manual_seed(seed)
    hist = fit(
        model,
        train_loader,
        test_loader,
        optimizer=opt,
        epochs=st.epochs,
        progress=progress,
        label=f"{name} seed {seed}",
        scheduler=sched,
    )
    return {
        "test_acc": list(hist.test_acc),
        "train_loss": list(hist.train_loss),
        "final": hist.final_test_acc,
        "seconds": float(sum(hist.seconds)),
        "eval_seconds": float(sum(hist.eval_seconds)),
    }


def gradient_underflow(
    init: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> list[dict[str, Any]]:
    """Per Conv/Linear layer: the output gradient's log2 range and the fraction of its
    non-zero entries that plain e5m2 and S2FP8 round to zero (fp32 model, first batch)."""
    model = copy.deepcopy(init)
    grads: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):

            def hook(mod: nn.Module, inp: Any, out: torch.Tensor, name: str = name) -> None:
                out.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))

            handles.append(m.register_forward_hook(hook))
    x, t = batch
    F.cross_entropy(model(x), t).backward()
    for h in handles:
        h.remove()
    rows = []
    for name, g in grads.items():
        nz = g != 0
        n = int(nz.sum())
        lg = torch.log2(g[nz].abs())
        plain = lb.round(g, "e5m2", "rne")
        s2 = s2fp8_round(g)
        rows.append(
            {
                "layer": name,
                "n": n,
                "log2_min": float(lg.min()),
                "log2_median": float(lg.median()),
                "log2_max": float(lg.max()),
                "lost_fp8": float(((plain == 0) & nz).sum()) / max(n, 1),
                "lost_s2fp8": float(((s2 == 0) & nz).sum()) / max(n, 1),
            }
        )
    return rows


def summary(values: list[float]) -> dict[str, float]:
    v = [100 * x for x in values]
    return {
        "mean": statistics.fmean(v),
        "std": statistics.stdev(v) if len(v) > 1 else 0.0,
        "min": min(v),
        "max": max(v),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"fp32": "tab:blue", "s2fp8": "tab:green", "fp8": "tab:red"}
    for name in CONFIGS:
        curves = np.array([[100 * a for a in s[name]["test_acc"]] for s in results["seeds"]])
        ep = np.arange(1, curves.shape[1] + 1)
        for c in curves:
            ax1.plot(ep, c, color=colors[name], alpha=0.25, lw=1)
        ax1.plot(ep, curves.mean(0), color=colors[name], lw=2, marker="o", label=LABELS[name])
        ax1.set_xticks(ep)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("resnet-small, Fashion-MNIST subset")
    ax1.legend()
    ax1.grid(alpha=0.3)
    rows = results["underflow"]
    idx = np.arange(len(rows))
    ax2.bar(
        idx - 0.2, [100 * r["lost_fp8"] for r in rows], 0.4, color="tab:red", label="plain e5m2"
    )
    ax2.bar(idx + 0.2, [100 * r["lost_s2fp8"] for r in rows], 0.4, color="tab:green", label="S2FP8")
    ax2.set_xticks(idx, [r["layer"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax2.set_ylabel("non-zero output gradients rounded to 0 (%)")
    ax2.set_title("gradient underflow, first batch at init")
    ax2.legend()
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict[str, Any], st: Settings, out: Path, png: Path) -> Path:
    agg = results["aggregate"]
    paper = PAPER_RESULTS["cifar10_resnet20"]
    lines = [
        "# S2FP8: shifted and squeezed FP8 training",
        "",
        "Cambier et al., *Shifted and Squeezed 8-bit Floating Point Format for Low-Precision "
        "Training of Deep Neural Networks*, ICLR 2020 (arXiv 2001.05674). Reproduce with "
        "`python experiments/s2fp8.py --no-progress`.",
        "",
        f"Setup: `resnet-small` (widths {'/'.join(map(str, st.widths))}, one BasicBlock per "
        f"stage) on Fashion-MNIST — {st.train_subset or 60000} training images (fixed subset), "
        f"the first {st.test_subset or 10000} test images; {st.epochs} epochs of SGD "
        f"(lr {st.lr}, momentum {st.momentum}, weight decay {st.weight_decay}, cosine schedule, "
        f"batch {st.batch_size}); seeds {', '.join(map(str, st.seeds))}, each config starting "
        "from the same initialisation. S2FP8 = `lowbit.methods.s2fp8.s2fp8_training()`: "
        "S2FP8 e5m2 weights, activations and output gradients of every Conv/Linear layer (first "
        "and last included), per-tensor statistics over the non-zero entries every step, "
        "float32 matmuls and weight gradients, FP32 master weights and BatchNorm, no loss "
        "scaling. Plain FP8 = `fp8_training_no_scaling()`: the same tensors rounded to e5m2 "
        "with no scaling and no loss scaling. lowbit's `grad_act` role also rounds the input "
        "gradient each layer passes down (one S2FP8 rounding more than the paper).",
        "",
        "| config | test accuracy (%) mean ± std | per seed | paper, CIFAR-10 ResNet-20 [mem] |",
        "|---|---|---|---|",
    ]
    for name in CONFIGS:
        s = agg[name]
        per = ", ".join(f"{100 * r[name]['final']:.2f}" for r in results["seeds"])
        p = paper[name]
        quoted = f"~{p:.1f}" if p is not None else "—"
        lines.append(f"| {LABELS[name]} | {s['mean']:.2f} ± {s['std']:.2f} | {per} | {quoted} |")
    lines += [
        "",
        f"![accuracy and gradient underflow]({png.name})",
        "",
        "Gradient underflow on the first training batch of the FP32 model at initialisation "
        "(share of each layer's non-zero output-gradient entries that round to zero):",
        "",
        "| layer | log2 |g| min / median / max | plain e5m2 | S2FP8 |",
        "|---|---|---|---|",
    ]
    for r in results["underflow"]:
        lines.append(
            f"| {r['layer']} | {r['log2_min']:.1f} / {r['log2_median']:.1f} / "
            f"{r['log2_max']:.1f} | {100 * r['lost_fp8']:.1f}% | "
            f"{100 * r['lost_s2fp8']:.1f}% |"
        )
    cpu = (
        f"CPU time {results['cpu_seconds'] / 60:.1f} min"
        if "cpu_seconds" in results
        else "CPU time not recorded"
    )
    lines += [
        "",
        f"**Claims.** {results['claims']}",
        "",
        f"Wall time {results['seconds'] / 60:.1f} min ({cpu}) on {results['machine']}, "
        "torch with 1 thread. Paper numbers are recalled values (shared/notes/papers.md "
        "§7, [mem]), quoted beside ours for orientation, not as targets.",
        "",
    ]
    md = out / "s2fp8.md"
    md.write_text("\n".join(lines))
    return md


def claims(agg: dict[str, Any], seeds: list[dict[str, Any]]) -> str:
    gap = agg["fp32"]["mean"] - agg["s2fp8"]["mean"]
    fp8_gap = agg["fp32"]["mean"] - agg["fp8"]["mean"]
    near = gap <= 0.5 + agg["fp32"]["std"] + agg["s2fp8"]["std"]
    where = f"{gap:.2f} points below" if gap >= 0 else f"{-gap:.2f} points above"
    s = (
        f"S2FP8 ended {where} FP32 (paper: ~0.4 below on CIFAR-10 ResNet-20): the 'within "
        f"about half a point of FP32' claim {'held' if near else 'did not hold'} here. "
    )
    if fp8_gap > 5:
        s += (
            f"Plain e5m2 without loss scaling lost {fp8_gap:.1f} points "
            f"({agg['fp8']['mean']:.1f}%): the paper's 'plain FP8 loses badly' held in kind, "
            "though it did not collapse to near chance for the whole run as on CIFAR-10 "
            "ResNet-20 (~18%)"
        )
        half = max(1, len(seeds[0]["fp8"]["test_acc"]) // 2)
        early = statistics.fmean(100 * s["fp8"]["test_acc"][half - 1] for s in seeds)
        early32 = statistics.fmean(100 * s["fp32"]["test_acc"][half - 1] for s in seeds)
        s += (
            f"; after {half} epoch(s) it stood at {early:.1f}% (FP32 {early32:.1f}%) and "
            "caught up partly while the learning rate decayed."
        )
    else:
        s += (
            f"Plain e5m2 without loss scaling lost only {fp8_gap:.2f} points: the paper's "
            "'plain FP8 fails' (~18% on CIFAR-10 ResNet-20) did not reproduce at this scale."
        )
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes, < 1 minute")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the .md and .png from the .json of an earlier run",
    )
    args = p.parse_args(argv)
    st = QUICK if args.quick else Settings()
    if args.seeds:
        st = Settings(**{**asdict(st), "seeds": tuple(int(s) for s in args.seeds.split(","))})
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((out / "s2fp8.json").read_text())
        st = Settings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in results["settings"].items()}
        )
        results["claims"] = claims(results["aggregate"], results["seeds"])
        plot(results, out / "s2fp8.png")
        print(write_report(results, st, out, out / "s2fp8.png").read_text())
        (out / "s2fp8.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        return 0
    t0, c0 = time.perf_counter(), time.process_time()
    splits, _ = load_data("fashion-mnist", args.data_dir, subset=st.train_subset, seed=0)
    seeds: list[dict[str, Any]] = []
    underflow: list[dict[str, Any]] = []
    for seed in st.seeds:
        data = loaders(splits, st.batch_size, seed=seed, test_subset=st.test_subset)
        torch.manual_seed(seed)
        init = build("resnet-small", splits, widths=st.widths)
        if not underflow:
            underflow = gradient_underflow(init, next(iter(data[0])))
        res: dict[str, Any] = {"seed": seed}
        for name in CONFIGS:
            res[name] = train_one(name, init, data, st, seed, progress)
        seeds.append(res)
        print(
            f"seed {seed}: "
            + ", ".join(f"{n} {100 * res[n]['final']:.2f}" for n in CONFIGS)
            + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    agg = {n: summary([s[n]["final"] for s in seeds]) for n in CONFIGS}
    seconds = time.perf_counter() - t0
    results: dict[str, Any] = {
        "seeds": seeds,
        "aggregate": agg,
        "underflow": underflow,
        "settings": asdict(st),
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "paper": PAPER_RESULTS,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    results["claims"] = claims(agg, seeds)
    png = out / "s2fp8.png"
    plot(results, png)
    md = write_report(results, st, out, png)
    (out / "s2fp8.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(md.read_text())
    print(f"wrote {md}, {png} and {out / 's2fp8.json'} in {seconds / 60:.1f} min")
    return 0 if all(math.isfinite(a["mean"]) for a in agg.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
