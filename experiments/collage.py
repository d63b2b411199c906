"""Collage on a character-level transformer LM trained on Moby Dick (one CPU core).

The paper (Yu et al., ICML 2024, arXiv 2405.03637) pre-trains BERT/RoBERTa and GPT models in
bf16 without fp32 master weights; its claims, scaled here to a 0.1 M-parameter character LM:

* pure bf16 AdamW ("bf16", 8 bytes/param) is clearly worse than bf16 compute with fp32 master
  weights and fp32 moments ("fp32_master", 16 bytes/param);
* Collage-light (θ as a bf16 multi-component float, 10 bytes/param) closes most of that gap;
* Collage-plus (also v as an MCF with β2 split in two bf16 terms, 12 bytes/param) about
  matches fp32 master weights.

Five runs per seed from the same initial weights (rounded to bf16 for every run) and the same
batches: the four bf16 schemes (bf16 weights, bf16 forward and backward; the loss is taken in
fp32 from the bf16 logits) and an all-fp32 run. The learning rate warms up linearly, then
decays along a cosine to 1 % of its peak: late in training the updates shrink below half an
ulp of the weights, where pure bf16 rounds them away. Every step logs the effective descent
quality (normalised EDQ = <e, u>/||u||², 1 = the update was realised) and the share of
parameters whose update was lost entirely (imprecision); the validation loss is measured on
fixed held-out windows (the last 10 % of the book).

Writes ``docs/results/collage.md``, ``collage.png`` and ``collage.json``. The default size
(3 seeds x 5 runs, 1200 steps each) should take 12-15 minutes on an idle core (a 1500-step
bf16 run took 47 s at low load); the recorded run took 38 minutes while the machine's 2 cores
were shared with other jobs. ``--quick`` is a < 1 minute smoke run on a short stretch of the
text (written to a temporary folder); ``--replot`` rewrites the .md/.png from the .json.

Reproduce: ``python experiments/collage.py``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from lowbit.methods.collage import BYTES_PER_PARAM, collage, param_dtype

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("bf16", "light", "plus", "fp32_master", "fp32")
LABELS = {
    "bf16": "pure bf16 AdamW",
    "light": "Collage-light",
    "plus": "Collage-plus",
    "fp32_master": "bf16 + fp32 master weights",
    "fp32": "fp32",
}
COLORS = {
    "bf16": "tab:red",
    "light": "tab:orange",
    "plus": "tab:green",
    "fp32_master": "tab:blue",
    "fp32": "black",
}


@dataclass(frozen=True)
class Settings:
    """Sizes of the run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 1200
    warmup: int = 100
    batch: int = 32
    context: int = 64
    dim: int = 64
    depth: int = 2
    heads: int = 4
    lr: float = 3e-3
    min_lr_frac: float = 0.01
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eval_every: int = 100
    eval_batches: int = 16
    text_chars: int | None = None  # None: the whole book


QUICK = Settings(
    seeds=(0,),
    steps=60,
    warmup=10,
    batch=8,
    context=32,
    dim=32,
    depth=1,
    eval_every=20,
    eval_batches=2,
    text_chars=60_000,
)


