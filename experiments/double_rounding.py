"""Double Rounding on Fashion-MNIST: the paper's CIFAR-10 settings scaled to a 2-core CPU.

For each seed: train ``resnet-small`` in float32, then from that model

* continue in float32 for as many epochs as the quantized runs get (the FP32 baseline: the
  same model, the same number of epochs);
* Double Rounding at widths {8,6,4,2} (int8 storage) with ALRS, and without ALRS;
* Double Rounding at widths {4,3,2} with ALRS (int4 storage, ``h = 4``, as in the paper);
* floor-shift switching of the same stored integers (``W_h >> (h - b)``), no retraining.

Then, on every seed's {8,6,4,2} and {4,3,2} models, the mixed-precision ILP swept over
mean-bit targets with two layer scores: HASB (Hutchinson traces × weight error, the paper's)
and the measured loss of each one-layer switch. Each configuration is evaluated after
recalibrating its transitional BatchNorm statistics; the ILP front is compared with the
uniform widths per seed and on the mean over seeds, and plotted for seed 0.

Writes ``docs/results/double_rounding.md``, ``double_rounding.png`` and
``double_rounding.json``. The default size (8000 training images, full test set, 3 seeds,
8 quantized epochs, 4 searches per seed) took 56 minutes on 2 idle cores run as three
``--run-only`` processes with ``--threads 1`` (oversubscribed torch threads are several times
slower), then one call without ``--run-only`` to write the report. ``--quick`` runs a tiny
version (for tests).

Reproduce: ``python experiments/double_rounding.py --no-progress``
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lowbit.dr_demo import build, load_data, loaders, markdown_table
from lowbit.methods import double_rounding as dr

ROOT = Path(__file__).resolve().parents[1]

# The paper's CIFAR-10 ResNet-20 numbers (arXiv 2502.01199, copied from
# shared/notes/double-rounding.md, not re-verified): quoted beside ours, never as targets.
PAPER = {
    "fp32": 92.30,
    "alrs": {8: 92.25, 6: 92.32, 4: 92.09, 2: 90.19},
    "no_alrs": {8: 92.17, 6: 92.20, 4: 92.17, 2: 89.67},
    "432": {4: 91.79, 3: 91.83, 2: 88.88},
}


@dataclass(frozen=True)
class Settings:
    """Sizes of the run."""

    seeds: tuple[int, ...] = (0, 1, 2)
    train_subset: int | None = 8000
    test_subset: int | None = None
    fp_epochs: int = 6
    dr_epochs: int = 8
    batch_size: int = 128
    fp_lr: float = 2e-3
    dr_lr: float = 5e-4
    model_widths: tuple[int, ...] = (16, 32, 64)
    targets_8642: tuple[float, ...] = (
        2.0,
        2.5,
        3.0,
        3.5,
        4.0,
        4.25,
        4.5,
        4.75,
        5.0,
        5.25,
        5.5,
        5.75,
        6.0,
        6.5,
        7.0,
        7.5,
        8.0,
    )
    targets_432: tuple[float, ...] = (2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0)
    trace_batches: int = 2
    probes: int = 8
    calib_batches: int = 8
    loss_batches: int = 4


QUICK = Settings(
    seeds=(0, 1),
    train_subset=512,
    test_subset=500,
    fp_epochs=1,
    dr_epochs=1,
    model_widths=(8, 8, 8),
    targets_8642=(2.0, 4.0, 6.0, 8.0),
    targets_432=(2.0, 3.0, 4.0),
    trace_batches=1,
    probes=2,
    calib_batches=2,
    loss_batches=1,
)

BITSETS = {"{8,6,4,2}": ("alrs", "targets_8642"), "{4,3,2}": ("432", "targets_432")}
SENSITIVITIES = ("hessian", "loss")


def run_seed(
    seed: int, st: Settings, data_dir: str | None, progress: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every run of one seed: ``(accuracies, models)``."""
    splits, _ = load_data("fashion-mnist", data_dir, subset=st.train_subset, seed=0)
    train_loader, test_loader = loaders(
        splits, st.batch_size, seed=seed, test_subset=st.test_subset
    )
    torch.manual_seed(seed)
    model = build("resnet-small", splits, widths=st.model_widths)
    t0 = time.perf_counter()
    pre = dr.train_fp(
        model, train_loader, None, epochs=st.fp_epochs, lr=st.fp_lr, seed=seed, progress=progress
    )
    out: dict[str, Any] = {
        "seed": seed,
        "threads": torch.get_num_threads(),
        "seconds": {"fp_pretrain": pre.seconds},
    }
    fp = dr.train_fp(
        copy.deepcopy(pre.model),
        train_loader,
        test_loader,
        epochs=st.dr_epochs,
        lr=st.dr_lr,
        seed=seed,
        progress=progress,
    )
    out["fp32"] = fp.accuracy["fp"]
    out["seconds"]["fp_finetune"] = fp.seconds
    models: dict[str, Any] = {}
    runs = (
        ("alrs", (8, 6, 4, 2), True, 8),
        ("no_alrs", (8, 6, 4, 2), False, 8),
        ("432", (4, 3, 2), True, 4),
    )
    for name, bits, alrs, h in runs:
        m = dr.convert(copy.deepcopy(pre.model), bits, h=h)
        res = dr.train(
            m,
            train_loader,
            None,
            bits=bits,
            epochs=st.dr_epochs,
            alrs=alrs,
            lr=st.dr_lr,
            seed=seed,
            progress=progress,
            h=h,
        )
        out["seconds"][name] = res.seconds
        out[name] = {b: dr.evaluate(m, test_loader, bits=b) for b in bits}
        out[f"{name}_floor"] = {
            b: (out[name][b] if b == h else dr.evaluate(m, test_loader, bits=b, method="floor"))
            for b in bits
        }
        models[name] = m
    models["loaders"] = (train_loader, test_loader)
    out["seconds"]["total"] = time.perf_counter() - t0
    return out, models


