"""Training-step time of small CNNs with lowbit.nn fake quantization, against the fp32 step.

One training step is forward + backward + ``torch.optim.AdamW`` step (the same optimizer for
every row, so the ratios measure the quantization emulation) on a batch of 128 random 28×28×1
images with 10 classes. Rows:

* ``fp32``: the plain model (the baseline of the ratios).
* ``w8a8``: ``lowbit.nn.quantize_`` with int8 per-channel weights and int8 per-tensor
  activations, forward fake quantization, gradients passed straight through (target ≤ 1.5×).
* ``fp8``: ``QuantConfig.from_recipe("fp8")``: e4m3 weights and activations forward, e5m2
  error signals and weight gradients backward, every operand rounded (target ≤ 3×).
* ``fp8 + bf16 SR weights``: the same with ``lowbit.optim.LowPrecisionAdamW`` (bf16 weights,
  stochastic rounding of the update) instead of AdamW, for information.
* peers, where they import: pychop's ``QuantizedConv2d``/``QuantizedLinear`` (e4m3 forward with
  ``ChopSTE``) and ``IQuantizedConv2d``/``IQuantizedLinear`` (int8 with ``ChopiSTE``) swapped in
  for every conv/linear layer; QPyTorch (``qtorch``) and Brevitas when installed.

Timing: the steps of all rows are interleaved round-robin (so a load change on a shared machine
hits every row alike) and each row reports the median of ``--steps`` steps after ``--warmup``
warm-up steps; ``torch.set_num_threads`` is the number of usable cores. Ratios are to the fp32
step of the same model measured in the same run.

Usage::

    python benchmarks/bench_nn.py [--steps 20] [--warmup 3] [--markdown benchmarks/RESULTS.md]
    python benchmarks/bench_nn.py --quick        # cnn-small only, 5 steps
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import lowbit as lb
from lowbit.models import build_model

BATCH = 128
TARGETS = {"w8a8": 1.5, "fp8": 3.0}
TITLE = "### Training step of small CNNs (lowbit.nn fake quantization, batch 128, 28×28×1)"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_line() -> str:
    """CPU model, cores, torch threads, versions, load and date, on one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "?"
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"{date}; {cpu}, {os.cpu_count()} cores ({usable_cores()} usable), "
        f"torch.set_num_threads({torch.get_num_threads()}); torch {torch.__version__}, "
        f"lowbit {lb.__version__}; load average (1 min) at start {load}"
    )


# ---- the rows ---------------------------------------------------------------------------------
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels=1, num_classes=10, image_size=28)


def _lowbit(name: str, config: Any) -> nn.Module:
    from lowbit.nn import quantize_

    return quantize_(_model(name), config)


def w8a8_config() -> Any:
    from lowbit.nn import QuantConfig

    return QuantConfig(weight="int8", act="int8", granularity="per_channel")


def fp8_config() -> Any:
    from lowbit.nn import QuantConfig

    return QuantConfig.from_recipe("fp8")


def _swap_layers(
    model: nn.Module, conv: Callable[..., nn.Module], linear: Callable[..., nn.Module]
) -> nn.Module:
    """Replace every Conv2d / Linear by ``conv(...)`` / ``linear(...)`` with the same weights."""
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                new = conv(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    stride=child.stride,
                    padding=child.padding,
                    dilation=child.dilation,
                    groups=child.groups,
                    bias=child.bias is not None,
                )
            elif type(child) is nn.Linear:
                new = linear(child.in_features, child.out_features, bias=child.bias is not None)
            else:
                continue
            new.load_state_dict(child.state_dict(), strict=False)
            setattr(parent, cname, new)
    return model


def pychop_fp8(name: str) -> nn.Module:
    from pychop.tch.layers import ChopSTE, QuantizedConv2d, QuantizedLinear

    chop = ChopSTE(exp_bits=4, sig_bits=3, rmode=1)  # e4m3 (IEEE-style), round to nearest even
    return _swap_layers(
        _model(name),
        lambda *a, **k: QuantizedConv2d(*a, **k, chop=chop),
        lambda *a, **k: QuantizedLinear(*a, **k, chop=chop),
    )


