"""``lowbit assign``: Lee, Sharma & Aiken's precision assignment of a model's training tensors.

::

    lowbit assign --model resnet-small --r 0,0.1,...,1 --scheme ours --batch-size 128
    lowbit assign --model resnet-small --scheme pi_op --data digits

Traces the model on one batch of the data set, groups its training tensors (the input or a
Conv/Linear and the operations after it), and for each ``r`` prints which tensor gets which
format (``1-6-9`` high, ``1-4-3 b4`` low P/Y, ``1-5-2`` low GY) and the memory saved; ``--json``
prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

_DATA = ("fashion-mnist", "digits", "synthetic")


def parse_ratios(text: str) -> list[float]:
    """``0.25,0.5`` (a list) or ``0,0.1,...,1`` (an arithmetic progression up to the last).

    Raises:
        ValueError: not numbers, a value outside [0, 1], or a progression without a step.
    """
    tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not tokens:
        raise ValueError("--r is empty; expected ratios such as 0.25,0.5 or 0,0.1,...,1")
    try:
        if "..." in tokens:
            i = tokens.index("...")
            if i < 2 or i != len(tokens) - 2:
                raise ValueError
            a, b, end = float(tokens[i - 2]), float(tokens[i - 1]), float(tokens[-1])
            head = [float(t) for t in tokens[: i - 2]]
            step = b - a
            if not step > 0 or end < b:
                raise ValueError
            n = round((end - a) / step)
            vals = head + [round(a + k * step, 10) for k in range(n + 1)]
        else:
            vals = [float(t) for t in tokens]
    except ValueError:
        raise ValueError(
            f"--r {text!r}: expected ratios in [0, 1] such as 0.25,0.5 or 0,0.1,...,1"
        ) from None
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"--r {text!r}: ratios must lie in [0, 1], got {bad}")
    return vals


def register(sub: Any) -> None:
    """Add the ``assign`` subparser to ``sub`` (the subparsers of ``lowbit``)."""
    s = sub.add_parser(
        "assign",
        help="mixed-precision assignment of training tensors (Lee, Sharma & Aiken)",
        description="Group a model's training tensors (the input or a Conv/Linear and the "
        "operations after it, sizes at the training batch size), demote groups to 8 bits by "
        "a scheme until the low-precision ratio reaches each r, and print which tensor gets "
        "which format (1-6-9 high, 1-4-3 with bias 4 for low P/Y, 1-5-2 for low GY; GP stays "
        "high) and the memory saved.",
    )
    s.add_argument(
        "--model",
        default="resnet-small",
        help="model (resnet-small, cnn-small, mlp, vit-tiny; default resnet-small)",
    )
    s.add_argument(
        "--r",
        default="0,0.1,...,1",
        help="minimum low-precision ratios: a list 0.25,0.5 or a progression 0,0.1,...,1 (default)",
    )
    s.add_argument(
        "--scheme",
        default="ours",
        help="ours (largest groups first), smallest_first, random, pi_op (HFP8 "
        "standard; ignores --r)",
    )
    s.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="training batch size the sizes are given for (default 128)",
    )
    s.add_argument(
        "--data",
        default="fashion-mnist",
        choices=_DATA,
        help="data set giving the input shape (default fashion-mnist)",
    )
    s.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    s.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random scheme and the model's initialisation (default 0)",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=run)


def _mib(bits: int) -> float:
    return bits / 8 / 2**20


def run(args: argparse.Namespace, console: Any) -> int:
    """Run ``lowbit assign``; returns the exit status."""
    import torch
    from rich.table import Table

    from lowbit.data import load_dataset
    from lowbit.methods.assign import (
        assign,
        format_label,
        group_order,
        scheme_name,
        tensor_groups,
    )
    from lowbit.models import build_model

    scheme = scheme_name(args.scheme)
    ratios: list[float | None] = [None] if scheme == "pi_op" else list(parse_ratios(args.r))
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected an int >= 1")
    data = load_dataset(args.data, args.data_dir, seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model(
        args.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        image_size=data.image_size,
    )
    example = data.train.tensors[0][:4]
    graph = tensor_groups(model, example, batch_size=args.batch_size)
    results = [assign(graph, r, scheme, args.seed) for r in ratios]

    if args.json:
        out = {
            "model": args.model,
            "data": args.data,
            "batch_size": args.batch_size,
            "scheme": scheme,
            "groups": [{"group": g.name, "size": g.size, "ops": list(g.ops)} for g in graph.groups],
            "assignments": [{**a.summary(), "tensors": a.table()} for a in results],
        }
        console.print(json.dumps(out, indent=1), soft_wrap=True)
        return 0

    total = graph.total_size
    order = (
        {}
        if scheme == "pi_op"
        else {gi: k + 1 for k, gi in enumerate(group_order(graph, scheme, args.seed))}
    )
    t = Table(
        title=f"Tensor groups of {args.model} on {args.data} (batch size "
        f"{args.batch_size}); demotion order of scheme {scheme}"
    )
    for col in ("group", "ops", "elements", "share", "order"):
        t.add_column(col, justify="left" if col in ("group",) else "right")
    for g in graph.groups:
        t.add_row(
            g.name,
            str(len(g.ops)),
            f"{g.size:,}",
            f"{100 * g.size / total:.2f}%",
            str(order.get(g.index, "-")),
        )
    console.print(t)

    heads = ["pi_op" if r is None else f"r≥{r:g}" for r in ratios]
    t = Table(title="Format of every tensor (1-6-9: high; 1-4-3 b4: low P/Y; 1-5-2: low GY)")
    t.add_column("tensor")
    t.add_column("group")
    t.add_column("elements", justify="right")
    for h in heads:
        t.add_column(h, justify="center")
    for info in graph.tensors:
        t.add_row(
            info.name,
            results[0].group_name(info.group),
            f"{info.size:,}",
            *(format_label(a.formats[info.name]) for a in results),
        )
    console.print(t)

    t = Table(title="Memory per assignment (all tensors of one step; all high = 16 bits each)")
    for col in (
        "scheme",
        "r_min",
        "r",
        "groups demoted",
        "low elements",
        "MiB all high",
        "MiB assigned",
        "saved",
    ):
        t.add_column(col, justify="left" if col == "scheme" else "right")
    for a in results:
        t.add_row(
            a.scheme,
            "-" if a.r_min is None else f"{a.r_min:g}",
            f"{a.ratio:.4f}",
            f"{len(a.demoted)}/{len(graph.groups)}",
            f"{a.low_size:,}",
            f"{_mib(a.bits_all_high):.2f}",
            f"{_mib(a.total_bits):.2f}",
            f"{_mib(a.memory_bits):.2f} MiB ({100 * a.memory_bits / a.bits_all_high:.1f}%)",
        )
    console.print(t)
    return 0