def summary(values: list[float]) -> dict[str, float]:
    """Mean, sample std, min and max (in %)."""
    v = [100 * x for x in values]
    return {
        "mean": statistics.fmean(v),
        "std": statistics.stdev(v) if len(v) > 1 else 0.0,
        "min": min(v),
        "max": max(v),
    }


def fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def run_search(
    model: Any,
    loaders_: tuple[Any, Any],
    targets: tuple[float, ...],
    st: Settings,
    progress: bool,
    sensitivity: str,
) -> dr.SearchResult:
    return dr.search(
        model,
        loaders_[0],
        loaders_[1],
        targets=targets,
        trace_batches=st.trace_batches,
        n_probes=st.probes,
        calib_batches=st.calib_batches,
        loss_batches=st.loss_batches,
        sensitivity=sensitivity,
        progress=progress,
    )


def run_searches(models: dict[str, Any], st: Settings, progress: bool) -> dict[str, Any]:
    """Every (width set, sensitivity) search of one seed, as JSON-ready dicts."""
    out: dict[str, Any] = {}
    for name, (run, targets) in BITSETS.items():
        for sens in SENSITIVITIES:
            r = run_search(models[run], models["loaders"], getattr(st, targets), st, progress, sens)
            out[f"{name} {sens}"] = {
                "traces": r.traces,
                "points": r.points,
                "front": r.front,
                "seconds": r.seconds,
            }
    return out