def pychop_int8(name: str) -> nn.Module:
    from pychop.tch.layers import ChopiSTE, IQuantizedConv2d, IQuantizedLinear

    chop = ChopiSTE(bits=8, symmetric=True)
    return _swap_layers(
        _model(name),
        lambda *a, **k: IQuantizedConv2d(*a, **k, chop=chop),
        lambda *a, **k: IQuantizedLinear(*a, **k, chop=chop),
    )


def qtorch_fp8(name: str) -> nn.Module:
    """QPyTorch: e4m3 weights via a quantizer on every conv/linear input and output."""
    from qtorch import FloatingPoint
    from qtorch.quant import Quantizer

    fwd = FloatingPoint(exp=4, man=3)
    bwd = FloatingPoint(exp=5, man=2)

    def wrap(layer: nn.Module) -> nn.Module:
        return nn.Sequential(
            Quantizer(
                forward_number=fwd,
                backward_number=bwd,
                forward_rounding="nearest",
                backward_rounding="nearest",
            ),
            layer,
            Quantizer(
                forward_number=fwd,
                backward_number=bwd,
                forward_rounding="nearest",
                backward_rounding="nearest",
            ),
        )

    return _swap_layers(
        _model(name),
        lambda *a, **k: wrap(nn.Conv2d(*a, **k)),
        lambda *a, **k: wrap(nn.Linear(*a, **k)),
    )


def brevitas_w8a8(name: str) -> nn.Module:
    import brevitas.nn as qnn

    return _swap_layers(
        _model(name),
        lambda *a, **k: qnn.QuantConv2d(
            *a,
            **k,
            weight_bit_width=8,
            input_bit_width=8,
            input_quant=qnn.quant.Int8ActPerTensorFloat,
        ),
        lambda *a, **k: qnn.QuantLinear(
            *a, **k, weight_bit_width=8, input_quant=qnn.quant.Int8ActPerTensorFloat
        ),
    )


def rows_for(name: str, quick: bool) -> list[tuple[str, str, Callable[[], nn.Module], str]]:
    """(row label, kind for the targets, model factory, optimizer) of one model."""
    rows: list[tuple[str, str, Callable[[], nn.Module], str]] = [
        ("fp32 (baseline)", "fp32", lambda: _model(name), "adamw"),
        (
            "lowbit w8a8 (int8 per-channel weights, int8 activations)",
            "w8a8",
            lambda: _lowbit(name, w8a8_config()),
            "adamw",
        ),
        (
            "lowbit fp8 (e4m3 fwd, e5m2 bwd, every operand)",
            "fp8",
            lambda: _lowbit(name, fp8_config()),
            "adamw",
        ),
    ]
    if not quick:
        rows.append(
            (
                "lowbit fp8 + LowPrecisionAdamW (bf16 weights, SR)",
                "info",
                lambda: _lowbit(name, fp8_config()),
                "lp-adamw-sr",
            )
        )
    rows += [
        (
            "pychop QuantizedConv2d/Linear (e4m3 fwd, STE bwd)",
            "peer",
            lambda: pychop_fp8(name),
            "adamw",
        ),
        (
            "pychop IQuantizedConv2d/Linear (int8, STE bwd)",
            "peer",
            lambda: pychop_int8(name),
            "adamw",
        ),
        (
            "QPyTorch Quantizer around conv/linear (e4m3 fwd, e5m2 bwd)",
            "peer",
            lambda: qtorch_fp8(name),
            "adamw",
        ),
        (
            "Brevitas QuantConv2d/QuantLinear (int8 w, int8 input)",
            "peer",
            lambda: brevitas_w8a8(name),
            "adamw",
        ),
    ]
    return rows


def _optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=1e-3)
    from lowbit.optim import LowPrecisionAdamW

    return LowPrecisionAdamW(
        model.parameters(), lr=1e-3, weight_fmt="bf16", state_fmt=None, update_mode="sr", seed=0
    )


