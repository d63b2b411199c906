"""A2Q on Fashion-MNIST: accuracy vs accumulator width with a wrapping P-bit integer accumulator.

One ``cnn-small`` (conv 1→16, conv 16→32, fc 1568→10; K = 9, 144, 1568) is trained in float32,
then fine-tuned with quantization-aware training at W8A8 (8-bit per-channel weights, 8-bit
inputs: signed for the first conv, which sees normalised pixels, unsigned after the ReLUs):

* plain QAT (``lowbit.methods.a2q.qat_int``): round-to-nearest weights, no accumulator
  constraint; trained once and evaluated at every P;
* A2Q (``a2q(acc_bits=P)``) trained for each P, with the paper's weight-norm initialisation
  (``init="norm"``) and with a Euclidean-projection initialisation after A2Q+
  (``init="ep"``).

Every model is then run as integer GEMMs (``lowbit.arith.int_matmul``; conv via unfold) with a
signed P-bit accumulator that wraps on overflow, as hardware does, counting overflows; plain
QAT is also run with a saturating accumulator. Reported: test accuracy (integer inference on
the first ``int_test`` test images; fake-quantized float accuracy on the full test set),
fraction of dot products that overflowed / came out wrong, the weight sparsity of A2Q models
and each layer's data-type bound.

Writes ``docs/results/a2q.md``, ``a2q.png`` and ``a2q.json``. Full run (10 000 training
images): 5.2 CPU-minutes on one core (12.6 min wall on a shared 2-core machine).
``--quick`` is a < 1 min smoke run; ``--report-only`` rewrites the .md/.png from the .json.

Reproduce: ``python experiments/a2q.py``
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import lowbit.nn as lbnn
from lowbit.data import load_dataset, make_loader
from lowbit.methods import a2q
from lowbit.models import build_model

ROOT = Path(__file__).resolve().parents[1]

# The paper's claims (A2Q, ICCV 2023; from the project notes, "mem, not verified"): quoted
# beside ours for their shape, never as targets.
PAPER = {
    "claim": "accuracy close to the 32-bit-accumulator baseline down to ~10-16-bit "
    "accumulators (W/A 5-8 bits, CIFAR-10 MobileNetV1/ResNet-18, BSD300), while "
    "data-type-bound models at the same P collapse; zero overflows by construction",
    "repro_target": "ResNet-18 CIFAR-10 W8A8: P=16 within ~1 pt of P=32, zero overflows",
}


@dataclass(frozen=True)
class Settings:
    """Sizes of the run."""

    train_subset: int = 10000
    int_test: int = 2000
    pre_epochs: int = 4
    qat_epochs: int = 4
    batch_size: int = 128
    pre_lr: float = 2e-3
    qat_lr: float = 1e-3
    weight_bits: int = 8
    act_bits: int = 8
    acc_bits: tuple[int, ...] = (32, 20, 16, 14, 12)
    inits: tuple[str, ...] = ("norm", "ep")
    seed: int = 0


QUICK = Settings(
    train_subset=500, int_test=100, pre_epochs=1, qat_epochs=1, acc_bits=(32, 16, 12), inits=("ep",)
)


def _eval(
    model: Any, full_test: Any, int_test: Any, p: int, overflow: str = "wrap"
) -> dict[str, Any]:
    acc_int, rep = a2q.accuracy(model, int_test, integer=True, acc_bits=p, overflow=overflow)
    assert rep is not None
    return {
        "int_acc": acc_int,
        "overflow": rep.to_dict()["total"],
        "layers": {k: v["overflow_rate"] for k, v in rep.to_dict()["layers"].items()},
    }


def run(st: Settings, data_dir: str | None, progress: bool) -> dict[str, Any]:
    torch.manual_seed(st.seed)
    splits = load_dataset("fashion-mnist", data_dir, subset=st.train_subset, seed=st.seed)
    train = make_loader(splits.train, st.batch_size, shuffle=True, seed=st.seed)
    full_test = make_loader(splits.test, 1000, shuffle=False)
    int_test = make_loader(
        torch.utils.data.Subset(splits.test, range(st.int_test)), 500, shuffle=False
    )
    model = build_model(
        "cnn-small",
        in_channels=splits.in_channels,
        num_classes=splits.num_classes,
        image_size=splits.image_size,
    )
    t0 = time.perf_counter()
    a2q.train(model, train, epochs=st.pre_epochs, lr=st.pre_lr, progress=progress)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in full_test)
    out: dict[str, Any] = {
        "fp32": correct / len(splits.test),
        "seconds": {"pretrain": time.perf_counter() - t0},
    }
    ks = {"features.0": (9, True), "features.4": (144, False), "fc": (1568, False)}
    out["datatype_bound"] = {
        name: a2q.datatype_acc_bits(k, st.act_bits, st.weight_bits, sg)
        for name, (k, sg) in ks.items()
    }

    # plain QAT: one model, every P
    t = time.perf_counter()
    qat = lbnn.quantize_(copy.deepcopy(model), a2q.qat_int(st.weight_bits, st.act_bits))
    a2q.train(qat, train, epochs=st.qat_epochs, lr=st.qat_lr, progress=progress)
    res: dict[str, Any] = {
        "float_acc": a2q.accuracy(qat, full_test)[0],
        "sparsity": a2q.sparsity(qat),
        "l1": [asdict(r) for r in a2q.l1_report(qat)],
        "wrap": {},
        "saturate": {},
    }
    for p in st.acc_bits:
        res["wrap"][str(p)] = _eval(qat, full_test, int_test, p)
        res["saturate"][str(p)] = _eval(qat, full_test, int_test, p, "saturate")
        w = res["wrap"][str(p)]
        print(
            f"qat_int P={p}: int acc {100 * w['int_acc']:.2f} (saturate "
            f"{100 * res['saturate'][str(p)]['int_acc']:.2f}), overflowed dot products "
            f"{100 * w['overflow']['overflow_rate']:.2f}%",
            flush=True,
        )
    out["qat_int"] = res
    out["seconds"]["qat_int"] = time.perf_counter() - t

    for init in st.inits:
        key = f"a2q_{init}"
        out[key] = {}
        t = time.perf_counter()
        for p in st.acc_bits:
            m = lbnn.quantize_(
                copy.deepcopy(model), a2q.a2q(p, st.weight_bits, st.act_bits, init=init)
            )
            a2q.train(m, train, epochs=st.qat_epochs, lr=st.qat_lr, progress=progress)
            r = _eval(m, full_test, int_test, p)
            r["float_acc"] = a2q.accuracy(m, full_test)[0]
            r["sparsity"] = a2q.sparsity(m)
            r["l1"] = [asdict(x) for x in a2q.l1_report(m)]
            out[key][str(p)] = r
            print(
                f"{key} P={p}: int acc {100 * r['int_acc']:.2f}, float acc "
                f"{100 * r['float_acc']:.2f}, overflow steps {r['overflow']['overflow_steps']}"
                f", sparsity {100 * r['sparsity']:.1f}%",
                flush=True,
            )
        out["seconds"][key] = time.perf_counter() - t
    return out


def plot(res: dict[str, Any], st: Settings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = list(st.acc_bits)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ax[0].axhline(100 * res["fp32"], color="gray", ls=":", label="fp32 model")
    ax[0].plot(
        ps,
        [100 * res["qat_int"]["wrap"][str(p)]["int_acc"] for p in ps],
        "o-",
        color="C3",
        label="plain QAT, wrapping acc.",
    )
    ax[0].plot(
        ps,
        [100 * res["qat_int"]["saturate"][str(p)]["int_acc"] for p in ps],
        "o--",
        color="C4",
        label="plain QAT, saturating acc.",
    )
    for i, init in enumerate(st.inits):
        key = f"a2q_{init}"
        ax[0].plot(
            ps,
            [100 * res[key][str(p)]["int_acc"] for p in ps],
            "s-",
            color=f"C{i}",
            label=f"A2Q (init={init}), wrapping acc.",
        )
    ax[0].set_xlabel("accumulator bits P")
    ax[0].set_ylabel("test accuracy (%), integer inference")
    ax[0].invert_xaxis()
    ax[0].legend(fontsize=8)
    ax[0].set_title(f"cnn-small, Fashion-MNIST, W{st.weight_bits}A{st.act_bits}")
    ax[1].plot(
        ps,
        [100 * res["qat_int"]["wrap"][str(p)]["overflow"]["overflow_rate"] for p in ps],
        "o-",
        color="C3",
        label="plain QAT: dot products overflowed",
    )
    ax[1].plot(
        ps,
        [100 * res["qat_int"]["wrap"][str(p)]["overflow"]["wrong_rate"] for p in ps],
        "o--",
        color="C3",
        label="plain QAT: results wrong",
    )
    ax[1].plot(
        ps,
        [100 * res["qat_int"]["wrap"][str(p)]["layers"]["fc"] for p in ps],
        "o:",
        color="C4",
        label="plain QAT: fc layer's dot products overflowed",
    )
    for i, init in enumerate(st.inits):
        key = f"a2q_{init}"
        ax[1].plot(
            ps,
            [100 * res[key][str(p)]["overflow"]["overflow_rate"] for p in ps],
            "s-",
            color=f"C{i}",
            label=f"A2Q (init={init})",
        )
    ax[1].set_xlabel("accumulator bits P")
    ax[1].set_ylabel("% of dot products")
    ax[1].invert_xaxis()
    ax[1].legend(fontsize=8)
    ax[1].set_title("overflow with a wrapping accumulator")
    for i, init in enumerate(st.inits):
        key = f"a2q_{init}"
        ax[2].plot(
            ps,
            [100 * res[key][str(p)]["sparsity"] for p in ps],
            "s-",
            color=f"C{i}",
            label=f"A2Q (init={init})",
        )
    ax[2].axhline(100 * res["qat_int"]["sparsity"], color="C3", ls=":", label="plain QAT")
    ax[2].set_xlabel("accumulator bits P")
    ax[2].set_ylabel("zero integer weights (%)")
    ax[2].invert_xaxis()
    ax[2].legend(fontsize=8)
    ax[2].set_title("weight sparsity")
    for a in ax:
        a.set_xticks(ps)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def claims(res: dict[str, Any], st: Settings) -> list[dict[str, Any]]:
    ps = list(st.acc_bits)
    a2q_keys = [f"a2q_{i}" for i in st.inits]
    zero = all(res[k][str(p)]["overflow"]["overflow_steps"] == 0 for k in a2q_keys for p in ps)
    bound = max(res["datatype_bound"].values())
    low = [p for p in ps if p < bound]
    qat_over = all(res["qat_int"]["wrap"][str(p)]["overflow"]["overflow_steps"] > 0 for p in low)
    best = {p: max(res[k][str(p)]["int_acc"] for k in a2q_keys) for p in ps}
    ref = best[max(ps)]
    within = {p: 100 * (ref - best[p]) for p in ps}
    return [
        {
            "claim": "A2Q never overflows its P-bit accumulator",
            "held": zero,
            "detail": "0 overflowing steps in every A2Q model at its own P"
            if zero
            else "some A2Q model overflowed",
        },
        {
            "claim": "plain QAT overflows below the data-type bound",
            "held": qat_over,
            "detail": f"P < {bound} (the model's data-type bound, its largest layer's): overflow "
            "at every such P"
            if qat_over
            else "some P below the bound showed no overflow",
        },
        {
            "claim": "A2Q keeps accuracy close to its P=32 value at P=16 (within ~1 pt)",
            "held": 16 in within and within[16] <= 1.0,
            "detail": "best A2Q integer accuracy minus its P=32 value: "
            + ", ".join(f"P={p}: {100 * (best[p] - ref):+.1f} pt" for p in ps),
        },
        {
            "claim": "at the same P, A2Q is at least as accurate as plain QAT with a wrapping "
            "accumulator (within 0.5 pt)",
            "held": all(
                100 * (best[p] - res["qat_int"]["wrap"][str(p)]["int_acc"]) >= -0.5 for p in ps
            ),
            "detail": ", ".join(
                f"P={p}: {100 * best[p]:.1f} vs "
                f"{100 * res['qat_int']['wrap'][str(p)]['int_acc']:.1f}"
                for p in ps
            ),
        },
        {
            "claim": "A2Q's sparsity grows as P shrinks",
            "held": all(
                res[k][str(a)]["sparsity"] <= res[k][str(b)]["sparsity"] + 1e-9
                for k in a2q_keys
                for a, b in itertools.pairwise(ps)
            ),
            "detail": "; ".join(
                f"{k}: " + ", ".join(f"{100 * res[k][str(p)]['sparsity']:.0f}%" for p in ps)
                for k in a2q_keys
            ),
        },
    ]


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _pct(x: float) -> str:
    """A percentage with 3 significant digits (small rates stay visible)."""
    return "0%" if x == 0 else f"{100 * x:.3g}%"


def write_report(res: dict[str, Any], st: Settings, out: Path, png: Path, seconds: float) -> Path:
    ps = list(st.acc_bits)
    md = ["# A2Q: accumulator-aware quantization on Fashion-MNIST", ""]
    md.append(
        f"`cnn-small` (K = 9, 144, 1568 per dot product), trained {st.pre_epochs} epochs in "
        f"float32 on {st.train_subset} Fashion-MNIST training images (fp32 test accuracy "
        f"{100 * res['fp32']:.2f}%), then {st.qat_epochs} epochs of QAT (Adam, lr "
        f"{st.qat_lr:g}) at **W{st.weight_bits}A{st.act_bits}** (per-channel weights; inputs "
        "signed for the first conv, unsigned after the ReLUs). Each model then runs as "
        "integer GEMMs (`lowbit.arith.int_matmul`, conv via unfold) accumulating in k order "
        "into a signed P-bit accumulator that **wraps** on overflow; `int acc` is the accuracy "
        f"of that integer inference on the first {st.int_test} test images, `float acc` the "
        "fake-quantized (float-accumulated) accuracy on all 10 000. Plain QAT is trained once "
        "and evaluated at every P; A2Q is trained for each P. Seed "
        f"{st.seed}, one run per cell (no error bars)."
    )
    md.append("")
    md.append(
        f"Paper (A2Q, ICCV 2023; project notes, not re-verified): {PAPER['claim']}. "
        f"Small repro target: {PAPER['repro_target']}."
    )
    md.append("")
    db = res["datatype_bound"]
    md.append(
        "Data-type bound (P >= α + φ(α) + 1, the accumulator plain QAT needs for a "
        "guarantee): " + ", ".join(f"{k}: {v} bits" for k, v in db.items()) + "."
    )
    md.append("")
    hdr = [
        "P",
        "plain QAT int acc (wrap)",
        "plain QAT int acc (saturate)",
        "plain QAT: dot products overflowed / wrong (fc layer overflowed)",
    ]
    for init in st.inits:
        hdr += [f"A2Q {init}: int acc", f"A2Q {init}: overflow steps", f"A2Q {init}: sparsity"]
    md.append("| " + " | ".join(hdr) + " |")
    md.append("|" + "---|" * len(hdr))
    q = res["qat_int"]
    for p in ps:
        w = q["wrap"][str(p)]
        row = [
            str(p),
            f"{100 * w['int_acc']:.2f}",
            f"{100 * q['saturate'][str(p)]['int_acc']:.2f}",
            f"{_pct(w['overflow']['overflow_rate'])} / {_pct(w['overflow']['wrong_rate'])}"
            f" (fc {_pct(w['layers']['fc'])})",
        ]
        for init in st.inits:
            r = res[f"a2q_{init}"][str(p)]
            row += [
                f"{100 * r['int_acc']:.2f} (float {100 * r['float_acc']:.2f})",
                str(r["overflow"]["overflow_steps"]),
                f"{100 * r['sparsity']:.1f}%",
            ]
        md.append("| " + " | ".join(row) + " |")
    md.append("")
    md.append(
        f"Plain QAT fake-quantized (float) accuracy: {100 * q['float_acc']:.2f}%; its "
        "largest per-channel ‖q‖₁ per layer: "
        + ", ".join(f"{r['name']} {r['max_l1']} (needs P >= {r['min_acc_bits']})" for r in q["l1"])
        + "."
    )
    md.append("")
    md.append("A2Q per-layer ‖q‖₁ (largest channel) against its budget floor(T):")
    md.append("")
    for init in st.inits:
        parts = []
        for p in ps:
            r = res[f"a2q_{init}"][str(p)]
            parts.append(f"P={p}: " + ", ".join(f"{x['max_l1']}/{x['budget']}" for x in r["l1"]))
        md.append(f"* init={init}: " + "; ".join(parts))
    md.append("")
    md.append(f"![accuracy, overflow and sparsity vs P]({png.name})")
    md.append("")
    md.append("## Claims")
    md.append("")
    for c in res["claims"]:
        md.append(f"* {'HELD' if c['held'] else 'NOT HELD'}: {c['claim']} — {c['detail']}")
    md.append("")
    md.append("**Verdict.** " + res["verdict"])
    md.append("")
    md.append("## Notes")
    md.append("")
    md.append(
        "* The ℓ1 bound used is the paper's, T = (2^(P-1) - 1)·2^(1_signed - N): with 8-bit "
        "unsigned inputs a 16-bit accumulator allows ‖q‖₁ <= 127 per output channel, 14 bits "
        "31 and 12 bits 7 — for the 1568-input classifier that is at most 7 nonzero unit "
        "weights per class at P = 12."
    )
    md.append(
        '* `init="norm"` is A2Q\'s weight normalisation started at g = ‖w‖₁ and clamped: a '
        "dense pretrained channel is scaled down uniformly and round-toward-zero erases most "
        'of it at a tight budget. `init="ep"` projects each channel onto the ℓ1 ball '
        "(soft thresholding, as A2Q+'s Euclidean-projection init, arXiv 2401.10432) with the "
        "scale picked among 41 powers of √2 to minimise the initial weight error (our "
        "choice). A2Q+'s improved zero-centred bound is not implemented."
    )
    md.append(
        "* A layer whose integer weights are all zero feeds BatchNorm a constant, and after "
        "the ReLU no gradient flows back: such a model stays at chance (about 10%)."
    )
    cpu = res["seconds"].get("cpu_total")
    load = res["seconds"].get("load_average")
    md.append(
        f"* Wall time {seconds / 60:.1f} min, CPU time "
        f"{'n/a' if cpu is None else f'{cpu / 60:.1f} min'} (one torch thread, serial numba "
        f"kernel; {platform.processor() or platform.machine()}"
        + (
            f", load average {load:.1f} on {os.cpu_count()} cores: the machine was shared"
            if load
            else ""
        )
        + ")."
    )
    path = out / "a2q.md"
    path.write_text("\n".join(md) + "\n")
    return path


def verdict(res: dict[str, Any]) -> str:
    """One sentence from the numbers: where A2Q held up and where it did not."""
    keys = [k for k in res if k.startswith("a2q_")]
    ps = sorted((int(p) for p in res[keys[0]]), reverse=True)

    def best(p: int) -> float:
        return 100 * max(res[k][str(p)]["int_acc"] for k in keys)

    def qat(p: int) -> float:
        return 100 * res["qat_int"]["wrap"][str(p)]["int_acc"]

    top = ps[0]
    close = [p for p in ps if best(top) - best(p) <= 1.0]
    dead = [p for p in ps if best(p) < 15]
    s = (
        f"Guarantee and overflow claims held: no A2Q model overflowed, while plain QAT "
        f"wrapped into wrong results below its data-type bound (P={ps[1]}: {qat(ps[1]):.1f}% "
        f"vs {qat(top):.1f}% at P={top}). Accuracy held only partly: A2Q stayed within 1 pt "
        f"of its P={top} accuracy down to P={min(close)}"
    )
    rest = [p for p in ps if p < min(close) and p not in dead]
    if rest:
        s += (
            ", lost "
            + ", ".join(f"{best(top) - best(p):.1f} pt at P={p}" for p in rest)
            + " (the paper reports ~1 pt at P=16 for ResNet-18/CIFAR-10, with full-length "
            "training; ours is a 4-epoch fine-tune of a 20k-parameter CNN)"
        )
    if dead:
        s += (
            ", and fell to chance at P="
            + "/".join(map(str, dead))
            + " where the ℓ1 budget leaves some layer with no nonzero weight"
        )
    return s + "."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes (< 1 min smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite a2q.md and a2q.png from an existing a2q.json (no training)",
    )
    args = p.parse_args(argv)
    st = QUICK if args.quick else Settings()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        res = json.loads((out / "a2q.json").read_text())
        s = res["settings"]
        st = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
        res["claims"] = claims(res, st)
        res["verdict"] = verdict(res)
        plot(res, st, out / "a2q.png")
        md = write_report(res, st, out, out / "a2q.png", res["seconds"]["total"])
        (out / "a2q.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(md.read_text())
        return 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = run(st, args.data_dir, not args.no_progress)
    seconds = time.perf_counter() - t0
    res["settings"] = asdict(st)
    res["seconds"]["total"] = seconds
    res["seconds"]["cpu_total"] = time.process_time() - c0
    res["seconds"]["load_average"] = _loadavg()
    res["paper"] = PAPER
    res["claims"] = claims(res, st)
    res["verdict"] = verdict(res)
    png = out / "a2q.png"
    plot(res, st, png)
    md = write_report(res, st, out, png, seconds)
    (out / "a2q.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(md.read_text())
    print(f"wrote {md}, {png} and {out / 'a2q.json'} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
