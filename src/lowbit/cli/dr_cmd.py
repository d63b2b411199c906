"""``lowbit dr``: Double Rounding (one int8 model switchable to 8/6/4/3/2 bits).

::

    lowbit dr train  --data fashion-mnist --model resnet-small --bits 8,6,4,2 --alrs --epochs 20
    lowbit dr export run/ckpt --out model-int8.safetensors
    lowbit dr eval   model-int8.safetensors --bits 4
    lowbit dr search model-int8.safetensors --target-bits 3.5 .. 8
    lowbit dr demo   [--quick]

``train`` writes ``OUT/ckpt/`` (``model.safetensors``: the float training state;
``config.json``: model, data and widths) and ``OUT/train.json`` (history and accuracies).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np


def _bits_list(text: str) -> tuple[int, ...]:
    try:
        bits = tuple(int(t) for t in re.split(r"[,\s]+", text.strip()) if t)
    except ValueError:
        raise ValueError(
            f"--bits {text!r}: expected comma-separated widths such as 8,6,4,2"
        ) from None
    if not bits:
        raise ValueError("--bits is empty; expected widths such as 8,6,4,2")
    return bits


def parse_targets(tokens: list[str], step: float) -> list[float]:
    """``3.5 .. 8`` / ``3.5..8`` (a range by ``step``) or ``4,5,6`` / ``4 5 6`` (a list)."""
    text = " ".join(tokens).strip()
    if ".." in text.replace("...", ".."):
        lo_text, _, hi_text = text.replace("...", "..").partition("..")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            raise ValueError(
                f"--target-bits {text!r}: expected LOW .. HIGH, e.g. 3.5 .. 8"
            ) from None
        if not (step > 0 and hi >= lo):
            raise ValueError(
                f"--target-bits {text!r} with --step {step}: need HIGH >= LOW and a positive step"
            )
        return [round(float(t), 10) for t in np.arange(lo, hi + step / 1e6, step)]
    try:
        return [float(t) for t in re.split(r"[,\s]+", text) if t]
    except ValueError:
        raise ValueError(f"--target-bits {text!r}: expected LOW .. HIGH or a list 4,5,6") from None


def register(sub: Any) -> None:
    """Add the ``dr`` subparser to ``sub`` (the subparsers of ``lowbit``)."""
    s = sub.add_parser(
        "dr",
        help="Double Rounding: train, export, eval, search, demo",
        description="Double Rounding: one model stored in int8, switched to lower widths by "
        "integer rounding; joint multi-width training with ALRS and HASB; a "
        "mixed-precision integer program.",
    )
    s.set_defaults(func=run, dr_command=None)
    dsub = s.add_subparsers(dest="dr_command", metavar="ACTION", title="actions")

    def threads_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="torch intra-op threads (default torch's; 1 is much faster when "
            "other jobs share the cores)",
        )

    def data_args(p: argparse.ArgumentParser, default: str | None) -> None:
        threads_arg(p)
        p.add_argument(
            "--data",
            default=default,
            help=f"fashion-mnist | fmnist | digits | synthetic (default "
            f"{default or 'the one the file was trained on'})",
        )
        p.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
        p.add_argument("--batch-size", type=int, default=128, help="batch size (128)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = dsub.add_parser("train", help="multi-precision training (writes OUT/ckpt)")
    data_args(t, "fashion-mnist")
    t.add_argument("--model", default="resnet-small", help="a lowbit.models name")
    t.add_argument(
        "--model-kw",
        default="{}",
        metavar="JSON",
        help="model options as JSON, e.g. '{\"widths\": [8, 16, 32]}'",
    )
    t.add_argument("--bits", default="8,6,4,2", help="widths trained jointly (8,6,4,2)")
    t.add_argument(
        "--alrs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="adaptive learning-rate scaling of the weight scales (default on)",
    )
    t.add_argument(
        "--hasb",
        action="store_true",
        help="Hessian-aware stochastic bit-switching after the warm-up",
    )
    t.add_argument(
        "--hasb-warmup",
        type=int,
        default=None,
        help="HASB warm-up epochs (default min(10, epochs // 2))",
    )
    t.add_argument("--epochs", type=int, default=20, help="Double Rounding epochs (20)")
    t.add_argument(
        "--fp-epochs",
        type=int,
        default=0,
        help="float32 epochs before the conversion (default 0: from scratch)",
    )
    t.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (5e-4)")
    t.add_argument("--fp-lr", type=float, default=2e-3, help="float32 learning rate (2e-3)")
    t.add_argument("--weight-decay", type=float, default=5e-5, help="weight decay (5e-5)")
    t.add_argument("--subset", type=int, default=None, help="use N training images")
    t.add_argument("--seed", type=int, default=0, help="seed (0)")
    t.add_argument("--out", default="run", help="output folder (run/)")

    e = dsub.add_parser("export", help="float checkpoint -> int8 safetensors")
    e.add_argument("ckpt", help="the OUT/ckpt folder written by `lowbit dr train`")
    e.add_argument("--out", default="model-int8.safetensors", help="output file")

    v = dsub.add_parser("eval", help="accuracy at each width, switched from the int8 file")
    v.add_argument("file", help="an int8 file from `lowbit dr export`")
    v.add_argument("--bits", default=None, help="widths to evaluate (default: all trained)")
    v.add_argument(
        "--method",
        choices=("round", "floor", "both"),
        default="both",
        help="switching: round (Double Rounding), floor (shift), both (default)",
    )
    data_args(v, None)

    r = dsub.add_parser(
        "search", help="layer sensitivities (HASB or measured loss) + ILP sweep -> Pareto plot"
    )
    r.add_argument("file", help="an int8 file from `lowbit dr export`")
    r.add_argument(
        "--target-bits",
        nargs="+",
        default=None,
        metavar="T",
        help="mean-bit targets: LOW .. HIGH (by --step) or a list (default: the trained range)",
    )
    r.add_argument("--step", type=float, default=0.25, help="step of a target range (0.25)")
    r.add_argument("--probes", type=int, default=8, help="Hutchinson probes per batch (8)")
    r.add_argument("--trace-batches", type=int, default=2, help="batches for the traces (2)")
    r.add_argument(
        "--calib-batches",
        type=int,
        default=8,
        help="batches for the transitional BatchNorm statistics (8)",
    )
    r.add_argument(
        "--sensitivity",
        choices=("hessian", "loss"),
        default="hessian",
        help="layer score: hessian (HASB traces x weight error, the paper's; default) or loss "
        "(measured training loss with one layer switched)",
    )
    r.add_argument(
        "--loss-batches", type=int, default=4, help="batches per measured loss (4; loss only)"
    )
    r.add_argument("--out", default="dr_search", help="folder for the plot and table")
    r.add_argument("--seed", type=int, default=0, help="seed of the probes (0)")
    data_args(r, None)

    d = dsub.add_parser("demo", help="the make-demo job: FP32 vs DR vs floor shift")
    d.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    d.add_argument("--out", default="demo_out/dr", help="output folder (demo_out/dr)")
    d.add_argument("--seed", type=int, default=0, help="seed (0)")
    d.add_argument("--data-dir", default=None, help="folder with Fashion-MNIST's files")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    threads_arg(d)


def run(args: argparse.Namespace, console: Any) -> int:
    """Dispatch ``lowbit dr ACTION``."""
    actions = {"train": _train, "export": _export, "eval": _eval, "search": _search, "demo": _demo}
    if args.dr_command not in actions:
        raise ValueError(
            "lowbit dr needs an action: train, export, eval, search or demo (lowbit dr --help)"
        )
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads {threads}: expected an int >= 1")
        import torch

        torch.set_num_threads(threads)
    return actions[args.dr_command](args, console)


def _demo(args: argparse.Namespace, console: Any) -> int:
    from lowbit.dr_demo import demo

    demo(
        args.out,
        quick=args.quick,
        seed=args.seed,
        console=console,
        progress=not args.no_progress,
        data_dir=args.data_dir,
    )
    return 0


def _print_accuracies(
    console: Any,
    title: str,
    table: dict[str, dict[int, float]],
    extra: dict[str, float] | None = None,
) -> None:
    from lowbit.dr_demo import accuracy_table, pct

    methods = list(table)
    widths = sorted({b for m in methods for b in table[m]}, reverse=True)
    labels = {"round": "Double Rounding (%)", "floor": "floor shift (%)"}
    rows = [[b, *(pct(table[m].get(b)) for m in methods)] for b in widths]
    for name, acc in (extra or {}).items():
        rows.append([name, *(pct(acc) if i == 0 else "" for i in range(len(methods)))])
    console.print(accuracy_table(title, ["bits", *(labels[m] for m in methods)], rows))


def _save_ckpt(model: Any, folder: Path, config: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"config": json.dumps(config)})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _train(args: argparse.Namespace, console: Any) -> int:
    import torch

    from lowbit.dr_demo import build_from_meta, load_data, loaders, model_meta, pct
    from lowbit.methods import double_rounding as dr

    bits = _bits_list(args.bits)
    for name, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{name} {value}: expected an int >= 1")
    if args.fp_epochs < 0:
        raise ValueError(f"--fp-epochs {args.fp_epochs}: expected an int >= 0")
    splits, _ = load_data(args.data, args.data_dir, subset=args.subset, seed=args.seed)
    train_loader, test_loader = loaders(splits, args.batch_size, seed=args.seed)
    torch.manual_seed(args.seed)
    try:
        model_kw = json.loads(args.model_kw)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kw {args.model_kw!r} is not JSON: {e}") from None
    if not isinstance(model_kw, dict):
        raise ValueError(f"--model-kw {args.model_kw!r}: expected a JSON object")
    meta = model_meta(args.model, splits, **model_kw)
    model = build_from_meta(meta)
    out = Path(args.out)
    progress = not args.no_progress
    fp_acc = None
    if args.fp_epochs:
        fp = dr.train_fp(
            model,
            train_loader,
            test_loader,
            epochs=args.fp_epochs,
            lr=args.fp_lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            progress=progress,
        )
        fp_acc = fp.accuracy["fp"]
        console.print(f"FP32 after {args.fp_epochs} epochs: {pct(fp_acc)} %")
    res = dr.train(
        model,
        train_loader,
        test_loader,
        bits=bits,
        epochs=args.epochs,
        alrs=args.alrs,
        hasb=args.hasb,
        hasb_warmup=args.hasb_warmup,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        progress=progress,
    )
    config = {
        "model": meta,
        "data": {"name": splits.name, "subset": args.subset, "seed": args.seed},
        "bits": list(res.model.dr_bits),
        "h": res.model.dr_h,
        "train": res.config,
    }
    _save_ckpt(res.model, out / "ckpt", config)
    (out / "train.json").write_text(
        json.dumps(
            {
                "accuracy": {str(k): v for k, v in res.accuracy.items()},
                "fp32": fp_acc,
                "history": res.history,
                "traces": res.traces,
                "seconds": res.seconds,
                "config": config,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    table = {"round": res.accuracy}
    _print_accuracies(
        console,
        f"Double Rounding on {splits.name} ({args.model}, "
        f"{'ALRS' if args.alrs else 'no ALRS'}{', HASB' if args.hasb else ''})",
        table,
        {"FP32": fp_acc} if fp_acc is not None else None,
    )
    console.print(f"wrote {out / 'ckpt'} and {out / 'train.json'} ({res.seconds:.0f} s)")
    return 0


def _model_from_meta(meta: dict[str, Any], bits: Any) -> Any:
    from lowbit.dr_demo import build_from_meta
    from lowbit.methods import double_rounding as dr

    return dr.convert(build_from_meta(meta), tuple(bits))


def _export(args: argparse.Namespace, console: Any) -> int:
    from safetensors.torch import load_file

    from lowbit.methods import double_rounding as dr

    folder = Path(args.ckpt)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ValueError(
            f"{str(folder)!r} is not a checkpoint folder of `lowbit dr train` (no config.json)"
        )
    config = json.loads(cfg_path.read_text())
    data = config["data"]
    model = _model_from_meta(config["model"], config["bits"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    path = dr.export(
        model, args.out, metadata={"model": json.dumps(config["model"]), "data": json.dumps(data)}
    )
    n = sum(c.numel() for c in dr.load_int8(path).codes.values())
    console.print(
        f"wrote {path}: {len(dr.dr_layers(model))} int8 layers ({n} weights), "
        f"{path.stat().st_size / 1024:.0f} KiB"
    )
    return 0


def _load_file(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(model, ckpt, splits)`` of an int8 file: rebuilds the model and loads the file."""
    from lowbit.dr_demo import load_data
    from lowbit.methods import double_rounding as dr

    ckpt = dr.load_int8(args.file)
    if "model" not in ckpt.metadata:
        raise ValueError(
            f"{args.file!r} has no 'model' metadata; export it with `lowbit dr export`"
        )
    data = json.loads(ckpt.metadata.get("data", "{}"))
    name = args.data or data.get("name")
    if not name:
        raise ValueError("the file does not name its data set; pass --data")
    splits, _ = load_data(name, args.data_dir, subset=data.get("subset"), seed=data.get("seed", 0))
    model = _model_from_meta(json.loads(ckpt.metadata["model"]), ckpt.bits)
    ckpt.load_into(model)
    return model, ckpt, splits