def run(
    models: list[str], steps: int = 20, warmup: int = 3, quick: bool = False
) -> list[dict[str, Any]]:
    """Median step times; one dict per (model, row): model, name, kind, ms, ratio, status."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (BATCH,), generator=gen)
    out: list[dict[str, Any]] = []
    for name in models:
        live: list[tuple[dict[str, Any], Callable[[], None]]] = []
        for label, kind, factory, opt_kind in rows_for(name, quick):
            row: dict[str, Any] = {
                "model": name,
                "name": label,
                "kind": kind,
                "ms": float("nan"),
                "ratio": float("nan"),
                "status": "",
            }
            out.append(row)
            try:
                model = factory()
                opt = _optimizer(model, opt_kind)
            except ImportError as e:  # a peer that is not installed
                if kind != "peer":
                    raise
                row["status"] = f"not installed ({e.name or e})"
                continue
            except Exception as e:  # a peer that installs but fails to build: say why
                if kind != "peer":
                    raise
                row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                continue

            def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()

            try:
                for _ in range(warmup):
                    step()
            except Exception as e:
                if kind != "peer":
                    raise
                row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                continue
            row["_times"] = []
            live.append((row, step))
        for _ in range(steps):  # round-robin over the rows
            for row, step in live:
                t0 = time.perf_counter()
                step()
                row["_times"].append(time.perf_counter() - t0)
        base = None
        for row, _ in live:
            row["ms"] = 1e3 * statistics.median(row.pop("_times"))
            if row["kind"] == "fp32":
                base = row["ms"]
        for row, _ in live:
            row["ratio"] = row["ms"] / base if base else float("nan")
            target = TARGETS.get(row["kind"])
            if target is not None:
                row["status"] = f"{'PASS' if row['ratio'] <= target else 'FAIL'} (≤ {target}×)"
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    lines = ["| model | step | median ms / step | × fp32 | target |", "|---|---|---:|---:|---|"]
    for r in rows:
        ms = "—" if r["ms"] != r["ms"] else f"{r['ms']:.1f}"
        ratio = "—" if r["ratio"] != r["ratio"] else f"{r['ratio']:.2f}"
        lines.append(f"| {r['model']} | {r['name']} | {ms} | {ratio} | {r['status']} |")
    return "\n".join(lines) + "\n"


def replace_section(path: Path, title: str, body: str) -> None:
    """Put ``title`` + ``body`` into the Markdown file, replacing a section of the same title.

    The old section runs from its title line to the next heading of the same or a higher
    level (or the end of the file); without one the section is appended.
    """
    level = len(title) - len(title.lstrip("#"))
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    new = [title, "", *body.rstrip("\n").splitlines()]
    try:
        start = lines.index(title)
    except ValueError:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *new] if lines else new
    else:
        end = len(lines)
        for i in range(start + 1, len(lines)):
            s = lines[i]
            if (
                s.startswith("#")
                and len(s) - len(s.lstrip("#")) <= level
                and s[len(s) - len(s.lstrip("#")) :].startswith(" ")
            ):
                end = i
                break
        tail = lines[end:]
        lines = lines[:start] + new + ([""] if tail else []) + tail
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the table (and write it with --markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--models",
        default="cnn-small,resnet-small",
        help="comma-separated lowbit.models names (default cnn-small,resnet-small)",
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per row (median taken)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per row first")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the usable cores)"
    )
    ap.add_argument("--quick", action="store_true", help="cnn-small only, 5 steps")
    ap.add_argument(
        "--markdown",
        default=None,
        help="put the table into this Markdown file (replacing its old section)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or usable_cores())
    models = ["cnn-small"] if args.quick else args.models.split(",")
    steps = 5 if args.quick else args.steps
    machine = machine_line()
    t0 = time.perf_counter()
    rows = run(models, steps=steps, warmup=args.warmup, quick=args.quick)
    table = format_table(rows)
    body = (
        f"Median of {steps} interleaved steps after {args.warmup} warm-up steps; "
        "forward + backward + torch AdamW step (LowPrecisionAdamW where named) on random "
        f"inputs; ratios to the fp32 step of the same model in the same run "
        f"({time.perf_counter() - t0:.0f} s). Machine: {machine}. Regenerate with "
        "`python benchmarks/bench_nn.py --markdown benchmarks/RESULTS.md`.\n\n" + table
    )
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    if load > 0.5 * usable_cores():
        # torch's OpenMP threads wait for each other at every op: on a busy machine a
        # descheduled thread stalls the whole step, and the fp32 baseline suffers most
        body += (
            f"\nWarning: the load average was {load:.2f} on {usable_cores()} usable cores; "
            "with more than one torch thread the step times and ratios are unreliable "
            "on a busy machine (rerun on an idle one, or with --threads 1).\n"
        )
    print(TITLE + "\n\n" + body)
    if args.markdown:
        replace_section(Path(args.markdown), TITLE, body)


if __name__ == "__main__":
    main()
