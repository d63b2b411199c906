"""INT16 dynamic fixed point training (Das et al., ICLR 2018) on Fashion-MNIST: FP32 vs DFP-16.

For each seed, one ``resnet-small`` is built (``torch.manual_seed(seed)``) and two copies are
trained with identical hyper-parameters, data order and number of steps:

* FP32: torch's own layers;
* DFP-16: ``lowbit.nn.quantize_(model, dfp16_training())``: every Conv2d/Linear GEMM (forward,
  backward-data, weight-gradient) takes DFP-16 activations, weights and output gradients
  (INT16 + one shared exponent per tensor, re-quantized every step from the fp32 master
  weights), multiplies them as INT16 x INT16 into INT32 chunk accumulators whose length
  provably cannot overflow, and combines the chunks in fp32; BN, ReLU, pooling, the loss
  and SGD stay fp32.

Both are evaluated on the full Fashion-MNIST test set (10,000 images). The DFP layers' GEMM
counters give the INT32 overflow count (0 by construction), the largest INT32 chunk sum seen
and the proven bound. Finally, on one batch of seed 0's trained DFP model, every GEMM is also
run the naive way (one INT32 accumulator per output, no head-room shifts; simulated step by
step) to count the overflows that the chunking prevents on real operands.

Writes ``docs/results/dfp16.md``, ``dfp16.png`` and ``dfp16.json``. The default size (10,000
training images, 3 epochs, 2 seeds, widths (8, 16, 32)) takes about 10-15 minutes on one
idle core; ``--quick`` runs a tiny version (under a minute).

Reproduce: ``python experiments/dfp16.py``
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

# Das et al. 2018, ImageNet-1K top-1 / top-5, FP32 vs DFP-16 (copied from
# shared/notes/papers.md section 3, recalled from the paper's results table and not
# re-verified): quoted beside ours, never used as targets.
PAPER = {
    "ResNet-50": ((75.70, 92.78), (75.77, 92.84)),
    "GoogLeNet-v1": ((69.26, 89.31), (69.34, 89.31)),
    "VGG-16": ((68.23, 88.47), (68.12, 88.18)),
    "AlexNet": ((57.43, 80.65), (56.94, 80.06)),
}
PAPER_SPEEDUP = 1.8  # end-to-end training throughput on Knights Mill (abstract)
TOLERANCE_PP = 0.3


@dataclass(frozen=True)
class Settings:
    """Sizes and hyper-parameters (identical for FP32 and DFP-16)."""

    seeds: tuple[int, ...] = (0, 1)
    train_subset: int | None = 10000
    test_subset: int | None = None  # final evaluation (None: all 10,000)
    monitor_subset: int = 2000  # per-epoch curve
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3  # AdamW, cosine decay to 0 over the steps (as the project's other
    weight_decay: float = 0.0  # Fashion-MNIST experiments)
    widths: tuple[int, ...] = (8, 16, 32)
    audit_batch: int = 32


QUICK = Settings(
    seeds=(0,),
    train_subset=512,
    test_subset=500,
    monitor_subset=200,
    epochs=1,
    batch_size=64,
    widths=(4, 8, 8),
    audit_batch=8,
)


def load(st: Settings, data_dir: str | None) -> Any:
    from lowbit.data import load_dataset

    return load_dataset("fashion-mnist", data_dir, subset=st.train_subset, seed=0)


def test_loader(splits: Any, n: int | None) -> Any:
    from torch.utils.data import Subset

    from lowbit.data import make_loader

    ds = splits.test if n is None or n >= len(splits.test) else Subset(splits.test, range(n))
    return make_loader(ds, 500, shuffle=False)


def train_one(
    model: torch.nn.Module, splits: Any, st: Settings, seed: int, label: str, progress: bool
) -> dict[str, Any]:
    """Train with the fixed recipe; returns the history, final test accuracy and timings."""
    from lowbit.data import make_loader
    from lowbit.train import evaluate, fit

    train = make_loader(splits.train, st.batch_size, shuffle=True, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=st.lr, weight_decay=st.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=st.epochs * len(train))
    t0 = time.perf_counter()
    hist = fit(
        model,
        train,
        test_loader(splits, st.monitor_subset),
        optimizer=opt,
        epochs=st.epochs,
        scheduler=sched,
        progress=progress,
        label=label,
    )
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = evaluate(model, test_loader(splits, st.test_subset))
    return {
        "label": label,
        "test_acc": ev.accuracy,
        "test_loss": ev.loss,
        "n_test": ev.n,
        "monitor_acc": list(hist.test_acc),
        "train_loss": list(hist.train_loss),
        "train_seconds": sum(hist.seconds),
        "wall_seconds": train_s,
        "eval_seconds": time.perf_counter() - t1,
    }


def gemm_summary(model: torch.nn.Module) -> dict[str, Any]:
    """Per-layer DFP GEMM counters and their totals."""
    from lowbit.methods.dfp import overflow_report

    rep = overflow_report(model)
    calls = sum(sum(r["calls"].values()) for r in rep.values())
    over = sum(sum(r["overflow_count"].values()) for r in rep.values())
    mx = max(max(r["max_abs_chunk_sum"].values()) for r in rep.values())
    bound = max(max(r["max_bound"].values()) for r in rep.values())
    chunks = [c for r in rep.values() for c in r["min_chunk"].values() if c is not None]
    kms = [c for r in rep.values() for c in r["min_k_max"].values() if c is not None]
    shifts = max(max(r["max_shift"].values()) for r in rep.values())
    unsafe = sum(sum(r["unsafe_calls"].values()) for r in rep.values())
    return {
        "layers": rep,
        "gemm_calls": calls,
        "overflow_count": over,
        "max_abs_chunk_sum": mx,
        "max_bound": bound,
        "int32_max": 2**31 - 1,
        "min_chunk": min(chunks) if chunks else None,
        "min_k_max": min(kms) if kms else None,
        "max_shift_bits": shifts,
        "unsafe_calls": unsafe,
    }


def audit(model: torch.nn.Module, splits: Any, st: Settings) -> dict[str, Any]:
    """One training batch through a copy of the DFP model with the naive INT32 what-if."""
    import torch.nn.functional as F

    from lowbit.methods.dfp import audit_unchunked, overflow_report, reset_stats

    m = copy.deepcopy(model)
    reset_stats(m)
    audit_unchunked(m)
    x, y = splits.train.tensors[0][: st.audit_batch], splits.train.tensors[1][: st.audit_batch]
    m.train()
    F.cross_entropy(m(x), y).backward()
    rep = overflow_report(m)
    per_layer = {
        n: {
            "unchunked_overflow_count": r["unchunked_overflow_count"],
            "unchunked_max_abs_sum": r["unchunked_max_abs_sum"],
            "chunked_overflow_count": r["overflow_count"],
        }
        for n, r in rep.items()
    }
    tot = sum(sum(r["unchunked_overflow_count"].values()) for r in rep.values())
    over_layers = sum(1 for r in rep.values() if sum(r["unchunked_overflow_count"].values()))
    gemms = sum(sum(r["audit_calls"].values()) for r in rep.values())
    return {
        "batch": st.audit_batch,
        "gemms": gemms,
        "unchunked_overflow_count": tot,
        "gemms_overflowing": sum(
            1 for r in rep.values() for v in r["unchunked_overflow_count"].values() if v
        ),
        "layers_overflowing": over_layers,
        "chunked_overflow_count": sum(sum(r["overflow_count"].values()) for r in rep.values()),
        "max_abs_dot": max(max(r["unchunked_max_abs_sum"].values()) for r in rep.values()),
        "per_layer": per_layer,
    }


def run_seed(seed: int, st: Settings, splits: Any, progress: bool) -> dict[str, Any]:
    from lowbit.dr_demo import build
    from lowbit.methods.dfp import dfp16_training
    from lowbit.nn import quantize_

    torch.manual_seed(seed)
    base = build("resnet-small", splits, widths=st.widths)
    fp = train_one(copy.deepcopy(base), splits, st, seed, f"fp32 seed {seed}", progress)
    dmodel = quantize_(copy.deepcopy(base), dfp16_training())
    dfp = train_one(dmodel, splits, st, seed, f"dfp16 seed {seed}", progress)
    dfp["gemm"] = gemm_summary(dmodel)
    out = {"seed": seed, "fp32": fp, "dfp16": dfp, "model": dmodel}
    print(
        f"seed {seed}: fp32 {100 * fp['test_acc']:.2f}%  dfp16 {100 * dfp['test_acc']:.2f}%"
        f"  overflows {dfp['gemm']['overflow_count']}  ({fp['wall_seconds']:.0f} s / "
        f"{dfp['wall_seconds']:.0f} s)",
        flush=True,
    )
    return out


def plot(results: list[dict[str, Any]], aud: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, r in enumerate(results):
        ep = list(range(1, len(r["fp32"]["monitor_acc"]) + 1))
        ax1.plot(
            ep,
            [100 * a for a in r["fp32"]["monitor_acc"]],
            "o-",
            color=f"C{2 * i}",
            alpha=0.8,
            label=f"FP32 seed {r['seed']}",
        )
        ax1.plot(
            ep,
            [100 * a for a in r["dfp16"]["monitor_acc"]],
            "s--",
            color=f"C{2 * i + 1}",
            alpha=0.8,
            label=f"DFP-16 seed {r['seed']}",
        )
        ax1.set_xticks(ep)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy (%, monitor subset)")
    ax1.set_title("resnet-small on Fashion-MNIST")
    ax1.legend(fontsize=8)
    layers = list(results[0]["dfp16"]["gemm"]["layers"])
    rep = results[0]["dfp16"]["gemm"]["layers"]
    xs = range(len(layers))
    for i, role in enumerate(("forward", "grad_input", "grad_weight")):
        vals = [math.log2(max(1, rep[n]["max_abs_chunk_sum"][role])) for n in layers]
        ax2.bar([x + (i - 1) * 0.27 for x in xs], vals, width=0.27, label=f"chunked: {role}")
    naive = [
        math.log2(max(1, max(aud["per_layer"][n]["unchunked_max_abs_sum"].values())))
        for n in layers
    ]
    ax2.plot(list(xs), naive, "k^", label="one accumulator per output: max |dot|")
    ax2.axhline(31, color="k", lw=1, ls=":", label="INT32 limit 2^31")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax2.set_ylabel("log2 max |integer sum|")
    ax2.set_ylim(12, 34.5)
    ax2.set_title("INT32 accumulators (seed 0)")
    ax2.legend(fontsize=6.5, loc="lower center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def claims(agg: dict[str, Any], aud: dict[str, Any]) -> list[dict[str, Any]]:
    diff = agg["mean_diff_pp"]
    return [
        {
            "claim": f"DFP-16 within {TOLERANCE_PP} pp of FP32 top-1 (same hyper-parameters)",
            "paper": "ResNet-50 75.70 vs 75.77 (+0.07 pp)",
            "ours": f"{diff:+.2f} pp (mean)",
            "held": abs(diff) <= TOLERANCE_PP,
        },
        {
            "claim": "INT32 accumulators never overflow (chunked accumulation)",
            "paper": "overflow handled by chunking + head-room",
            "ours": f"{agg['overflow_count']} overflows in {agg['gemm_calls']} GEMMs",
            "held": agg["overflow_count"] == 0,
        },
        {
            "claim": "naive INT32 accumulation of the same INT16 operands overflows",
            "paper": "motivates the chunked kernel",
            "ours": f"{aud['unchunked_overflow_count']} overflowing steps in "
            f"{aud['gemms_overflowing']}/{aud['gemms']} GEMMs of one batch",
            "held": aud["unchunked_overflow_count"] > 0,
        },
    ]


def write_report(
    out: Path,
    st: Settings,
    results: list[dict[str, Any]],
    aud: dict[str, Any],
    agg: dict[str, Any],
    wall: float,
    quick: bool,
    load: list[float] | None = None,
) -> None:
    cl = claims(agg, aud)
    load_note = (
        ""
        if not load
        else (
            f"; machine shared with other jobs: load average {load[0]:.1f} on "
            f"{os.cpu_count()} cores at the end"
        )
    )
    lines = ["# INT16 dynamic fixed point training (Das et al., ICLR 2018): FP32 vs DFP-16", ""]
    if quick:
        lines += ["**Quick smoke run (`--quick`): tiny sizes, numbers not meaningful.**", ""]
    sub = st.train_subset or 60000
    lines += [
        f"`resnet-small` (widths {st.widths}) on Fashion-MNIST: {sub} training images "
        f"(a seeded subset), {st.epochs} epochs, batch {st.batch_size}, AdamW lr {st.lr} "
        f"(cosine to 0), weight decay {st.weight_decay}; the same initial "
        "weights, data order and hyper-parameters for both runs of a seed. Test accuracy on "
        f"{results[0]['fp32']['n_test']} test images. DFP-16: "
        "`lowbit.nn.quantize_(model, lowbit.methods.dfp.dfp16_training())` - every Conv2d/"
        "Linear forward, backward-data and weight-gradient GEMM on DFP-16 operands (INT16, "
        "one shared exponent per tensor, re-quantized each step from fp32 master weights), "
        "INT16 x INT16 products in INT32 chunk accumulators of proven-safe length (head-room "
        "shifts so that a chunk holds at least min(K, 16) products), chunks combined in fp32; "
        "BN/ReLU/pooling/loss/optimizer in fp32.",
        "",
        "## Accuracy",
        "",
        "| seed | FP32 top-1 (%) | DFP-16 top-1 (%) | DFP-16 - FP32 (pp) | FP32 train s | "
        "DFP-16 train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        f, d = r["fp32"], r["dfp16"]
        lines.append(
            f"| {r['seed']} | {100 * f['test_acc']:.2f} | {100 * d['test_acc']:.2f} | "
            f"{100 * (d['test_acc'] - f['test_acc']):+.2f} | {f['train_seconds']:.0f} | "
            f"{d['train_seconds']:.0f} |"
        )
    lines += [
        f"| mean | {agg['fp32_mean']:.2f} | {agg['dfp16_mean']:.2f} | "
        f"{agg['mean_diff_pp']:+.2f} | | |",
        "",
        "Paper (ImageNet-1K, FP32 vs DFP-16, top-1/top-5; recalled, not re-verified):",
        "",
        "| network | FP32 | DFP-16 | top-1 diff (pp) |",
        "|---|---|---|---|",
    ]
    for net, ((f1, f5), (d1, d5)) in PAPER.items():
        lines.append(f"| {net} | {f1:.2f} / {f5:.2f} | {d1:.2f} / {d5:.2f} | {d1 - f1:+.2f} |")
    g = agg
    lines += [
        "",
        "## INT32 accumulators",
        "",
        f"Over all {g['gemm_calls']} DFP GEMMs of training (all seeds): "
        f"**{g['overflow_count']} overflows**; largest INT32 chunk sum seen "
        f"{g['max_abs_chunk_sum']} "
        f"(2^{math.log2(max(1, g['max_abs_chunk_sum'])):.2f}); largest proven bound "
        f"`chunk x max|I_a| x max|I_b|` {g['max_bound']} <= 2^31 - 1 = {2**31 - 1}; "
        f"smallest proven safe chunk length K_max {g['min_k_max']} (shortest chunk "
        f"used {g['min_chunk']}: a reduction that short), at most "
        f"{g['max_shift_bits']} head-room bits per GEMM (both operands together); "
        f"{g['unsafe_calls']} GEMMs with an unproven plan.",
        "",
        f"Naive accumulation (one INT32 accumulator per output, no head-room) on the real "
        f"DFP-16 operands of one batch of {aud['batch']} training images of the trained "
        f"seed-{results[0]['seed']} model: **{aud['unchunked_overflow_count']} "
        f"overflowing steps** in {aud['gemms_overflowing']} of {aud['gemms']} GEMMs "
        f"({aud['layers_overflowing']} layers); largest exact dot product "
        f"{aud['max_abs_dot']} (2^{math.log2(max(1, aud['max_abs_dot'])):.2f}). The "
        f"chunked GEMMs of the same batch: {aud['chunked_overflow_count']} overflows.",
        "",
        "| layer | max chunk sum fwd / dgrad / wgrad (log2) | naive overflows fwd / dgrad"
        " / wgrad | naive max dot (log2) |",
        "|---|---|---|---|",
    ]
    rep = results[0]["dfp16"]["gemm"]["layers"]
    for name, r in rep.items():
        a = aud["per_layer"][name]
        roles = ("forward", "grad_input", "grad_weight")
        mx = " / ".join(
            f"{math.log2(max(1, r['max_abs_chunk_sum'][k])):.1f}" if r["calls"][k] else "-"
            for k in roles
        )
        nv = " / ".join(
            str(a["unchunked_overflow_count"][k]) if r["calls"][k] else "-" for k in roles
        )
        md = max(a["unchunked_max_abs_sum"].values())
        lines.append(f"| {name} | {mx} | {nv} | {math.log2(max(1, md)):.1f} |")
    speed = agg["dfp_over_fp32_time"]
    lines += ["", "## Claims", "", "| claim | paper | ours | held |", "|---|---|---|---|"]
    for c in cl:
        lines.append(
            f"| {c['claim']} | {c['paper']} | {c['ours']} | {'yes' if c['held'] else 'no'} |"
        )
    lines.append(
        f"| {PAPER_SPEEDUP}x end-to-end throughput vs FP32 | Knights Mill INT16 "
        f"hardware | not testable: emulated on a CPU, DFP-16 steps take {speed:.1f}x "
        "the FP32 time | n/a |"
    )
    held = [c["claim"] for c in cl if c["held"]]
    failed = [c["claim"] for c in cl if not c["held"]]
    diffs = ", ".join(
        f"{100 * (r['dfp16']['test_acc'] - r['fp32']['test_acc']):+.2f}" for r in results
    )
    fps = [100 * r["fp32"]["test_acc"] for r in results]
    lines += [
        "",
        "**Verdict.** "
        + (f"Held: {'; '.join(held)}." if held else "No claim held.")
        + (f" Did not hold: {'; '.join(failed)}." if failed else "")
        + f" The paired differences (same initial weights and data order: {diffs} pp) are "
        f"much smaller than the seed-to-seed spread of FP32 itself ({max(fps) - min(fps):.2f} "
        "pp); the absolute accuracies are those of a short run of a narrow network on a "
        "subset (a CPU budget), not of converged training, and nothing here replicates the "
        "paper's ImageNet numbers.",
        "",
        "![accuracy and INT32 sums](dfp16.png)",
        "",
        f"Wall time {wall / 60:.1f} min ({platform.processor() or platform.machine()}, torch "
        f"threads {torch.get_num_threads()}{load_note}). Reproduce: "
        f"`python experiments/dfp16.py{' --quick' if quick else ''}` (tables and plot again "
        "from the JSON: `--from-json docs/results/dfp16.json`).",
        "",
    ]
    (out / "dfp16.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes (under a minute)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--from-json",
        default=None,
        help="rewrite the .md and .png from a saved dfp16.json (no training)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        out = Path(args.out)
        st = Settings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in raw["settings"].items()}
        )
        plot(raw["results"], raw["audit"], out / "dfp16.png")
        write_report(
            out,
            st,
            raw["results"],
            raw["audit"],
            raw["aggregate"],
            raw["wall_seconds"],
            raw["quick"],
            raw.get("load_average"),
        )
        print(f"wrote {out / 'dfp16.md'} from {args.from_json}")
        return 0
    st = QUICK if args.quick else Settings()
    if args.seeds:
        st = Settings(**{**asdict(st), "seeds": tuple(int(s) for s in args.seeds.split(","))})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = load(st, args.data_dir)
    results = [run_seed(s, st, splits, not args.no_progress) for s in st.seeds]
    aud = audit(results[0]["model"], splits, st)
    fp = [100 * r["fp32"]["test_acc"] for r in results]
    dq = [100 * r["dfp16"]["test_acc"] for r in results]
    gemms = [r["dfp16"]["gemm"] for r in results]
    agg = {
        "fp32_mean": statistics.fmean(fp),
        "dfp16_mean": statistics.fmean(dq),
        "mean_diff_pp": statistics.fmean(d - f for d, f in zip(dq, fp, strict=True)),
        "overflow_count": sum(g["overflow_count"] for g in gemms),
        "gemm_calls": sum(g["gemm_calls"] for g in gemms),
        "max_abs_chunk_sum": max(g["max_abs_chunk_sum"] for g in gemms),
        "max_bound": max(g["max_bound"] for g in gemms),
        "min_chunk": min(g["min_chunk"] for g in gemms),
        "min_k_max": min(g["min_k_max"] for g in gemms),
        "max_shift_bits": max(g["max_shift_bits"] for g in gemms),
        "unsafe_calls": sum(g["unsafe_calls"] for g in gemms),
        "dfp_over_fp32_time": statistics.fmean(
            r["dfp16"]["train_seconds"] / r["fp32"]["train_seconds"] for r in results
        ),
    }
    wall = time.perf_counter() - t0
    loadavg = list(os.getloadavg())
    plot(results, aud, out / "dfp16.png")
    write_report(out, st, results, aud, agg, wall, args.quick, loadavg)
    for r in results:
        del r["model"]
    raw = {
        "settings": asdict(st),
        "quick": args.quick,
        "results": results,
        "audit": aud,
        "aggregate": agg,
        "claims": claims(agg, aud),
        "paper": PAPER,
        "wall_seconds": wall,
        "load_average": loadavg,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    (out / "dfp16.json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {out / 'dfp16.md'} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