def _eval(args: argparse.Namespace, console: Any) -> int:
    from lowbit.dr_demo import loaders
    from lowbit.methods import double_rounding as dr

    model, ckpt, splits = _load_file(args)
    bits = _bits_list(args.bits) if args.bits else ckpt.bits
    unknown = sorted(set(bits) - set(ckpt.bits))
    if unknown:
        raise ValueError(f"--bits {args.bits}: the file was trained for {ckpt.bits}, not {unknown}")
    methods = ("round", "floor") if args.method == "both" else (args.method,)
    _, test_loader = loaders(splits, args.batch_size)
    table = dr.evaluate_widths(model, test_loader, bits=bits, methods=methods)
    _print_accuracies(
        console,
        f"{args.file} on {splits.name} ({len(splits.test)} test images), switched from int8",
        table,
    )
    return 0


def _search(args: argparse.Namespace, console: Any) -> int:
    from lowbit.dr_demo import accuracy_table, loaders, pct
    from lowbit.methods import double_rounding as dr

    model, _, splits = _load_file(args)
    targets = parse_targets(args.target_bits, args.step) if args.target_bits else None
    train_loader, test_loader = loaders(splits, args.batch_size, seed=args.seed)
    out = Path(args.out)
    res = dr.search(
        model,
        train_loader,
        test_loader,
        targets=targets,
        n_probes=args.probes,
        trace_batches=args.trace_batches,
        calib_batches=args.calib_batches,
        seed=args.seed,
        sensitivity=args.sensitivity,
        loss_batches=args.loss_batches,
        progress=not args.no_progress,
        plot=out / "pareto.png",
        title=f"Double Rounding mixed precision ({splits.name})",
    )
    rows = [
        [
            r["kind"],
            f"{r['target']:.2f}",
            f"{r['mean_bits']:.3f}",
            pct(r["accuracy"]),
            "*" if r["on_front"] else "",
        ]
        for r in res.table()
    ]
    console.print(
        accuracy_table(
            ("HASB" if args.sensitivity == "hessian" else "measured-loss")
            + " + ILP mixed-precision search",
            ["config", "target", "mean bits", "accuracy (%)", "front"],
            rows,
        )
    )
    (out / "search.json").write_text(
        json.dumps(
            {
                "sensitivity": args.sensitivity,
                "traces": res.traces,
                "scores": res.scores,
                "points": res.points,
                "front": res.front,
                "seconds": res.seconds,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    console.print(f"wrote {res.plot_path} and {out / 'search.json'}")
    return 0
