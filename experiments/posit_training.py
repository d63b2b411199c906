"""PositNN on Fashion-MNIST: LeNet-5 trained in float32, posit<8,0>, posit<16,1> and mixed 8-bit.

Raposo, Tomás & Roma (ICASSP 2021, arXiv 2105.00053) train LeNet-5 on Fashion-MNIST with
every stage of the step in a posit and quire accumulation: float 90.42 % vs posit<8,0>
88.15 %, and their mixed 8-bit recipe (posit<8,2> forward/backward/gradients, posit<16,2>
optimizer and loss) close to float. This script trains the same network with the same
optimizer settings (SGD, lr 1/16, momentum 0.5, batch 64, lr halved on a schedule) for the four
presets of :mod:`lowbit.methods.posit_training` and one ablation, from the same initial
weights within a seed:

* ``float``: float32 throughout (torch's matmuls);
* ``posit8_0``: every stage posit<8,0>, quires;
* ``posit16_1``: every stage posit<16,1>, quires;
* ``mixed8``: PositNN's mixed recipe, quires;
* ``posit8_0+upd16+loss16``: posit<8,0> everywhere except the optimizer (weights and momentum
  in posit<16,2>) and the loss (posit<16,2>) — an ablation: mixed8's layout with posit<8,0>
  (``posit8_0+upd16``, the optimizer alone, runs with ``--recipes``).

The posit models run in float64 containers, so the quire's exact sum is rounded once to
float64 (exactly, for posit<8,0>) before the bias add and the cast to the posit. The emulated
quire GEMMs cost about 0.18 s of CPU per step of 64 images (float32: 0.007 s), so the default
size trains on a 16 000-image subset for 4 epochs (1 000 steps instead of the paper's 9 380)
and evaluates on the full test set; the float recipe is also run with the paper's full
protocol (10 epochs over 60 000 images) to check the setup against the paper's float number.

Seeds (``--seeds``, default 0,1,2) change the initial weights and the batch order; the
training subset is the same for every seed (``Settings.data_seed``). Each seed's raw results
are cached in ``docs/results/posit_training/seed{N}.json`` with its settings, and a seed whose
cache holds the same settings is not rerun (``--force`` reruns it). About 17 minutes of CPU
per seed, on one core (torch and numba one thread each).

Writes ``docs/results/posit_training.md``, ``.png`` and ``.json`` (all seeds aggregated).
``--quick``: a tiny run, written to a temporary folder unless ``--out`` is given.

Reproduce: ``python experiments/posit_training.py --seeds 0,1,2 --no-progress``
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # one core, set before numba is imported; not on import (tests import this module, and
    # changing the variable in a process whose numba threads run breaks numba's next compile)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

import lowbit as lb
from lowbit.data import load_dataset, make_loader
from lowbit.methods import posit_training as pt
from lowbit.models import build_model

ROOT = Path(__file__).resolve().parents[1]
# run name -> posit_training arguments: the four presets, and posit<8,0> everywhere but the
# optimizer (weights and momentum in posit<16,2>), which isolates the update stage
RECIPES: dict[str, dict[str, Any]] = {
    "float": {"forward": "float"},
    "posit8_0": {"forward": "posit8_0"},
    "posit16_1": {"forward": "posit16_1"},
    "mixed8": {"forward": "mixed8"},
    "posit8_0+upd16": {"forward": "posit8_0", "update": "posit16"},
    "posit8_0+upd16+loss16": {"forward": "posit8_0", "update": "posit16", "loss": "posit16"},
}
DEFAULT_RECIPES = ("float", "posit8_0", "posit16_1", "mixed8", "posit8_0+upd16+loss16")

# arXiv 2105.00053 / the authors' summary (shared/notes/papers.md §9): LeNet-5 on
# Fashion-MNIST, 10 epochs over the full training set. Quoted beside ours, never as targets.
PAPER: dict[str, float | None] = {"float": 90.42, "posit8_0": 88.15}
PAPER_NOTE = {
    "float": "90.42",
    "posit8_0": "88.15 (from an AI summary of the paper; configuration not verified)",
    "posit16_1": "not reported for LeNet-5 (16-bit posits ≈ float in the paper's text)",
    "mixed8": "≈ float (abstract: no loss of accuracy; table value not verified)",
    "posit8_0+upd16": "— (our ablation)",
    "posit8_0+upd16+loss16": "— (our ablation: mixed8's layout with posit<8,0>)",
}


@dataclass(frozen=True)
class Settings:
    """Sizes and hyper-parameters of the run (PositNN's: batch 64, lr 1/16, momentum 0.5)."""

    train_subset: int | None = 16000
    test_subset: int | None = None
    epoch_test: int = 1000
    epochs: int = 4
    halve_every: int = 2
    batch_size: int = 64
    lr: float = 1 / 16
    momentum: float = 0.5
    seed: int = 0  # initial weights and batch order
    data_seed: int = 0  # the training subset (the same for every seed)
    recipes: tuple[str, ...] = DEFAULT_RECIPES
    float_reference: bool = True  # also the float recipe under the paper's full protocol


QUICK = Settings(
    train_subset=256,
    test_subset=256,
    epoch_test=128,
    epochs=1,
    halve_every=1,
    float_reference=False,
    recipes=("float", "posit8_0", "mixed8"),
)


def evaluate(model: torch.nn.Module, loader: Any, dtype: torch.dtype) -> float:
    """Test accuracy (the model in eval mode; posit models still round every cast)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x.to(dtype))
            correct += int((out.argmax(dim=1) == y).sum())
            total += len(y)
    model.train()
    return correct / total


def run(
    name: str, st: Settings, splits: Any, progress: bool
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train LeNet-5 with recipe ``name``: (per-epoch accuracy, losses and times; the model)."""
    from tqdm.auto import tqdm

    recipe = pt.posit_training(**RECIPES[name])
    torch.manual_seed(st.seed)
    model = build_model(
        "lenet5", in_channels=splits.in_channels, num_classes=10, image_size=splits.image_size
    )
    dtype = torch.float32 if recipe.is_float else torch.float64
    model = model.to(dtype)
    if not recipe.is_float:
        lb.nn.quantize_(model, recipe.quant_config())
    opt = recipe.optimizer(model.parameters(), lr=st.lr, momentum=st.momentum)
    loss_fn = recipe.loss_fn()
    train_loader = make_loader(splits.train, st.batch_size, shuffle=True, seed=st.seed)
    n_test = len(splits.test) if st.test_subset is None else min(st.test_subset, len(splits.test))
    test_loader = make_loader(Subset(splits.test, range(n_test)), 1000, shuffle=False)
    epoch_loader = make_loader(
        Subset(splits.test, range(min(st.epoch_test, n_test))), 1000, shuffle=False
    )
    out: dict[str, Any] = {
        "recipe": recipe.to_dict(),
        "describe": recipe.describe(),
        "epoch_test_acc": [],
        "train_loss": [],
        "train_acc": [],
        "lr": [],
        "epoch_seconds": [],
        "epoch_cpu_seconds": [],
        "eval_seconds": [],
    }
    bar = tqdm(
        total=st.epochs * len(train_loader),
        desc=name,
        disable=not progress,
        leave=False,
        mininterval=1.0,
    )
    lr = st.lr
    for ep in range(st.epochs):
        if ep and ep % st.halve_every == 0:
            lr /= 2
            for g in opt.param_groups:
                g["lr"] = lr
        t0, c0 = time.perf_counter(), time.process_time()
        loss_sum = 0.0
        correct = seen = 0
        for x, y in train_loader:
            loss, c = pt.train_step(model, x.to(dtype), y, opt, loss_fn)
            loss_sum += loss * len(y)
            correct += c
            seen += len(y)
            bar.update(1)
        out["epoch_seconds"].append(time.perf_counter() - t0)
        out["epoch_cpu_seconds"].append(time.process_time() - c0)
        t1 = time.perf_counter()
        acc = evaluate(model, epoch_loader, dtype)
        out["eval_seconds"].append(time.perf_counter() - t1)
        out["epoch_test_acc"].append(acc)
        out["train_loss"].append(loss_sum / seen)
        out["train_acc"].append(correct / seen)
        out["lr"].append(lr)
        bar.set_postfix(epoch=ep + 1, test_acc=f"{acc:.4f}")
    bar.close()
    t1 = time.perf_counter()
    out["test_acc"] = evaluate(model, test_loader, dtype)
    out["eval_seconds"].append(time.perf_counter() - t1)
    steps = st.epochs * len(train_loader)
    out["step_seconds"] = sum(out["epoch_seconds"]) / steps
    out["step_cpu_seconds"] = sum(out["epoch_cpu_seconds"]) / steps
    if not recipe.is_float:  # every parameter is a value of the update posit
        upd = recipe.update
        out["weights_on_update_grid"] = all(
            torch.equal(lb.round(p.detach(), upd), p.detach()) for p in model.parameters()
        )
    return out, model


def diagnostics(model: torch.nn.Module, splits: Any, st: Settings) -> dict[str, Any]:
    """Why 8-bit stages fail, measured on one batch of the trained float model.

    * update: the fraction of weights that one plain SGD step (lr, the batch's mean gradient)
      changes at all once weights are stored in the format (a step below half an ulp of the
      weight rounds back to it);
    * gradient: the fraction of the batch-mean weight gradients below the format's minpos
      (posit rounding turns each of them into ±minpos);
    * loss: the bias of the loss gradient — per sample, the entries of ``softmax − onehot``
      sum to exactly 0, but a posit rounds every nonzero value below minpos up to minpos, so
      the rounded entries no longer cancel: mean |Σ_k dL/dz_k| and the fraction of entries
      sitting at ±minpos.
    """
    model = copy.deepcopy(model).float().eval()
    x, y = splits.train.tensors[0][: st.batch_size], splits.train.tensors[1][: st.batch_size]
    model.zero_grad()
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    out: dict[str, Any] = {
        "update_changed": {},
        "grad_below_minpos": {},
        "loss_grad_bias": {},
        "loss_grad_at_minpos": {},
    }
    for fmt in ("posit<8,0>", "posit8", "posit<16,1>", "posit16"):
        changed = total = 0
        for p in model.parameters():
            w = lb.round(p.detach().double(), fmt)
            new = lb.round(w - st.lr * p.grad.double(), fmt)
            changed += int((new != w).sum())
            total += w.numel()
        out["update_changed"][fmt] = changed / total
        minpos = lb.get_format(fmt).min_normal
        grads = torch.cat([p.grad.reshape(-1).double() for p in model.parameters()])
        out["grad_below_minpos"][fmt] = float(
            ((grads.abs() < minpos) & (grads != 0)).double().mean()
        )
        z = logits.detach().double().requires_grad_(True)
        (g,) = torch.autograd.grad(pt.posit_cross_entropy(z, y, fmt), z)
        out["loss_grad_bias"][fmt] = float(g.sum(dim=1).abs().mean())
        out["loss_grad_at_minpos"][fmt] = float((g.abs() == minpos).double().mean())
    return out


def run_seed(st: Settings, data_dir: str | None, progress: bool) -> dict[str, Any]:
    """Every recipe of ``st`` for its seed, and the float run under the paper's protocol."""
    splits = load_dataset("fashion-mnist", data_dir, subset=st.train_subset, seed=st.data_seed)
    t0, c0 = time.perf_counter(), time.process_time()
    runs = {}
    diag: dict[str, Any] | None = None
    for name in st.recipes:
        runs[name], model = run(name, st, splits, progress)
        if name == "float":
            diag = diagnostics(model, splits, st)
        r = runs[name]
        print(
            f"seed {st.seed}, {name}: test acc {100 * r['test_acc']:.2f} %, "
            f"{r['step_cpu_seconds']:.3f} CPU s/step, {sum(r['epoch_seconds']):.0f} s train + "
            f"{sum(r['eval_seconds']):.0f} s eval (wall)",
            flush=True,
        )
    ref: dict[str, Any] | None = None
    if st.float_reference:  # the paper's protocol: 10 epochs over 60 000 images
        full = load_dataset("fashion-mnist", data_dir, seed=st.data_seed)
        ref, _ = run(
            "float",
            replace(st, train_subset=None, test_subset=None, epochs=10, halve_every=4),
            full,
            progress,
        )
        print(
            f"seed {st.seed}, float, paper protocol: test acc {100 * ref['test_acc']:.2f} %",
            flush=True,
        )
    n_test = len(splits.test) if st.test_subset is None else min(st.test_subset, len(splits.test))
    return {
        "seed": st.seed,
        "settings": settings_dict(st),
        "runs": runs,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "steps": st.epochs * -(-len(splits.train) // st.batch_size),
        "n_train": len(splits.train),
        "n_test": n_test,
        "float_reference": None if ref is None else 100 * ref["test_acc"],
        "float_reference_run": ref,
        "diagnostics": diag,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
    }


def settings_dict(st: Settings) -> dict[str, Any]:
    """``st`` as it reads back from JSON (tuples become lists): the key of a seed's cache."""
    return json.loads(json.dumps(asdict(st)))


def load_or_run(
    st: Settings, cache: Path, data_dir: str | None, progress: bool, force: bool
) -> tuple[dict[str, Any], bool]:
    """One seed's raw results: from ``cache`` when it holds the same settings, else run."""
    if cache.exists() and not force:
        old = json.loads(cache.read_text())
        if old.get("settings") == settings_dict(st):
            print(f"seed {st.seed}: cached in {cache}", flush=True)
            return old, True
        print(f"seed {st.seed}: {cache} holds other settings; rerunning", flush=True)
    res = run_seed(st, data_dir, progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(res, indent=2) + "\n")
    return res, False


def summary(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (None for one value) and the values."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def curve(rows: list[list[float]]) -> dict[str, list[float | None]]:
    """Per-epoch mean and sample std over seeds."""
    cols = list(zip(*rows, strict=True))
    return {
        "mean": [statistics.fmean(c) for c in cols],
        "std": [statistics.stdev(c) if len(c) > 1 else None for c in cols],
    }


def pm(s: dict[str, Any], sign: bool = False) -> str:
    """``mean ± std`` (just the mean for one seed)."""
    m = f"{s['mean']:+.2f}" if sign else f"{s['mean']:.2f}"
    return m if s["std"] is None else f"{m} ± {s['std']:.2f}"


def aggregate(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recipe, over seeds: test accuracy (%), its paired difference from float, curves."""
    agg: dict[str, Any] = {}
    for name in seeds[0]["runs"]:
        rs = [s["runs"][name] for s in seeds]
        e: dict[str, Any] = {
            "describe": rs[0]["describe"],
            "test_acc": summary([100 * r["test_acc"] for r in rs]),
            "epoch_test_acc": curve([[100 * a for a in r["epoch_test_acc"]] for r in rs]),
            "train_loss": curve([r["train_loss"] for r in rs]),
            "step_cpu_seconds": statistics.fmean(r["step_cpu_seconds"] for r in rs),
        }
        if "float" in seeds[0]["runs"]:
            e["delta_vs_float"] = summary(
                [
                    100 * (r["test_acc"] - s["runs"]["float"]["test_acc"])
                    for r, s in zip(rs, seeds, strict=True)
                ]
            )
        if any("weights_on_update_grid" in r for r in rs):
            e["weights_on_update_grid"] = all(r["weights_on_update_grid"] for r in rs)
        agg[name] = e
    return agg


def verdict(d: float, spread: float, lo: float, hi: float) -> str:
    """``held`` when d ± spread lies in [lo, hi], ``did not hold`` when it misses it."""
    if lo <= d - spread and d + spread <= hi:
        return "held"
    if d + spread < lo or d - spread > hi:
        return "did not hold"
    return "inconclusive"


def claims(agg: dict[str, Any], seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's claims (and our ablation's), on the means over seeds (accuracies in %).

    A claim bounds the difference d = mean(a) − mean(b) to [lo, hi]; the spread is the largest
    of the two recipes' sample std and the sample std of their per-seed difference (0 for one
    seed). The claim held when d ± spread lies inside the bounds, did not hold when d ± spread
    lies outside them, and is inconclusive when the spread straddles a bound.
    """
    inf = math.inf
    specs = [
        ("posit8_0", "float", -5.0, 0.5, "uniform posit<8,0> close to float",
         "uniform posit<8,0> trains, a little below float (paper −2.27 pp; bound: −5 to +0.5 "
         "pp)"),
        ("posit16_1", "float", -1.0, inf, "posit<16,1> ≈ float",
         "posit<16,1> no more than 1 pp below float"),
        ("mixed8", "float", -1.0, inf, "mixed 8-bit ≈ float",
         "mixed 8-bit no more than 1 pp below float"),
        ("posit8_0+upd16+loss16", "posit8_0", 5.0, inf,
         "the update and the loss in 16 bits rescue posit<8,0> (ablation)",
         "the update and the loss in posit<16,2> rescue posit<8,0> (our ablation, not a paper "
         "claim; bound: > 5 pp above it)"),
        ("posit8_0+upd16", "posit8_0", 5.0, inf,
         "the update in 16 bits rescues posit<8,0> (ablation)",
         "the update in posit<16,2> rescues posit<8,0> (our ablation, not a paper claim; "
         "bound: > 5 pp above it)"),
        ("mixed8", "posit8_0", 0.0, inf, "mixed 8-bit ≥ uniform posit<8,0>",
         "mixed 8-bit ≥ uniform posit<8,0>"),
    ]  # fmt: skip
    out = []
    for a, b, lo, hi, short, text in specs:
        if a not in agg or b not in agg:
            continue
        diffs = [100 * (s["runs"][a]["test_acc"] - s["runs"][b]["test_acc"]) for s in seeds]
        d = statistics.fmean(diffs)
        spread = 0.0
        if len(seeds) > 1:
            spread = max(
                agg[a]["test_acc"]["std"], agg[b]["test_acc"]["std"], statistics.stdev(diffs)
            )
        v = verdict(d, spread, lo, hi)
        out.append(
            {
                "verdict": v,
                "held": {"held": True, "did not hold": False}.get(v),
                "short": short,
                "a": a,
                "b": b,
                "bounds_pp": [lo, hi if hi != inf else None],
                "diff_pp": d,
                "spread_pp": spread,
                "per_seed_diff_pp": diffs,
                "text": f"{text}: {pm(agg[a]['test_acc'])} vs {pm(agg[b]['test_acc'])} %, "
                f"difference {d:+.2f} pp (spread {spread:.2f} pp; per seed "
                f"{', '.join(f'{x:+.2f}' for x in diffs)})",
            }
        )
    return out


def plot(agg: dict[str, Any], n_seeds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    k = len(agg)
    for i, (name, e) in enumerate(agg.items()):
        m = e["epoch_test_acc"]["mean"]
        ep = [j + 1 + 0.05 * (i - (k - 1) / 2) for j in range(len(m))]  # keep the bars apart
        for ax, c in ((a1, e["epoch_test_acc"]), (a2, e["train_loss"])):
            err = None if c["std"][0] is None else c["std"]
            ax.errorbar(ep, c["mean"], yerr=err, marker="o", ms=4, capsize=3, label=name)
    for name, v in PAPER.items():
        if v is not None:
            a1.axhline(v, ls=":", lw=1, color="C0" if name == "float" else "C1")
    a1.set_xlabel("epoch")
    a1.set_ylabel("test accuracy (%)")
    what = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    a1.set_title(f"LeNet-5, Fashion-MNIST ({what}; dotted: paper)", fontsize=10)
    a2.set_xlabel("epoch")
    a2.set_ylabel("train loss")
    a2.set_yscale("log")
    for ax in (a1, a2):
        ax.set_xticks(range(1, len(next(iter(agg.values()))["train_loss"]["mean"]) + 1))
    a2.set_title(f"train loss ({what})", fontsize=10)
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results: dict[str, Any], st: Settings, out: Path, png: Path) -> Path:
    agg = results["aggregate"]
    seeds = results["seeds"]
    n = len(seeds)
    seed_list = ", ".join(map(str, seeds))
    n_epoch_test = min(st.epoch_test, results["n_test"])
    stat = "mean ± sample std over the seeds" if n > 1 else "one seed"
    lines = [
        "# PositNN: LeNet-5 on Fashion-MNIST with posits and quires",
        "",
        "Raposo, Tomás & Roma, *PositNN: Training Deep Neural Networks with Mixed Low-Precision "
        "Posit* (ICASSP 2021, arXiv 2105.00053; code hpc-ulisboa/posit-neuralnet). Recipes: "
        "`lowbit.methods.posit_training.posit_training(name)`. "
        f"Seeds {seed_list}: a seed sets the initial LeNet-5 weights and the batch order; "
        "within a seed every recipe starts from the same initial weights (rounded to its "
        "update posit) and sees the same batches. The training subset is the same for every "
        f"seed (data seed {st.data_seed}).",
        "",
        f"Data: Fashion-MNIST, a training subset of {results['n_train']} images (the first of a "
        f"seeded permutation of the 60 000), test accuracy on {results['n_test']} test images "
        f"(per-epoch curve: the first {n_epoch_test}). {st.epochs} "
        f"epochs ({results['steps']} steps), batch {st.batch_size}, SGD lr {st.lr:g} halved "
        f"every {st.halve_every} epochs, momentum {st.momentum:g}: PositNN's optimizer, but the "
        "paper trains 10 epochs over all 60 000 images (9 380 steps, lr halved every 4) — the "
        "emulated quire GEMMs cost about 0.18 s of CPU per step here, so only the gaps between "
        "recipes are comparable with the paper, not the absolute accuracies.",
        "",
        f"Test accuracy, {stat}; Δ vs float: the per-seed difference from the float run of the "
        "same seed, mean ± sample std. The paper's numbers are single runs.",
        "",
        f"| recipe | stages | test acc. (%) | per seed ({seed_list}) | Δ vs float (pp) | "
        "paper (%) | CPU s / step |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in agg.items():
        delta = pm(e["delta_vs_float"], sign=True) if "delta_vs_float" in e else ""
        per = ", ".join(f"{v:.2f}" for v in e["test_acc"]["values"])
        lines.append(
            f"| `{name}` | {e['describe'].replace(' | ', '; ')} | {pm(e['test_acc'])} | {per} | "
            f"{delta} | {PAPER_NOTE[name]} | {e['step_cpu_seconds']:.3f} |"
        )
    lines += [
        "",
        f"Per epoch (accuracy % on the first {n_epoch_test} test images, {stat}):",
        "",
        "| recipe | " + " | ".join(f"ep {i + 1}" for i in range(st.epochs)) + " |",
        "|---|" + "---|" * st.epochs,
    ]
    for name, e in agg.items():
        c = e["epoch_test_acc"]
        cells = [pm({"mean": m, "std": s}) for m, s in zip(c["mean"], c["std"], strict=True)]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    fr = results.get("float_reference")
    if fr:
        per = ", ".join(f"{v:.2f}" for v in fr["values"])
        lines += [
            "",
            f"Check of the setup: the float recipe with the paper's full protocol (10 "
            f"epochs over 60 000 images, lr halved every 4) reached {pm(fr)} % on the "
            f"full test set (per seed {per}; paper: 90.42 %).",
        ]
    diag = results.get("diagnostics")
    if diag:
        lines += [
            "",
            "Why 8 bits fail where they fail (one batch of 64 training images through the "
            f"trained float model of seed {results['diagnostics_seed']} only — the other seeds' "
            "measurements are in their cache files; in exact arithmetic the fourth column is "
            "0):",
            "",
            "| format | weights one SGD step changes | mean weight gradients below minpos | "
            "mean abs. sum of dL/dz over classes | dL/dz entries at ±minpos |",
            "|---|---|---|---|---|",
        ]
        for f in diag["update_changed"]:
            lines.append(
                f"| {f} | {100 * diag['update_changed'][f]:.1f} % | "
                f"{100 * diag['grad_below_minpos'][f]:.1f} % | "
                f"{diag['loss_grad_bias'][f]:.2e} | {100 * diag['loss_grad_at_minpos'][f]:.1f} % |"
            )
        acc = {k: pm(e["test_acc"]) for k, e in agg.items()}
        uniform = f": the uniform run ends at {acc['posit8_0']} %" if "posit8_0" in acc else ""
        ablation = f", {acc['posit8_0+upd16+loss16']} %" if "posit8_0+upd16+loss16" in acc else ""
        mixed = (
            f" ({acc['mixed8']} % vs {acc['float']} %)" if {"mixed8", "float"} <= acc.keys() else ""
        )
        lines += [
            "",
            "posit<8,0> has at most 5 fraction bits, every value is a multiple of 2^-6, its "
            "minpos is 2^-6, and posit rounding never gives 0. Three stages break on this. "
            "The update: a step lr·g is mostly smaller than half an ulp of the weight and "
            f"rounds away, so the weights stagnate{uniform}. The weight gradient: PositNN "
            "divides the batch-summed gradient by the batch size in the gradient posit, and "
            "nearly every mean gradient lies below minpos, so it becomes ±2^-6 — a sign with a "
            "fixed, too large magnitude. The loss: small softmax probabilities become ±2^-6, so "
            "the error signal no longer sums to zero. Moving only the update and the loss to "
            f"posit<16,2> (`posit8_0+upd16+loss16`{ablation}) is not enough (the gradient "
            "column suggests why), while the same layout with es = 2 (`mixed8`: posit<8,2>, "
            f"minpos 2^-24) matches float{mixed}.",
        ]
    by = {v: [c["short"] for c in results["claims"] if c["verdict"] == v] for v in VERDICTS}
    lines += [
        "",
        f"Claims, on the means over {n} seed{'s' if n > 1 else ''} (a claim bounds the "
        "difference between two recipes; the spread is the larger of their sample stds and "
        "the sample std of their per-seed difference; held: the difference ± the spread lies "
        "within the bounds, did not hold: it lies outside, inconclusive: the spread straddles "
        "a bound). "
        + "Verdicts: "
        + "; ".join(f"{v} — {'; '.join(by[v]) or 'none'}" for v in VERDICTS)
        + ".",
        "",
    ]
    for c in results["claims"]:
        lines.append(f"- {c['verdict']}: {c['text']}")
    lines += [
        "",
        "What is emulated. Each stage's tensors are rounded (RNE, Posit Standard 2022) to its "
        "posit: forward = weights as the matmul sees them, layer inputs and outputs; backward "
        "= the error signals dL/dy and dL/dx; gradient = weight/bias gradients, formed over the "
        "batch and then divided by the batch size (rounded again, as PositNN's layers do); "
        "update = the stored weights and momentum (SGD computed in float64, one rounding per "
        "stored tensor); loss = softmax cross-entropy and its gradient (PositNN's operations, "
        "each rounded). The loss is summed over the batch so that the error signal is "
        "softmax − onehot, of order one, as in PositNN (a mean would push it towards "
        "posit<8,0>'s minpos 2^-6). Every Linear/Conv matmul, forward and both backward ones, "
        'is a quire GEMM (`GemmConfig(acc="quire")`): products summed exactly, rounded once '
        "(to float64, which is exact for posit<8,0> sums; the models run in float64); the bias "
        "is added after it in float64 (PositNN adds it inside the quire), then the result is "
        "rounded to the posit. Max-pooling and ReLU are exact on posit values. Differences "
        "from PositNN: the forward pass uses the bias as stored (update posit), not rounded "
        "to the forward posit; the backward matmul uses the forward-posit weight (PositNN "
        "keeps a separate backward copy; the two formats are equal in every recipe here); the "
        "input normalisation uses the train set's std (0.353; PositNN 0.330).",
        "",
        "Every posit run of every seed ended with all parameters on its update posit's grid: "
        f"{all(e.get('weights_on_update_grid', True) for e in agg.values())}.",
        "",
    ]
    per_seed = ", ".join(
        f"seed {s}: {c / 60:.1f}" for s, c in zip(seeds, results["seed_cpu_seconds"], strict=True)
    )
    cached = results["cached_seeds"]
    lines += [
        f"Time: {results['cpu_seconds'] / 60:.1f} min of CPU in all ({per_seed} min; one core: "
        f"torch and numba one thread each), {results['seconds'] / 60:.1f} min wall (the seeds' "
        "runs summed) on a shared "
        f"machine ({results['machine']}). Raw results per seed: "
        + ", ".join(f"`{f}`" for f in results["seed_files"])
        + (
            f"; seed{'s' if len(cached) > 1 else ''} {', '.join(map(str, cached))} read from "
            "there (computed earlier with the same settings)."
            if cached
            else "."
        ),
        "",
        f"![accuracy and loss per epoch]({png.name})",
        "",
        f"Reproduce: `python experiments/posit_training.py --seeds {','.join(map(str, seeds))} "
        "--no-progress` (a seed whose cache holds the same settings is read back, `--force` "
        "reruns it)",
        "",
    ]
    md = out / "posit_training.md"
    md.write_text("\n".join(lines))
    return md


VERDICTS = ("held", "did not hold", "inconclusive")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default=None, help="output folder (default docs/results; --quick: a temp folder)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (a < 1 min smoke run)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--force", action="store_true", help="rerun seeds whose cache matches")
    p.add_argument(
        "--recipes", default=None, help=f"comma-separated subset of {', '.join(RECIPES)}"
    )
    p.add_argument("--train-subset", type=int, default=None, help="training images")
    p.add_argument("--epochs", type=int, default=None, help="epochs")
    p.add_argument("--halve-every", type=int, default=None, help="halve the lr every N epochs")
    p.add_argument("--test-subset", type=int, default=None, help="test images (0: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-float-reference",
        action="store_true",
        help="skip the float run under the paper's full protocol",
    )
    args = p.parse_args(argv)
    st = QUICK if args.quick else Settings()
    if args.recipes:
        names = tuple(s.strip() for s in args.recipes.split(","))
        bad = [n for n in names if n not in RECIPES]
        if bad:
            raise SystemExit(f"unknown recipes {bad}; accepted: {', '.join(RECIPES)}")
        st = replace(st, recipes=names)
    if args.train_subset:
        st = replace(st, train_subset=args.train_subset)
    if args.epochs:
        st = replace(st, epochs=args.epochs)
    if args.halve_every:
        st = replace(st, halve_every=args.halve_every)
    if args.test_subset is not None:
        st = replace(st, test_subset=args.test_subset or None)
    if args.no_float_reference:
        st = replace(st, float_reference=False)
    seeds = [int(s) for s in (args.seeds or "0,1,2").split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {args.seeds!r}: expected distinct comma-separated ints")
    torch.set_num_threads(args.threads)
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.gettempdir()) / "lowbit-quick"
    else:
        out = ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed: list[dict[str, Any]] = []
    cached: list[int] = []
    files = []
    for seed in seeds:
        cache = out / "posit_training" / f"seed{seed}.json"
        res, hit = load_or_run(
            replace(st, seed=seed), cache, args.data_dir, not args.no_progress, args.force
        )
        per_seed.append(res)
        files.append(cache.relative_to(out).as_posix())
        if hit:
            cached.append(seed)
    agg = aggregate(per_seed)
    refs = [s["float_reference"] for s in per_seed if s["float_reference"] is not None]
    first = per_seed[0]
    results: dict[str, Any] = {
        "settings": {k: v for k, v in settings_dict(st).items() if k != "seed"},
        "seeds": seeds,
        "seed_files": files,
        "cached_seeds": cached,
        "aggregate": agg,
        "float_reference": summary(refs) if len(refs) == len(per_seed) else None,
        "paper": PAPER,
        "diagnostics": first["diagnostics"],
        "diagnostics_seed": first["seed"],
        "steps": first["steps"],
        "n_train": first["n_train"],
        "n_test": first["n_test"],
        "seconds": sum(s["seconds"] for s in per_seed),
        "cpu_seconds": sum(s["cpu_seconds"] for s in per_seed),
        "seed_seconds": [s["seconds"] for s in per_seed],
        "seed_cpu_seconds": [s["cpu_seconds"] for s in per_seed],
        "invocation_seconds": time.perf_counter() - t0,
        "machine": "; ".join(sorted({s["machine"] for s in per_seed})),
    }
    results["claims"] = claims(agg, per_seed)
    png = out / "posit_training.png"
    plot(agg, len(seeds), png)
    md = write_report(results, st, out, png)
    (out / "posit_training.json").write_text(json.dumps(results, indent=2) + "\n")
    print(md.read_text())
    print(
        f"wrote {md}, {png} and {out / 'posit_training.json'}; this invocation "
        f"{results['invocation_seconds'] / 60:.1f} min (seeds from cache: {cached or 'none'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