def lr_factor(step: int, st: Settings) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_frac`` of the peak."""
    if step < st.warmup:
        return (step + 1) / st.warmup
    t = (step - st.warmup) / max(1, st.steps - st.warmup)
    return st.min_lr_frac + (1 - st.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))


def load_text(st: Settings) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train ids, validation ids, vocabulary size): the book's first 90 % and last 10 %."""
    from lowbit.data import load_moby_dick

    text = load_moby_dick()
    if st.text_chars is not None:
        text = text[: st.text_chars]
    chars = sorted(set(text))
    table = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([table[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(chars)


def windows(
    ids: torch.Tensor, starts: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([ids[s : s + context] for s in starts.tolist()])
    y = torch.stack([ids[s + 1 : s + 1 + context] for s in starts.tolist()])
    return x, y


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    total = 0.0
    for x, y in batches:
        total += float(F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten()))
    model.train()
    return total / len(batches)


def train_one(
    variant: str,
    seed: int,
    st: Settings,
    data: tuple[torch.Tensor, torch.Tensor, int],
    progress: bool,
) -> dict[str, Any]:
    """One training run; returns its curves and timings."""
    from lowbit.models import build_charlm

    train_ids, val_ids, vocab = data
    torch.manual_seed(seed)
    model = build_charlm(vocab, dim=st.dim, depth=st.depth, heads=st.heads, context=st.context)
    # the same starting point for every run: the initial weights rounded to bf16
    model = model.to(torch.bfloat16).to(param_dtype(variant))
    opt = collage(
        model.parameters(), variant=variant, lr=st.lr, betas=st.betas, weight_decay=st.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, st))
    g_val = torch.Generator().manual_seed(1234)
    val_batches = [
        windows(
            val_ids,
            torch.randint(0, len(val_ids) - st.context - 1, (st.batch,), generator=g_val),
            st.context,
        )
        for _ in range(st.eval_batches)
    ]
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        "step": [],
        "train_loss": [],
        "val_step": [],
        "val_loss": [],
        "edq_normalised": [],
        "imprecision": [],
        "weight_unchanged": [],
        "lr": [],
    }
    buf: dict[str, list[float]] = {"loss": [], "edq": [], "imp": [], "unch": []}
    it = range(st.steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"seed {seed} {variant}", leave=False, file=sys.stderr)
    t0 = time.perf_counter()
    for step in it:
        x, y = windows(
            train_ids,
            torch.randint(0, len(train_ids) - st.context - 1, (st.batch,), generator=g),
            st.context,
        )
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr_now = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        m = opt.last_metrics
        assert m is not None
        buf["loss"].append(loss.item())
        buf["edq"].append(m.edq_normalised)
        buf["imp"].append(m.imprecision)
        buf["unch"].append(m.weight_unchanged)
        if (step + 1) % st.eval_every == 0 or step + 1 == st.steps:
            out["step"].append(step + 1)
            out["train_loss"].append(statistics.fmean(buf["loss"]))
            out["edq_normalised"].append(statistics.fmean(buf["edq"]))
            out["imprecision"].append(statistics.fmean(buf["imp"]))
            out["weight_unchanged"].append(statistics.fmean(buf["unch"]))
            out["lr"].append(lr_now)
            buf = {k: [] for k in buf}
            out["val_step"].append(step + 1)
            out["val_loss"].append(evaluate(model, val_batches))
    out["seconds"] = time.perf_counter() - t0
    out["final_val_loss"] = out["val_loss"][-1]
    out["bytes_per_param"] = BYTES_PER_PARAM[variant]
    out["state_bytes_per_param"] = opt.state_bytes() / sum(p.numel() for p in model.parameters())
    out["n_params"] = sum(p.numel() for p in model.parameters())
    return out


def tail_mean(values: list[float], frac: float = 0.25) -> float:
    k = max(1, round(len(values) * frac))
    return statistics.fmean(values[-k:])


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant: mean and std over seeds of the final validation loss and the metrics."""
    out: dict[str, dict[str, float]] = {}
    for v in RUNS:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        fin = [r["final_val_loss"] for r in rs]
        out[v] = {
            "val_loss": statistics.fmean(fin),
            "val_loss_std": statistics.stdev(fin) if len(fin) > 1 else 0.0,
            "train_loss_last": statistics.fmean(r["train_loss"][-1] for r in rs),
            "edq_all": statistics.fmean(statistics.fmean(r["edq_normalised"]) for r in rs),
            "edq_last_quarter": statistics.fmean(tail_mean(r["edq_normalised"]) for r in rs),
            "imprecision_last_quarter": statistics.fmean(tail_mean(r["imprecision"]) for r in rs),
            "unchanged_last_quarter": statistics.fmean(
                tail_mean(r["weight_unchanged"]) for r in rs
            ),
            "seconds": statistics.fmean(r["seconds"] for r in rs),
            "bytes_per_param": rs[0]["bytes_per_param"],
            "state_bytes_per_param": rs[0]["state_bytes_per_param"],
        }
    return out


def paired(runs: list[dict[str, Any]], a: str, b: str) -> list[float]:
    """Per seed: final validation loss of ``a`` minus that of ``b`` (same init, same batches)."""
    fin = {(r["variant"], r["seed"]): r["final_val_loss"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    return [fin[(a, s)] - fin[(b, s)] for s in seeds]


def claims(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's three claims, each with our numbers and whether it held.

    Differences are paired by seed (each seed's runs share the initial weights and the
    batches); their spread over seeds is the noise. With one seed the noise is unknown and a
    floor of 0.005 nats stands in for it.
    """
    gap_s = paired(runs, "bf16", "fp32_master")
    light_s = paired(runs, "light", "fp32_master")
    plus_s = paired(runs, "plus", "fp32_master")
    n = len(gap_s)

    def raw_sd(xs: list[float]) -> float:
        return statistics.stdev(xs) if n > 1 else float("nan")

    def sd(xs: list[float]) -> float:
        return max(raw_sd(xs) if n > 1 else 0.0, 0.005)

    gap, light, plus = (statistics.fmean(x) for x in (gap_s, light_s, plus_s))
    clear = min(gap_s) > 0 and gap > 2 * sd(gap_s)
    closed_light = 1 - light / gap if gap > 0 else float("nan")
    closed_plus = 1 - plus / gap if gap > 0 else float("nan")
    per_seed = ", ".join(f"{d:+.4f}" for d in gap_s)
    return [
        {
            "claim": "pure bf16 clearly worse than fp32 master weights",
            "ours": f"val loss {gap:+.4f} nats vs fp32 master (per seed {per_seed}; seed sd "
            f"{raw_sd(gap_s):.4f})",
            "held": clear,
        },
        {
            "claim": "Collage-light closes most of the gap",
            "ours": f"{light:+.4f} nats vs fp32 master (per seed "
            + ", ".join(f"{d:+.4f}" for d in light_s)
            + f"): closes {100 * closed_light:.0f} % of the gap",
            "held": bool(clear and closed_light >= 0.5),
        },
        {
            "claim": "Collage-plus ~matches fp32 master weights",
            "ours": f"{plus:+.4f} nats vs fp32 master (per seed "
            + ", ".join(f"{d:+.4f}" for d in plus_s)
            + f"; seed sd {raw_sd(plus_s):.4f}): closes {100 * closed_plus:.0f} % of the gap",
            "held": bool(clear and abs(plus) <= max(2 * sd(plus_s), 0.1 * gap)),
        },
    ]


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean_curve(v: str, key: str) -> tuple[list[int], list[float]]:
        rs = [r for r in runs if r["variant"] == v]
        xkey = "val_step" if key == "val_loss" else "step"
        xs = rs[0][xkey]
        return xs, [statistics.fmean(r[key][i] for r in rs) for i in range(len(xs))]

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    panels = (
        ("train_loss", "train loss (mean over each interval)"),
        ("val_loss", "validation loss"),
        ("delta", "validation loss − fp32-master validation loss"),
        ("edq_normalised", "normalised EDQ <e,u>/||u||² (interval mean)"),
        ("imprecision", "imprecision: % of updates lost entirely"),
        ("lr", "learning rate"),
    )
    _, ref = mean_curve("fp32_master", "val_loss")
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for v in RUNS:
            if key == "lr" and v != "fp32":
                continue
            if key == "delta":
                xs, ys = mean_curve(v, "val_loss")
                ys = [y - r for y, r in zip(ys, ref, strict=True)]
            else:
                xs, ys = mean_curve(v, key)
            if key == "imprecision":
                ys = [100 * y for y in ys]
            ax.plot(
                xs, ys, label=LABELS[v], color=COLORS[v], linestyle="--" if v == "fp32" else "-"
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    lo = min(min(r["val_loss"]) for r in runs)
    for ax in axes[0, :2]:
        ax.set_ylim(lo - 0.05, lo + 0.8)
    seeds = len({r["seed"] for r in runs})
    fig.suptitle(
        "Collage vs pure bf16 vs fp32 master weights: char LM on Moby Dick "
        f"(mean of {seeds} seed(s))"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(
    st: Settings,
    runs: list[dict[str, Any]],
    summ: dict[str, dict[str, float]],
    cl: list[dict[str, Any]],
    wall: float,
    data: tuple[Any, Any, int],
    quick: bool,
    load: dict[str, float] | None = None,
    threads: int = 1,
) -> str:
    n_params = runs[0]["n_params"]
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "# Collage: bf16-only AdamW with multi-component floats (char LM on Moby Dick)",
        "",
        'Yu et al., "Collage: Light-Weight Low-Precision Strategy for LLM Training" (ICML 2024, '
        "arXiv 2405.03637), reproduced at toy scale with `lowbit.methods.collage`: a "
        f"{n_params:,}-parameter character transformer (`lowbit.models.CharTransformerLM`, "
        f"dim {st.dim}, depth {st.depth}, {st.heads} heads, context {st.context}, vocabulary "
        f"{data[2]}) trained on Moby Dick (`lowbit.data.load_moby_dick`: first 90 % of the "
        f"{len(data[0]) + len(data[1]):,} characters for training, last 10 % held out) for "
        f"{st.steps} steps of {st.batch} windows, AdamW (β = {st.betas}, weight decay "
        f"{st.weight_decay}), lr warm-up {st.warmup} steps to {st.lr} then cosine decay to "
        f"{st.min_lr_frac:g}× the peak; seeds {seeds} (init and batch order; every variant of a "
        "seed starts from the same bf16-rounded weights and sees the same batches). The "
        f"validation loss is the mean cross-entropy (nats/char) over {st.eval_batches} fixed "
        "held-out batches.",
        "",
        "The four bf16 runs compute forward and backward in bf16 (bf16 weights, activations, "
        "gradients; the loss is taken in fp32 from the bf16 logits); `bf16`, `light` and "
        "`plus` also do every optimizer op in bf16 (no fp32 copy anywhere); `fp32_master` keeps "
        "fp32 master weights and moments (standard mixed precision); `fp32` is everything "
        "fp32 (`torch.optim.AdamW`, bit for bit).",
        "",
    ]
    if quick:
        lines += ["**Quick smoke run: sizes far too small for conclusions.**", ""]
    lines += [
        "| run | bytes / param | final val loss (nats/char) | Δ vs fp32 master | val ppl | "
        "final train loss | EDQ norm. (all / last 25 %) | imprecision % (last 25 %) | "
        "weights unchanged % (last 25 %) | s / run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fm = summ["fp32_master"]["val_loss"]
    for v in RUNS:
        s = summ[v]
        std = f" ± {s['val_loss_std']:.4f}" if len(seeds) > 1 else ""
        lines.append(
            f"| {LABELS[v]} (`{v}`) | {s['bytes_per_param']} | {s['val_loss']:.4f}{std} | "
            f"{s['val_loss'] - fm:+.4f} | {math.exp(s['val_loss']):.3f} | "
            f"{s['train_loss_last']:.4f} | {s['edq_all']:.3f} / {s['edq_last_quarter']:.3f} | "
            f"{100 * s['imprecision_last_quarter']:.1f} | "
            f"{100 * s['unchanged_last_quarter']:.1f} | {s['seconds']:.0f} |"
        )
    lines += [
        "",
        "- bytes / param: parameter + gradient + optimizer state, as in the paper (8 / 10 / 12 "
        "vs 16); the optimizer's tensors measured after training give the same numbers "
        "(" + ", ".join(f"{v} {summ[v]['state_bytes_per_param']:g}" for v in RUNS) + ").",
        "- EDQ norm. = <e, u>/||u||² per step (e: the change of the stored value — the MCF "
        "m + r for Collage, the fp32 master for fp32_master; u: the raw AdamW update), "
        "averaged over steps; imprecision = share of parameters whose update was lost entirely "
        "(u ≠ 0, stored value unchanged); weights unchanged = share of the bf16 weights the "
        "model reads that did not move in a step (for Collage they move only when the residual "
        "reaches an ulp, which the authors' code reports as Collage's imprecision).",
        "",
        "## The paper's claims beside ours",
        "",
        "| claim (paper, GPT/BERT pre-training) | ours | held? |",
        "|---|---|---|",
    ]
    for c in cl:
        lines.append(f"| {c['claim']} | {c['ours']} | {'yes' if c['held'] else 'no'} |")
    held = [c["claim"] for c in cl if c["held"]]
    failed = [c["claim"] for c in cl if not c["held"]]
    sentence = (
        f"Held: {'; '.join(held) if held else 'none'}. "
        f"Did not hold: {'; '.join(failed) if failed else 'none'}."
    )
    gap_curve = [
        statistics.fmean(
            r["val_loss"][i] - q["val_loss"][i]
            for r in runs
            for q in runs
            if r["variant"] == "bf16" and q["variant"] == "fp32_master" and r["seed"] == q["seed"]
        )
        for i in range(len(runs[0]["val_step"]))
    ]
    imp = [
        statistics.fmean(r["imprecision"][i] for r in runs if r["variant"] == "bf16")
        for i in range(len(runs[0]["step"]))
    ]
    half = len(gap_curve) // 2
    lines += [
        "",
        sentence,
        "",
        f"Where pure bf16 loses: its validation-loss gap to fp32 master weights is "
        f"{gap_curve[half - 1]:+.4f} nats at step {runs[0]['val_step'][half - 1]} and "
        f"{gap_curve[-1]:+.4f} at the end, while the share of its updates lost entirely goes "
        f"from {100 * min(imp):.0f} % (lowest, near the peak learning rate) to "
        f"{100 * imp[-1]:.0f} % in the last interval as the learning rate decays; Collage's "
        f"MCF realises the updates (normalised EDQ over the run: light "
        f"{summ['light']['edq_all']:.3f}, plus {summ['plus']['edq_all']:.3f}; pure bf16 "
        f"{summ['bf16']['edq_all']:.3f}) with the same bf16 weights in the model.",
        "",
        "Paper numbers are not reproduced at this scale (the paper reports perplexities of "
        "125M-6.7B GPT and BERT models, up to 3.7x throughput and 15-23 % less memory on GPUs; "
        "see shared/notes/papers.md §6); the comparison is of the ordering and the size of the "
        'gaps. Thresholds (differences paired by seed): "clearly worse" = worse in every seed '
        'and the mean gap above 2× its seed standard deviation (at least 0.005 nats); "most of '
        'the gap" = at least 50 % of it; "~matches" = within 2× the seed standard deviation '
        "of the difference or 10 % of the gap (the last two count only where the gap is clear).",
        "",
        "![curves](collage.png)",
        "",
        f"Wall time {wall / 60:.1f} min on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {threads} thread(s)"
        + (
            f"; 1-minute load average of the machine {load['start']:.1f} at the start and "
            f"{load['end']:.1f} at the end (on {os.cpu_count()} cores: other jobs shared "
            "them, so the wall time is longer than on an idle core)"
            if load
            else ""
        )
        + ".",
        "",
        "Reproduce: `.venv/bin/python experiments/collage.py" + (" --quick`" if quick else "`"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default docs/results; --quick: a temporary folder)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run, < 1 min)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--replot",
        action="store_true",
        help="rewrite the .md and .png from the .json in --out, without training",
    )
    a = p.parse_args(argv)
    default = Path(tempfile.gettempdir()) / "lowbit-quick" if a.quick else ROOT / "docs" / "results"
    out = Path(a.out) if a.out else default
    name = "collage"
    if a.replot:
        saved = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        st = Settings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in saved["settings"].items()}
        )
        runs = saved["runs"]
        summ, cl = summarise(runs), claims(runs)
        saved["summary"], saved["claims"] = summ, cl
        plot(runs, out / f"{name}.png")
        md = markdown(
            st,
            runs,
            summ,
            cl,
            saved["wall_seconds"],
            load_text(st),
            a.quick,
            saved.get("load_average"),
            saved.get("threads", 1),
        )
        (out / f"{name}.md").write_text(md, encoding="utf-8")
        (out / f"{name}.json").write_text(json.dumps(saved, indent=1), encoding="utf-8")
        print(f"rewrote {out / name}.md/.png/.json from the saved runs")
        return 0
    torch.set_num_threads(a.threads)
    st = QUICK if a.quick else Settings()
    if a.seeds is not None:
        st = replace(st, seeds=tuple(int(s) for s in a.seeds.split(",")))
    if a.steps is not None:
        st = replace(st, steps=a.steps)
    data = load_text(st)
    load = {"start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    runs = []
    for seed in st.seeds:
        for v in RUNS:
            r = train_one(v, seed, st, data, progress=not a.no_progress)
            print(
                f"seed {seed} {v:12s} val {r['final_val_loss']:.4f} "
                f"edq {statistics.fmean(r['edq_normalised']):.3f} "
                f"imprecision(last) {100 * r['imprecision'][-1]:.1f}% {r['seconds']:.0f}s",
                flush=True,
            )
            runs.append(r)
    wall = time.perf_counter() - t0
    load["end"] = os.getloadavg()[0]
    summ = summarise(runs)
    cl = claims(runs)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out / f"{name}.png")
    md = markdown(st, runs, summ, cl, wall, data, a.quick, load, a.threads)
    (out / f"{name}.md").write_text(md, encoding="utf-8")
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                "settings": asdict(st),
                "summary": summ,
                "claims": cl,
                "runs": runs,
                "wall_seconds": wall,
                "load_average": load,
                "threads": a.threads,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"wrote {out / name}.md/.png/.json in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