def plot(results: dict[str, Any], searches: dict[str, dr.SearchResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    ax = axes[0]
    agg = results["aggregate"]
    fp = agg["fp32"]["mean"]
    ax.axhline(fp, color="gray", ls="--", lw=1, label=f"FP32 ({fp:.2f})")
    for key, label, style in (
        ("alrs", "DR {8,6,4,2} + ALRS", "o-"),
        ("no_alrs", "DR {8,6,4,2}, no ALRS", "^-"),
        ("alrs_floor", "floor shift (ALRS model)", "s--"),
        ("432", "DR {4,3,2} + ALRS (int4)", "D-"),
    ):
        bits = sorted(agg[key], key=int)
        ax.errorbar(
            [int(b) for b in bits],
            [agg[key][b]["mean"] for b in bits],
            yerr=[agg[key][b]["std"] for b in bits],
            fmt=style,
            capsize=3,
            label=label,
        )
    ax.set_xlabel("bits (weights and activations)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    bottom = max(0.0, fp - 12)
    ax.set_ylim(bottom, fp + 3)
    hidden = [
        f"{b} bits {agg['alrs_floor'][b]['mean']:.1f}"
        for b in sorted(agg["alrs_floor"])
        if agg["alrs_floor"][b]["mean"] < bottom
    ]
    if hidden:
        ax.text(
            0.02,
            0.03,
            "floor shift below the axis: " + ", ".join(hidden),
            transform=ax.transAxes,
            fontsize=7,
            color="tab:green",
        )
    ax.set_title("Uniform widths switched from one stored model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    colors = {"{8,6,4,2}": "tab:blue", "{4,3,2}": "tab:green"}
    styles = {"hessian": ("o-", "HASB scores"), "loss": ("x:", "measured-loss scores")}
    for key, res in searches.items():
        name, sens = key.split(" ")
        ilp = [p for p in res.points if p["kind"] == "ilp"]
        ax.plot(
            [p["mean_bits"] for p in ilp],
            [100 * p["accuracy"] for p in ilp],
            styles[sens][0],
            color=colors[name],
            ms=4,
            label=f"ILP ({styles[sens][1]}), {name}",
        )
        if sens == SENSITIVITIES[0]:
            uni = [p for p in res.points if p["kind"] == "uniform"]
            ax.scatter(
                [p["mean_bits"] for p in uni],
                [100 * p["accuracy"] for p in uni],
                marker="s",
                s=60,
                color=colors[name],
                edgecolor="k",
                zorder=3,
                label=f"uniform widths, {name}",
            )
    ax.set_xlabel("mean weight bits (parameter-weighted)")
    ax.set_ylabel("test accuracy (%), seed 0")
    ax.set_title("Mixed precision: ILP sweep vs uniform widths")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ilp_vs_uniform(res: dr.SearchResult) -> list[dict[str, Any]]:
    """For each uniform width b: the best ILP configuration with mean bits <= b."""
    ilp = [p for p in res.points if p["kind"] == "ilp"]
    rows = []
    for u in (p for p in res.points if p["kind"] == "uniform"):
        cands = [p for p in ilp if p["mean_bits"] <= u["mean_bits"] + 1e-9]
        best = max(cands, key=lambda p: p["accuracy"]) if cands else None
        rows.append(
            {
                "bits": u["mean_bits"],
                "uniform": u["accuracy"],
                "ilp": None if best is None else best["accuracy"],
                "ilp_mean_bits": None if best is None else best["mean_bits"],
            }
        )
    return rows


def ilp_margins(per_seed: list[dict[str, dr.SearchResult]], key: str) -> list[dict[str, Any]]:
    """Per uniform width: uniform and best-ILP-at-or-below accuracies over seeds (in %), and
    their per-seed differences."""
    tables = [ilp_vs_uniform(s[key]) for s in per_seed]
    rows = []
    for i, first in enumerate(tables[0]):
        per = [t[i] for t in tables]
        if any(r["ilp"] is None for r in per):
            continue
        rows.append(
            {
                "bits": first["bits"],
                "uniform": summary([r["uniform"] for r in per]),
                "ilp": summary([r["ilp"] for r in per]),
                "ilp_mean_bits": [r["ilp_mean_bits"] for r in per],
                "margins": [100 * (r["ilp"] - r["uniform"]) for r in per],
            }
        )
    return rows


def write_report(
    results: dict[str, Any],
    searches: dict[str, dr.SearchResult],
    per_seed: list[dict[str, dr.SearchResult]],
    st: Settings,
    out: Path,
    png: Path,
    seconds: float,
) -> Path:
    agg = results["aggregate"]
    seeds = results["seeds"]
    n = len(seeds)
    md: list[str] = []
    md.append("# Double Rounding, ALRS and the mixed-precision ILP on Fashion-MNIST")
    md.append("")
    md.append(
        "One `resnet-small` stored once as integers (int8 for {8,6,4,2}, int4 for {4,3,2}) and "
        "switched to each width by integer rounding of the stored codes "
        "(`lowbit.methods.double_rounding`). Every quantized model starts from the same "
        "float32 model; the FP32 baseline is that model trained on for the same number of "
        f"epochs. Test accuracy in %, mean ± sample std over {n} seeds "
        f"({', '.join(str(s['seed']) for s in seeds)}); the paper's CIFAR-10 ResNet-20 numbers "
        "beside ours are quoted for the shape (arXiv 2502.01199, copied from the project "
        "notes, not re-verified), not as targets."
    )
    md.append("")
    cols = ["run", "8 bits", "6 bits", "4 bits", "2 bits", "paper (CIFAR-10) 8 / 6 / 4 / 2"]
    rows = [["FP32 (same epochs)", *[fmt(agg["fp32"])] * 4, f"{PAPER['fp32']:.2f}"]]
    for key, label, paper in (
        ("alrs", "Double Rounding + ALRS", PAPER["alrs"]),
        ("no_alrs", "Double Rounding, no ALRS", PAPER["no_alrs"]),
        ("alrs_floor", "floor shift (ALRS model's int8)", None),
    ):
        rows.append(
            [
                label,
                *(fmt(agg[key][str(b)]) for b in (8, 6, 4, 2)),
                " / ".join(f"{paper[b]:.2f}" for b in (8, 6, 4, 2)) if paper else "—",
            ]
        )
    md.append("## Widths {8, 6, 4, 2} (int8 storage)")
    md.append("")
    md.append(markdown_table(cols, rows))
    md.append("")
    md.append("## Widths {4, 3, 2} (int4 storage)")
    md.append("")
    rows = [
        [
            "Double Rounding + ALRS",
            *(fmt(agg["432"][str(b)]) for b in (4, 3, 2)),
            " / ".join(f"{PAPER['432'][b]:.2f}" for b in (4, 3, 2)),
        ],
        ["floor shift (same int4)", *(fmt(agg["432_floor"][str(b)]) for b in (4, 3, 2)), "—"],
    ]
    md.append(
        markdown_table(["run", "4 bits", "3 bits", "2 bits", "paper (CIFAR-10) 4 / 3 / 2"], rows)
    )
    md.append("")
    md.append("## Which claims held")
    md.append("")
    for line in results["claims"]:
        md.append(f"- **{'held' if line['held'] else 'did not hold'}**: {line['text']}")
    md.append("")
    md.append("## Mixed precision: layer scores and the ILP")
    md.append("")
    md.append(f"![accuracy vs bits and the ILP front]({png.name})")
    md.append("")
    md.append(
        "Each seed's model is searched twice: with the paper's HASB score "
        "(−t_l·‖Ŵ_b − Ŵ_h‖², weights only) and with the measured training loss of each "
        "one-layer switch (weights, activations and BatchNorm together; "
        f"{st.loss_batches} batches after {st.calib_batches} recalibration batches). For each "
        "uniform width b: the best ILP configuration with mean bits ≤ b against the uniform "
        f"model, test accuracy in %, mean ± std over {n} seeds, and each seed's margin in pp."
    )
    md.append("")
    rows = []
    for key in searches:
        for r in ilp_margins(per_seed, key):
            rows.append(
                [
                    key,
                    f"{r['bits']:g}",
                    fmt(r["uniform"]),
                    fmt(r["ilp"]),
                    " / ".join(f"{b:.2f}" for b in r["ilp_mean_bits"]),
                    " / ".join(f"{m:+.2f}" for m in r["margins"]),
                    f"{statistics.fmean(r['margins']):+.2f}",
                ]
            )
    md.append(
        markdown_table(
            [
                "widths, score",
                "bits",
                "uniform",
                "best ILP ≤ bits",
                "ILP mean bits per seed",
                "margin per seed (pp)",
                "mean margin",
            ],
            rows,
        )
    )
    md.append("")
    md.append("### Every ILP configuration of seed 0")
    md.append("")
    for name, res in searches.items():
        md.append(f"#### {name}")
        md.append("")
        rows = [
            [
                f"{r['target']:.2f}" if r["kind"] == "ilp" else "uniform",
                f"{r['mean_bits']:.3f}",
                f"{100 * r['accuracy']:.2f}",
                "yes" if r["on_front"] else "",
            ]
            for r in res.table()
        ]
        md.append(markdown_table(["ILP target", "mean bits", "accuracy %", "on front"], rows))
        md.append("")
        md.append(
            "Best ILP configuration at or below each uniform width: "
            + "; ".join(
                f"{r['bits']:g} bits: uniform {100 * r['uniform']:.2f}, ILP "
                + ("—" if r["ilp"] is None else f"{100 * r['ilp']:.2f} ({r['ilp_mean_bits']:.2f})")
                for r in ilp_vs_uniform(res)
            )
            + "."
        )
        md.append("")
        if res.traces:
            md.append(
                "HASB sensitivity t_l = tr(H_l)/n_l (Hutchinson, "
                f"{st.probes} probes × {st.trace_batches} batches): "
                + ", ".join(f"`{k}` {v:.3g}" for k, v in res.traces.items())
                + "."
            )
            md.append("")
    md.append("## Settings")
    md.append("")
    per_seed = statistics.fmean(s["seconds"]["total"] for s in seeds)
    rows = [
        [
            "data",
            f"Fashion-MNIST, {st.train_subset or 60000} training images (seed-0 subset), "
            f"{st.test_subset or 10000} test images",
        ],
        ["model", f"resnet-small widths {st.model_widths} (first conv and fc in float32)"],
        [
            "FP32 pretraining",
            f"{st.fp_epochs} epochs, Adam lr {st.fp_lr}, cosine, batch {st.batch_size}",
        ],
        [
            "quantized runs",
            f"{st.dr_epochs} epochs from the FP32 model, Adam lr {st.dr_lr}, "
            "cosine, weight decay 5e-5 (not on scales/BN), one sequential "
            "step per width per batch",
        ],
        [
            "ILP",
            "score(l, b) = −t_l·‖Ŵ_b − Ŵ_h‖² (HASB) or −L(layer l at b) (measured), "
            "scipy.optimize.milp, mean bits ≤ target; "
            f"transitional BN recalibrated on {st.calib_batches} batches",
        ],
        [
            "time",
            f"{seconds / 60:.1f} min of process time in all, {per_seed / 60:.1f} min of "
            "training per seed "
            f"(torch threads per process: {seeds[0].get('threads', 'not recorded')})",
        ],
        ["machine", f"{platform.processor() or platform.machine()}, torch {torch.__version__}"],
    ]
    md.append(markdown_table(["", ""], rows))
    md.append("")
    md.append("Per seed (accuracy %):")
    md.append("")
    rows = []
    for s in seeds:
        rows.append(
            [
                s["seed"],
                f"{100 * s['fp32']:.2f}",
                " / ".join(f"{100 * s['alrs'][b]:.2f}" for b in (8, 6, 4, 2)),
                " / ".join(f"{100 * s['no_alrs'][b]:.2f}" for b in (8, 6, 4, 2)),
                " / ".join(f"{100 * s['alrs_floor'][b]:.2f}" for b in (8, 6, 4, 2)),
                " / ".join(f"{100 * s['432'][b]:.2f}" for b in (4, 3, 2)),
            ]
        )
    md.append(
        markdown_table(
            ["seed", "FP32", "ALRS 8/6/4/2", "no ALRS 8/6/4/2", "floor 8/6/4/2", "{4,3,2} ALRS"],
            rows,
        )
    )
    md.append("")
    md.append("Reproduce: `python experiments/double_rounding.py --no-progress`")
    path = out / "double_rounding.md"
    path.write_text("\n".join(md) + "\n")
    return path


def claims(agg: dict[str, Any], per_seed: list[dict[str, dr.SearchResult]]) -> list[dict[str, Any]]:
    """The issue's acceptance claims, checked on the means over seeds."""
    fp = agg["fp32"]["mean"]
    out = []
    gaps = {b: agg["alrs"][str(b)]["mean"] - fp for b in (8, 6, 4, 2)}
    out.append(
        {
            "held": all(gaps[b] >= -0.5 for b in (8, 6, 4)),
            "text": "8/6/4 bits within 0.5 pp of FP32: "
            + ", ".join(f"{b} bits {gaps[b]:+.2f} pp" for b in (8, 6, 4)),
        }
    )
    out.append({"held": gaps[2] >= -3.0, "text": f"2 bits within 3 pp of FP32: {gaps[2]:+.2f} pp"})
    for b, key in ((2, "alrs"), (3, "432"), (2, "432")):
        d, f = agg[key][str(b)]["mean"], agg[f"{key}_floor"][str(b)]["mean"]
        out.append(
            {
                "held": d > f,
                "text": f"Double Rounding beats floor shift at {b} bits "
                f"({'{8,6,4,2}' if key == 'alrs' else '{4,3,2}'}): "
                f"{d:.2f} vs {f:.2f}",
            }
        )
    a, n = agg["alrs"]["2"], agg["no_alrs"]["2"]
    out.append(
        {
            "held": a["mean"] >= n["mean"],
            "text": f"ALRS ≥ no ALRS at 2 bits: {fmt(a)} vs {fmt(n)} (the spread over seeds "
            f"is {a['min']:.2f}–{a['max']:.2f} vs {n['min']:.2f}–{n['max']:.2f})",
        }
    )
    for key in per_seed[0]:
        rows = ilp_margins(per_seed, key)
        means = {r["bits"]: statistics.fmean(r["margins"]) for r in rows}
        worst_b = min(means, key=means.__getitem__)
        n_uniform = sum(1 for p in per_seed[0][key].points if p["kind"] == "uniform")
        held_seeds = sum(
            all(r["ilp"] is not None and r["ilp"] >= r["uniform"] for r in ilp_vs_uniform(s[key]))
            for s in per_seed
        )
        out.append(
            {
                "held": len(rows) == n_uniform and all(m >= 0 for m in means.values()),
                "text": f"ILP front at or above every uniform width ({key}), mean over seeds: "
                f"worst mean margin {means[worst_b]:+.2f} pp at {worst_b:g} bits; "
                f"{held_seeds} of {len(per_seed)} seeds hold at every width",
            }
        )
    return out


_RUNS = ("alrs", "no_alrs", "432", "alrs_floor", "no_alrs_floor", "432_floor")


def _load_seed(path: Path, st: Settings) -> dict[str, Any] | None:
    """A seed's cached results when they were made with these settings (else ``None``)."""
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    if d.get("settings") != json.loads(json.dumps(_seed_settings(st))):
        return None
    res = d["results"]
    for key in _RUNS:  # JSON turned the bit-width keys into strings
        res[key] = {int(b): v for b, v in res[key].items()}
    return res


def _seed_settings(st: Settings) -> dict[str, Any]:
    """The settings a seed's results depend on (not the seed list or the search sizes)."""
    d = asdict(st)
    d.pop("seeds")
    return d


def _search_from_json(d: dict[str, Any]) -> dr.SearchResult:
    return dr.SearchResult(
        traces=d["traces"],
        scores={},
        solutions=[],
        points=d["points"],
        front=d["front"],
        seconds=d.get("seconds", 0.0),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument(
        "--run-only",
        default=None,
        help="comma-separated seeds to run and cache without writing the report (to spread "
        "seeds over processes)",
    )
    p.add_argument("--force", action="store_true", help="rerun seeds that are cached")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    st = QUICK if args.quick else Settings()
    if args.seeds:
        st = Settings(**{**asdict(st), "seeds": tuple(int(s) for s in args.seeds.split(","))})
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # each seed's results and searches are cached, so seeds can run in separate processes and
    # the report is assembled from whatever is cached
    cache = out / ("double_rounding_quick" if args.quick else "double_rounding")
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    todo = [int(s) for s in args.run_only.split(",")] if args.run_only else list(st.seeds)
    seeds: dict[int, dict[str, Any]] = {}
    for seed in todo:
        path = cache / f"seed{seed}.json"
        res = None if args.force else _load_seed(path, st)
        if res is None:
            res, models = run_seed(seed, st, args.data_dir, progress)
            res["search"] = run_searches(models, st, progress)
            path.write_text(
                json.dumps({"settings": _seed_settings(st), "results": res}, indent=2, default=str)
                + "\n"
            )
        seeds[seed] = res
        print(
            f"seed {seed}: FP32 {100 * res['fp32']:.2f}; ALRS "
            + " / ".join(f"{100 * res['alrs'][b]:.2f}" for b in (8, 6, 4, 2))
            + f"; {res['seconds']['total']:.0f} s",
            flush=True,
        )
    if args.run_only:
        return 0
    missing = [s for s in st.seeds if s not in seeds]
    if missing:
        print(f"not all seeds are cached (missing {missing}); no report written")
        return 1
    results_seeds = [seeds[s] for s in st.seeds]
    agg: dict[str, Any] = {"fp32": summary([s["fp32"] for s in results_seeds])}
    for key in ("alrs", "no_alrs", "alrs_floor", "no_alrs_floor", "432", "432_floor"):
        agg[key] = {
            str(b): summary([s[key][b] for s in results_seeds]) for b in results_seeds[0][key]
        }
    per_seed = [{k: _search_from_json(v) for k, v in s["search"].items()} for s in results_seeds]
    searches = per_seed[0]
    seconds = sum(s["seconds"]["total"] for s in results_seeds) + sum(
        v.seconds for s in per_seed for v in s.values()
    )
    results = {
        "seeds": results_seeds,
        "aggregate": agg,
        "settings": asdict(st),
        "seconds": seconds,
    }
    results["claims"] = claims(agg, per_seed)
    png = out / "double_rounding.png"
    plot(results, searches, png)
    md = write_report(results, searches, per_seed, st, out, png, seconds)
    (out / "double_rounding.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(md.read_text())
    dt = time.perf_counter() - t0
    print(f"wrote {md}, {png} and {out / 'double_rounding.json'} ({dt:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
