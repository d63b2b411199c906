"""Double Rounding on real data: the ``lowbit dr demo`` / ``make demo`` job and its wiring.

The demo trains a small ResNet (``resnet-small``) on Fashion-MNIST when it is installed (else
on scikit-learn's digits, and says so), first in float32, then jointly at widths 8/6/4/2 with
Double Rounding and ALRS, starting from the float model. It exports the int8 file, loads it
into a fresh model, checks that the integer switch from the file reproduces the training-time
weights bit for bit at every width, and prints the accuracy at each width with Double
Rounding switching next to floor-shift switching (truncation) and the float32 model. It writes
``results.md``, ``results.json``, ``dr_accuracy.png`` and ``model-int8.safetensors``.

This module (layer 8) wires :mod:`lowbit.data` and :mod:`lowbit.models` to
:mod:`lowbit.methods.double_rounding`; the CLI (``lowbit dr``) and ``experiments/`` use its
helpers.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEMO_BITS = (8, 6, 4, 2)


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run (the full one fits ~3 minutes on 2 cores)."""

    train_subset: int | None
    test_subset: int | None
    fp_epochs: int
    dr_epochs: int
    widths: tuple[int, ...]
    batch_size: int = 128
    fp_lr: float = 2e-3
    dr_lr: float = 5e-4


FULL_PLAN = DemoPlan(
    train_subset=8000, test_subset=5000, fp_epochs=4, dr_epochs=2, widths=(16, 32, 64)
)
QUICK_PLAN = DemoPlan(
    train_subset=512, test_subset=500, fp_epochs=1, dr_epochs=1, widths=(8, 16, 32)
)
DIGITS_PLAN = DemoPlan(
    train_subset=None,
    test_subset=None,
    fp_epochs=15,
    dr_epochs=5,
    widths=(16, 32, 64),
    batch_size=64,
)


def load_data(
    name: str = "fashion-mnist",
    data_dir: str | None = None,
    *,
    subset: int | None = None,
    seed: int = 0,
    fallback: bool = False,
) -> tuple[Any, str | None]:
    """``(DataSplits, note)``: the named data set, or with ``fallback`` sklearn digits when
    Fashion-MNIST is not installed (``note`` then says so)."""
    from lowbit.data import DataNotFoundError, load_dataset

    try:
        return load_dataset(name, data_dir, subset=subset, seed=seed), None
    except DataNotFoundError as e:
        if not fallback:
            raise
        first = str(e).splitlines()[0] if str(e) else "Fashion-MNIST not found"
        note = f"Fashion-MNIST is not installed ({first}); using scikit-learn digits instead"
        return load_dataset("digits", seed=seed), note


def build(model_name: str, splits: Any, **kw: Any) -> Any:
    """``build_model`` with the data set's shape."""
    from lowbit.models import build_model

    return build_model(
        model_name,
        in_channels=splits.in_channels,
        num_classes=splits.num_classes,
        image_size=splits.image_size,
        **kw,
    )


def model_meta(model_name: str, splits: Any, **kw: Any) -> dict[str, Any]:
    """What rebuilds the model without the data: name, options and the data's shapes."""
    return {
        "name": model_name,
        "kwargs": kw,
        "in_channels": splits.in_channels,
        "num_classes": splits.num_classes,
        "image_size": splits.image_size,
    }


def build_from_meta(meta: dict[str, Any]) -> Any:
    """The float model described by :func:`model_meta`'s dict."""
    from lowbit.models import build_model

    return build_model(
        meta["name"],
        in_channels=meta["in_channels"],
        num_classes=meta["num_classes"],
        image_size=meta["image_size"],
        **meta.get("kwargs", {}),
    )


def loaders(
    splits: Any, batch_size: int, *, seed: int = 0, test_subset: int | None = None
) -> tuple[Any, Any]:
    """Shuffled train loader and ordered test loader (the first ``test_subset`` images)."""
    from torch.utils.data import Subset

    from lowbit.data import make_loader

    test = splits.test
    if test_subset is not None and test_subset < len(test):
        test = Subset(test, range(test_subset))
    return (
        make_loader(splits.train, batch_size, shuffle=True, seed=seed),
        make_loader(test, 512, shuffle=False),
    )


