"""``lowbit train``: quantization-aware / low-precision training of a small model on real data.

Reads a ``TrainConfig`` (TOML/JSON, see ``configs/``), lets the command line override its
model, data, epochs, data folder, subset and seed, builds the model (``lowbit.models``), the
data (``lowbit.data``), quantizes the model and trains it with ``lowbit.train.fit``. Prints the
per-epoch table and writes ``history.{csv,md,json,png}`` and the effective ``config.toml`` to
``--out``; ``--save`` writes a safetensors checkpoint (``lowbit.nn.checkpoint``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``train`` subparser to ``sub`` (the subparsers of ``lowbit``)."""
    s = sub.add_parser(
        "train",
        help="train a small model with every tensor in its own format",
        description="Train a small model (lowbit.models) on a data set (lowbit.data) with the "
        "quantization and optimizer storage of a config file (TOML or JSON; examples "
        "in configs/). Prints the per-epoch table; writes history.csv/.md/.json, the "
        "accuracy-vs-epoch plot history.png and the effective config.toml to --out.",
    )
    s.add_argument(
        "--config", default=None, help="TrainConfig file (.toml or .json); default: fp32 training"
    )
    s.add_argument(
        "--model",
        default=None,
        help="model name (resnet-small, cnn-small, mlp, vit-tiny); overrides the config",
    )
    s.add_argument(
        "--data",
        default=None,
        help="data set (fashion-mnist, digits, synthetic); overrides the config",
    )
    s.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    s.add_argument("--subset", type=int, default=None, help="train on N examples only")
    s.add_argument("--epochs", type=int, default=None, help="number of epochs")
    s.add_argument("--batch-size", type=int, default=None, help="examples per step")
    s.add_argument("--lr", type=float, default=None, help="learning rate")
    s.add_argument("--seed", type=int, default=None, help="seed of init, shuffling and SR")
    s.add_argument("--out", default="train_out", help="output folder (default train_out/)")
    s.add_argument(
        "--save",
        default=None,
        metavar="PATH",
        help="write the trained model to this .safetensors file",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run)


_OVERRIDES = {
    "model": "model",
    "data": "data",
    "data_dir": "data_dir",
    "subset": "subset",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "seed": "seed",
}


def resolve_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``--config`` with the command line's overrides applied."""
    from lowbit.train import TrainConfig

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    changes = {
        field: getattr(args, arg)
        for arg, field in _OVERRIDES.items()
        if getattr(args, arg, None) is not None
    }
    return cfg.replace(**changes) if changes else cfg


def run(args: argparse.Namespace, console: Any) -> int:
    """Handler of ``lowbit train``; returns the exit status (user errors raise ValueError)."""
    import torch

    from lowbit.data import DataNotFoundError, load_dataset, make_loader
    from lowbit.models import build_model, list_models
    from lowbit.train import (
        build_optimizer,
        build_scaler,
        epoch_rows,
        fit,
        quantize_model,
        rich_table,
        write_history,
    )

    cfg = resolve_config(args)
    models = list_models()
    if cfg.model not in models:
        raise ValueError(f"unknown model {cfg.model!r}; accepted: {', '.join(models)}")
    try:
        splits = load_dataset(cfg.data, cfg.data_dir, subset=cfg.subset, seed=cfg.seed)
    except DataNotFoundError as e:
        # the CLI reports user errors as ValueError (one line, exit 2); keep the install hint
        raise ValueError(" ".join(str(e).split())) from e

    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model,
        in_channels=splits.in_channels,
        num_classes=splits.num_classes,
        image_size=splits.image_size,
    )
    quantize_model(model, cfg)
    optimizer = build_optimizer(model.parameters(), cfg)
    scaler = build_scaler(cfg)
    train_loader = make_loader(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_loader = make_loader(splits.test, 512, shuffle=False)

    stem = Path(args.config).stem if args.config else "fp32"
    label = f"{cfg.model} {splits.name} {stem}"
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"lowbit train: {label}: {len(splits.train)} train / {len(splits.test)} test "
        f"examples, {n_params} parameters, {cfg.epochs} epoch(s), "
        f"optimizer {cfg.optimizer} (weights {cfg.weight_fmt}, state "
        f"{cfg.state_fmt}, update {cfg.update_mode}), loss scaling {cfg.loss_scaling}"
    )
    if cfg.quant is not None:
        from lowbit.nn import summary

        console.print(summary(model))

    def report_epoch(h: Any) -> None:
        r = epoch_rows(h)[-1]
        console.print("  ".join(f"{k} {v}" for k, v in r.items()))

    hist = fit(
        model,
        train_loader,
        test_loader,
        optimizer=optimizer,
        epochs=cfg.epochs,
        scaler=scaler,
        progress=not args.no_progress,
        on_epoch=report_epoch,
        label=label,
    )

    console.print(rich_table(epoch_rows(hist), title=f"lowbit train: {label}"))
    out = Path(args.out)
    paths = write_history(hist, out, stem="history", title=f"lowbit train: {label}")
    cfg.save(out / "config.toml")
    console.print(
        f"final test accuracy {100 * hist.final_test_acc:.2f}%; wrote "
        + ", ".join(str(p) for p in (*paths.values(), out / "config.toml"))
    )
    if args.save:
        from lowbit.nn.checkpoint import save

        save(model, args.save, metadata={"train_config": cfg.to_json(indent=None)})
        console.print(f"checkpoint: {args.save}")
    return 0
