"""Multi-precision training of a Double Rounding model (ALRS, optional HASB) and baselines.

One training step on a batch is sequential over the widths (as in the paper): for each width
``b`` of ``bits`` (highest first), switch the model to ``b``, forward, backward and take an
optimizer step, with the weight scales' learning rate scaled by ALRS. Optimizer: Adam,
``lr = 5e-4``, a cosine schedule over all steps (per iteration), weight decay ``5e-5`` on
layer weights and biases only.

Baselines: :func:`train_independent` trains one fixed-precision model per width (same
quantizer, one width each) and :func:`train_fp` trains the float model with the same
optimizer.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.methods.double_rounding.alrs import param_groups, set_learning_rates
from lowbit.methods.double_rounding.convert import (
    DEFAULT_BITS,
    convert,
    dr_layers,
    model_widths,
    set_bits,
)
from lowbit.methods.double_rounding.evaluate import accuracy, evaluate
from lowbit.methods.double_rounding.hasb import HASBSchedule, layer_traces
from lowbit.methods.double_rounding.layers import _check_widths


@dataclass
class TrainResult:
    """What a training run returns.

    Attributes:
        accuracy: final test accuracy by width (int keys; ``"fp"`` for a float model).
        history: one dict per epoch (``epoch``, ``loss`` by width, ``mixed_steps``,
            ``seconds``, and ``accuracy`` by width on evaluated epochs).
        seconds: wall time of the whole run.
        config: the options of the run (JSON-friendly).
        traces: HASB sensitivities ``t_l`` when HASB ran, else None.
        model: the trained model (the converted one for multi-precision training).
        models: per-width models of :func:`train_independent`.
    """

    accuracy: dict[Any, float]
    history: list[dict[str, Any]]
    seconds: float
    config: dict[str, Any]
    traces: dict[str, float] | None = None
    model: nn.Module | None = field(default=None, repr=False)
    models: dict[int, nn.Module] = field(default_factory=dict, repr=False)


def _check_run(epochs: Any, lr: Any, weight_decay: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r}; accepted: an int >= 1")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr={lr!r}; accepted: a number > 0")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ValueError(f"weight_decay={weight_decay!r}; accepted: a number >= 0")


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _num_batches(loader: Iterable) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in loader)


def train(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable | None = None,
    *,
    bits: Sequence[int] = DEFAULT_BITS,
    epochs: int = 1,
    alrs: bool = True,
    hasb: bool = False,
    lr: float = 5e-4,
    cosine: bool = True,
    weight_decay: float = 5e-5,
    seed: int = 0,
    progress: bool = True,
    hasb_warmup: int | None = None,
    hasb_probes: int = 4,
    hasb_batches: int = 2,
    eval_every: int = 0,
    h: int = 8,
) -> TrainResult:
    """Multi-precision training with the sequential per-width step.

    Args:
        model: a float model (converted here with ``bits``) or a converted one.
        train_loader: batches ``(x, y)`` (a DataLoader; iterated once per epoch).
        test_loader: evaluated at the end (and every ``eval_every`` epochs); None skips it.
        bits: the widths trained jointly.
        epochs: passes over ``train_loader``.
        alrs: scale the weight scales' learning rate per width (:mod:`.alrs`).
        hasb: Hessian-aware stochastic bit-switching after the warm-up (:mod:`.hasb`).
        lr: Adam learning rate.
        cosine: cosine decay of the learning rate to 0 over all steps.
        weight_decay: on layer weights and biases only.
        seed: seeds torch (initialisation-free here; dropout, if any) and the HASB draws.
        progress: show a tqdm bar.
        hasb_warmup: epochs before switching starts (default ``min(10, epochs // 2)``).
        hasb_probes, hasb_batches: Hutchinson probes and batches for ``t_l``.
        eval_every: evaluate every so many epochs (0: at the end only).
        h: the stored width, used when converting.

    Returns:
        A :class:`TrainResult`; ``result.model`` is the trained (converted) model.
    """
    _check_run(epochs, lr, weight_decay)
    widths = _check_widths(tuple(bits), h)
    if not dr_layers(model):
        model = convert(model, widths, h=h, inplace=True)
    else:
        missing = sorted(set(widths) - set(model_widths(model)))
        if missing:
            raise ValueError(
                f"bits={widths}: the model was converted for {model_widths(model)}, not {missing}"
            )
    h = getattr(model, "dr_h", h)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.Adam(param_groups(model, lr, weight_decay), lr=lr)
    n_batches = _num_batches(train_loader)
    total = epochs * n_batches
    warmup = min(10, epochs // 2) if hasb_warmup is None else hasb_warmup
    schedule: HASBSchedule | None = None
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    step = 0
    bar = _progress(total, f"DR train {widths}", progress)
    try:
        for epoch in range(epochs):
            if hasb and schedule is None and epoch >= warmup:
                traces = layer_traces(
                    model, train_loader, n_batches=hasb_batches, n_probes=hasb_probes, seed=seed
                )
                schedule = HASBSchedule(traces, widths, epochs, warmup=warmup, seed=seed)
            model.train()
            te = time.perf_counter()
            sums = dict.fromkeys(widths, 0.0)
            counts = dict.fromkeys(widths, 0)
            mixed_steps = 0
            for x, y in train_loader:
                x, y = x.to(device), y.to(device)
                factor = _cosine(step, total) if cosine else 1.0
                for b in widths:
                    config = schedule.step_bits(epoch, b) if schedule is not None else b
                    mixed_steps += isinstance(config, dict)
                    set_bits(model, config)
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    set_learning_rates(opt, factor, config, alrs=alrs, h=h)
                    opt.step()
                    if not isinstance(config, dict):
                        sums[b] += float(loss.detach())
                        counts[b] += 1
                step += 1
                bar.update(1)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": {b: sums[b] / counts[b] for b in widths if counts[b]},
                "mixed_steps": mixed_steps,
                "seconds": time.perf_counter() - te,
            }
            if (
                test_loader is not None
                and eval_every
                and (epoch + 1) % eval_every == 0
                and epoch + 1 < epochs
            ):
                row["accuracy"] = {b: evaluate(model, test_loader, bits=b) for b in widths}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss'].get(widths[-1], float('nan')):.3f}")
    finally:
        bar.close()
    set_bits(model, widths[0])
    acc: dict[Any, float] = {}
    if test_loader is not None:
        acc = {b: evaluate(model, test_loader, bits=b) for b in widths}
        history[-1]["accuracy"] = dict(acc)
    config = {
        "bits": list(widths),
        "epochs": epochs,
        "alrs": alrs,
        "hasb": hasb,
        "lr": lr,
        "cosine": cosine,
        "weight_decay": weight_decay,
        "seed": seed,
        "h": h,
        "hasb_warmup": warmup if hasb else None,
    }
    return TrainResult(
        accuracy=acc,
        history=history,
        seconds=time.perf_counter() - t0,
        config=config,
        traces=schedule.traces if schedule else None,
        model=model,
    )


def train_independent(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable | None = None,
    *,
    bits: Sequence[int] = DEFAULT_BITS,
    epochs: int = 1,
    **kw: Any,
) -> TrainResult:
    """The fixed-precision baseline: one model per width, each trained at that width only.

    ``model`` is a float model; each width trains a converted deep copy (the same quantizer
    and per-width layers, without ALRS: one width has nothing to balance). Other keyword
    arguments are those of :func:`train`.
    """
    if dr_layers(model):
        raise ValueError("train_independent takes the float model (it converts one copy per width)")
    kw.pop("alrs", None)
    kw.pop("hasb", None)
    widths = _check_widths(tuple(bits), kw.get("h", 8))
    t0 = time.perf_counter()
    acc: dict[Any, float] = {}
    history: list[dict[str, Any]] = []
    models: dict[int, nn.Module] = {}
    for b in widths:
        res = train(
            copy.deepcopy(model),
            train_loader,
            test_loader,
            bits=(b,),
            epochs=epochs,
            alrs=False,
            hasb=False,
            **kw,
        )
        acc.update(res.accuracy)
        history.extend({"bits": b, **row} for row in res.history)
        models[b] = res.model  # type: ignore[assignment]
    return TrainResult(
        accuracy=acc,
        history=history,
        seconds=time.perf_counter() - t0,
        config={
            "bits": list(widths),
            "epochs": epochs,
            "independent": True,
            **{k: v for k, v in kw.items() if k != "progress"},
        },
        models=models,
    )


def train_fp(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable | None = None,
    *,
    epochs: int = 1,
    lr: float = 5e-4,
    cosine: bool = True,
    weight_decay: float = 5e-5,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train the float model (in place) with the same optimizer and schedule as :func:`train`.

    ``result.accuracy`` is ``{"fp": test accuracy}``.
    """
    _check_run(epochs, lr, weight_decay)
    if dr_layers(model):
        raise ValueError("train_fp takes a float model, not a converted one")
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.Adam(param_groups(model, lr, weight_decay), lr=lr)
    n_batches = _num_batches(train_loader)
    total = epochs * n_batches
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    step = 0
    bar = _progress(total, "FP train", progress)
    try:
        for epoch in range(epochs):
            model.train()
            te = time.perf_counter()
            loss_sum, count = 0.0, 0
            for x, y in train_loader:
                x, y = x.to(device), y.to(device)
                set_learning_rates(opt, _cosine(step, total) if cosine else 1.0, None)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach())
                count += 1
                step += 1
                bar.update(1)
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": {"fp": loss_sum / max(count, 1)},
                    "seconds": time.perf_counter() - te,
                }
            )
    finally:
        bar.close()
    acc: dict[Any, float] = {}
    if test_loader is not None:
        acc = {"fp": accuracy(model, test_loader)}
        history[-1]["accuracy"] = dict(acc)
    return TrainResult(
        accuracy=acc,
        history=history,
        seconds=time.perf_counter() - t0,
        config={
            "epochs": epochs,
            "lr": lr,
            "cosine": cosine,
            "weight_decay": weight_decay,
            "seed": seed,
            "fp": True,
        },
        model=model,
    )