def accuracy_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table of strings."""
    table = Table(title=title)
    for c in columns:
        table.add_column(str(c), justify="right")
    for r in rows:
        table.add_row(*(str(v) for v in r))
    return table


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table as GitHub Markdown (first column left-aligned, the others right)."""
    lines = [
        "| " + " | ".join(map(str, columns)) + " |",
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def pct(x: float | None) -> str:
    """An accuracy as a percentage with two decimals ('—' for None)."""
    return "—" if x is None else f"{100 * x:.2f}"


@dataclass
class DemoResult:
    """What :func:`demo` measured and wrote."""

    dataset: str
    note: str | None
    fp_accuracy: float
    dr_accuracy: dict[int, float]
    floor_accuracy: dict[int, float]
    bit_exact: bool
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def rows(self) -> list[list[str]]:
        """Rows of the accuracy table: width, FP32, DR, floor shift, DR − FP32."""
        out = []
        for b in sorted(self.dr_accuracy, reverse=True):
            out.append(
                [
                    str(b),
                    pct(self.fp_accuracy),
                    pct(self.dr_accuracy[b]),
                    pct(self.floor_accuracy[b]),
                    f"{100 * (self.dr_accuracy[b] - self.fp_accuracy):+.2f}",
                ]
            )
        return out


COLUMNS = ("bits", "FP32 (%)", "Double Rounding + ALRS (%)", "floor shift (%)", "DR − FP32 (pp)")


def plot_accuracy(result: DemoResult, path: Path) -> Path:
    """Accuracy vs width: Double Rounding and floor shift, with the FP32 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted(result.dr_accuracy)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.axhline(100 * result.fp_accuracy, color="gray", ls="--", lw=1, label="FP32")
    ax.plot(
        widths,
        [100 * result.dr_accuracy[b] for b in widths],
        "o-",
        color="tab:blue",
        label="Double Rounding + ALRS (int8 → b bits)",
    )
    ax.plot(
        widths,
        [100 * result.floor_accuracy[b] for b in widths],
        "s--",
        color="tab:red",
        label="floor shift (W_8 >> (8 − b))",
    )
    ax.set_xticks(widths)
    ax.set_xlabel("weight and activation bits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"One int8 model switched to every width ({result.dataset})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def check_switch_bit_exact(trained: Any, ckpt: Any, bits: Sequence[int]) -> bool:
    """Whether the int8 file's integer switch gives, bit for bit, the weights the trained
    model's evaluation uses at every width and method."""
    import torch

    from lowbit.methods import double_rounding as dr

    saved = dr.get_bits(trained)
    try:
        for method in ("round", "floor"):
            for b in bits:
                dr.set_bits(trained, b, method=method)
                for n, m in dr.dr_layers(trained).items():
                    used = m.quantized_weight().detach()
                    got = ckpt.weight(n, b, method)
                    if not torch.equal(got.view(torch.int32), used.view(torch.int32)):
                        return False
    finally:
        dr.set_bits(trained, saved, method="round")
    return True


def same_outputs(a: Any, b: Any, x: Any, bits: Sequence[int]) -> bool:
    """Whether two switchable models give identical logits on ``x`` at every width."""
    import torch

    from lowbit.methods import double_rounding as dr

    was = a.training, b.training
    a.eval()
    b.eval()
    try:
        with torch.no_grad():
            for w in bits:
                dr.set_bits(a, w)
                dr.set_bits(b, w)
                if not torch.equal(a(x), b(x)):
                    return False
    finally:
        a.train(was[0])
        b.train(was[1])
        dr.set_bits(a, max(bits))
        dr.set_bits(b, max(bits))
    return True


def demo(
    out_dir: str | Path = "demo_out/dr",
    *,
    quick: bool = False,
    seed: int = 0,
    console: Console | None = None,
    progress: bool = True,
    data_dir: str | None = None,
) -> DemoResult:
    """Run the Double Rounding demo (see the module docstring) and write its files.

    Args:
        out_dir: output directory.
        quick: tiny sizes (a few seconds; for tests).
        seed: seeds the subset, the initial weights and the shuffling.
        console: where to print (default: a new rich console).
        progress: tqdm bars.
        data_dir: where Fashion-MNIST's files are (default: the installed package).
    """
    import torch

    from lowbit.methods import double_rounding as dr

    console = console or Console()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = QUICK_PLAN if quick else FULL_PLAN
    splits, note = load_data(
        "fashion-mnist", data_dir, subset=plan.train_subset, seed=seed, fallback=True
    )
    if note is not None:
        console.print(note)
        if not quick:
            plan = DIGITS_PLAN
    n_test = (
        len(splits.test) if plan.test_subset is None else min(plan.test_subset, len(splits.test))
    )
    dataset = "Fashion-MNIST" if splits.name == "fashion-mnist" else "scikit-learn digits"
    console.print(
        f"data: {dataset}, {len(splits.train)} training and {n_test} test images; "
        f"model: resnet-small widths {plan.widths}; FP32 {plan.fp_epochs} epochs, "
        f"then Double Rounding at {DEMO_BITS} bits with ALRS for {plan.dr_epochs} "
        f"epochs"
    )
    train_loader, test_loader = loaders(
        splits, plan.batch_size, seed=seed, test_subset=plan.test_subset
    )
    torch.manual_seed(seed)
    model = build("resnet-small", splits, widths=plan.widths)
    fp = dr.train_fp(
        model,
        train_loader,
        test_loader,
        epochs=plan.fp_epochs,
        lr=plan.fp_lr,
        seed=seed,
        progress=progress,
    )
    console.print(f"FP32: {pct(fp.accuracy['fp'])} % in {fp.seconds:.0f} s")
    res = dr.train(
        copy.deepcopy(fp.model),
        train_loader,
        None,
        bits=DEMO_BITS,
        epochs=plan.dr_epochs,
        alrs=True,
        lr=plan.dr_lr,
        seed=seed,
        progress=progress,
    )
    console.print(f"Double Rounding training: {res.seconds:.0f} s")

    int8_path = dr.export(
        res.model,
        out / "model-int8.safetensors",
        metadata={
            "model": json.dumps(model_meta("resnet-small", splits, widths=list(plan.widths))),
            "data": json.dumps({"name": splits.name, "subset": plan.train_subset, "seed": seed}),
        },
    )
    ckpt = dr.load_int8(int8_path)
    bit_exact = check_switch_bit_exact(res.model, ckpt, DEMO_BITS)
    console.print(f"Double Rounding export: {int8_path}")
    deployed = dr.convert(build("resnet-small", splits, widths=plan.widths), DEMO_BITS)
    ckpt.load_into(deployed)
    same = same_outputs(res.model, deployed, next(iter(test_loader))[0][:256], DEMO_BITS)
    # accuracies of the model loaded from the int8 file; at 8 bits no switch happens
    table = {"round": dr.evaluate_widths(deployed, test_loader, methods=("round",))["round"]}
    table["floor"] = {
        b: (
            table["round"][b]
            if b == 8
            else dr.evaluate(deployed, test_loader, bits=b, method="floor")
        )
        for b in DEMO_BITS
    }
    float_bytes = sum(p.numel() * 4 for p in fp.model.parameters())
    result = DemoResult(
        dataset=dataset,
        note=note,
        fp_accuracy=fp.accuracy["fp"],
        dr_accuracy=table["round"],
        floor_accuracy=table["floor"],
        bit_exact=bit_exact and same,
        seconds=0.0,
        sizes={"int8_file": int8_path.stat().st_size, "fp32_params": float_bytes},
    )
    result.files = {"int8": int8_path, "plot": plot_accuracy(result, out / "dr_accuracy.png")}
    result.seconds = time.perf_counter() - t0

    title = (
        f"Double Rounding on {dataset}: one int8 model switched to each width "
        f"(test accuracy, {n_test} images)"
    )
    console.print(accuracy_table(title, COLUMNS, result.rows()))
    console.print(
        f"switch from the int8 file = training-time weights at every width, bit for "
        f"bit (and identical logits): {'yes' if result.bit_exact else 'NO'}"
    )
    console.print(
        f"int8 file: {result.sizes['int8_file'] / 1024:.0f} KiB (float32 "
        f"parameters: {float_bytes / 1024:.0f} KiB); total {result.seconds:.0f} s"
    )
    md = [
        f"# {title}",
        "",
        markdown_table(COLUMNS, result.rows()),
        "",
        f"- data: {dataset} ({len(splits.train)} training images); model resnet-small "
        f"{plan.widths}; FP32 {plan.fp_epochs} epochs (Adam {plan.fp_lr}), Double Rounding "
        f"{plan.dr_epochs} epochs (Adam {plan.dr_lr}, cosine, ALRS) from the FP32 model (so "
        f"it has trained {plan.dr_epochs} epochs more than the FP32 column)",
        "- floor shift: the same int8 file switched by truncation `W_8 >> (8 − b)`",
        f"- switch from the file bit-exact: {'yes' if result.bit_exact else 'NO'}",
        f"- run time {result.seconds:.0f} s, seed {seed}",
    ]
    if note:
        md.insert(2, f"> {note}\n")
    (out / "results.md").write_text("\n".join(md) + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "note": note,
                "fp32": result.fp_accuracy,
                "double_rounding": {str(b): a for b, a in result.dr_accuracy.items()},
                "floor_shift": {str(b): a for b, a in result.floor_accuracy.items()},
                "bit_exact": result.bit_exact,
                "seconds": result.seconds,
                "plan": plan.__dict__,
                "seed": seed,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out / 'results.md'}, {result.files['plot']}, {int8_path}")
    return result
