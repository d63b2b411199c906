"""``calibrate``: post-training quantization of a model's Linear and Conv layers.

Steps: copy the model (unless ``inplace``), put it in eval mode, fold BatchNorms
(:func:`~lowbit.ptq.fold_bn`), observe the input of every ``nn.Linear`` / ``nn.Conv1d`` /
``nn.Conv2d`` on the calibration batches with one observer each (float model: upstream layers
are not yet quantized, as TensorRT calibrates), then replace each layer by its PTQ twin whose
weight is quantized once (per tensor, per output channel, or per group of ``group_size``
consecutive weights of a channel's flattened fan-in) and whose input is fake-quantized per
tensor. A layer the calibration batches never reach keeps a float input (weight-only).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lowbit.ptq.bn_folding import fold_bn as _fold_bn
from lowbit.ptq.config import PTQConfig
from lowbit.ptq.fake_quant import quantize_weight, weight_scales
from lowbit.ptq.modules import is_target, to_ptq
from lowbit.ptq.observers import Observer, make_observer


def model_inputs(
    loader: Iterable[Any], num_batches: int | None, device: torch.device
) -> Iterator[torch.Tensor]:
    """The input tensor of each batch (``x`` of ``(x, y, ...)``), on ``device``."""
    n = 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"calibration batches must be tensors or (tensor, ...) tuples, "
                f"got {type(x).__name__}"
            )
        yield x.to(device)
        n += 1
        if num_batches is not None and n >= num_batches:
            break  # before fetching another batch from the loader
    if n == 0:
        raise ValueError("the calibration loader yielded no batches")


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _observe(
    model: nn.Module,
    targets: dict[str, nn.Module],
    loader: Iterable[Any],
    cfg: PTQConfig,
    bits: int,
    progress: bool,
) -> dict[str, Observer]:
    """Observers of every target's input after the passes over ``loader``."""
    obs = {name: make_observer(cfg.method, bits, percentile=cfg.percentile) for name in targets}
    stage = {"pass": 1}

    def hook(name: str) -> Any:
        def fn(_mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if stage["pass"] == 1:
                obs[name].observe_range(x)
            else:
                obs[name].observe(x)

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets.items()]
    device = _device(model)
    try:
        passes = 2 if any(o.needs_second_pass for o in obs.values()) else 1
        for k in (1, 2)[:passes]:
            stage["pass"] = k
            it = model_inputs(loader, cfg.num_batches, device)
            for x in tqdm(
                it,
                desc=f"calibrate ({cfg.method}, pass {k}/{passes})",
                disable=not progress,
                total=cfg.num_batches,
                leave=False,
            ):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return obs


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def calibrate(
    model: nn.Module,
    loader: Iterable[Any] | None,
    *,
    weight: str = "int8",
    act: str | None = "int8",
    method: str = "minmax",
    granularity: str = "per_channel",
    group_size: int | None = None,
    percentile: float = 99.99,
    num_batches: int | None = None,
    fold_bn: bool = True,
    weight_only: bool = False,
    inplace: bool = False,
    weight_method: str | None = None,
    progress: bool = False,
) -> nn.Module:
    """Post-training quantization: a model whose Linear/Conv layers use integer weights and
    inputs (fake quantization with :func:`lowbit.quantize_int`'s semantics).

    Args:
        model: the float model (its layers are found by type: ``nn.Linear``, ``nn.Conv1d``,
            ``nn.Conv2d``).
        loader: calibration batches (``x`` or ``(x, y, ...)``); iterated once for
            ``method="minmax"``, twice otherwise. May be ``None`` when weight-only.
        weight: weight format, a signed integer format ``"int2"`` .. ``"int16"``.
        act: input activation format (``None``: weight-only).
        method: activation calibration: ``"minmax"``, ``"percentile"``, ``"mse"`` or
            ``"kl"`` (see :mod:`lowbit.ptq.observers`).
        granularity: weight scales ``"per_tensor"``, ``"per_channel"`` (output channel) or
            ``"per_group"`` (``group_size`` consecutive fan-in weights of a channel).
            Activations are always per tensor.
        group_size: group length for ``"per_group"`` (default 128; the last group of a
            channel may be shorter).
        percentile: percentile of ``|x|`` for ``method="percentile"``, in ``(0, 100]``.
        num_batches: calibration batches per pass (``None``: the whole loader).
        fold_bn: fold BatchNorms into the preceding layers first.
        weight_only: quantize weights only (``act`` ignored).
        inplace: convert ``model`` itself instead of a copy.
        weight_method: weight scales by ``"minmax"`` or ``"mse"`` (default: ``"mse"`` when
            ``method="mse"``, else ``"minmax"``).
        progress: show a progress bar over the calibration batches.

    Returns:
        The quantized model (in eval mode), with ``lowbit_ptq_config`` set to the
        :class:`PTQConfig`.

    Raises:
        ValueError: unknown method/format/granularity, ``num_batches <= 0``, ``percentile``
            outside ``(0, 100]``, a model without Linear/Conv layers, an empty loader.
    """
    cfg = PTQConfig(
        weight=weight,
        act=act,
        method=method,
        weight_method=weight_method,
        granularity=granularity,
        group_size=group_size,
        percentile=percentile,
        num_batches=num_batches,
        fold_bn=fold_bn,
        weight_only=weight_only,
    )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    act_bits = cfg.act_bits
    if act_bits is not None and loader is None:
        raise ValueError("a loader is needed to calibrate activations (or weight_only=True)")
    m = model if inplace else copy.deepcopy(model)
    m.eval()
    if cfg.fold_bn:
        _fold_bn(m)
    targets = {n: mod for n, mod in m.named_modules() if is_target(mod)}
    if not targets:
        raise ValueError("the model has no nn.Linear / nn.Conv1d / nn.Conv2d layer to quantize")
    obs = _observe(m, targets, loader, cfg, act_bits, progress) if act_bits else {}
    wbits, gs = cfg.weight_bits, cfg.effective_group_size
    for name, layer in targets.items():
        w = layer.weight
        scales = weight_scales(w, wbits, cfg.granularity, gs, cfg.effective_weight_method)
        qw = quantize_weight(w, wbits, cfg.granularity, gs, scales)
        o = obs.get(name)
        act_scale = o.scale() if (o is not None and o.count > 0) else None
        new = to_ptq(
            layer,
            qw,
            weight_bits=wbits,
            act_bits=act_bits,
            granularity=cfg.granularity,
            group_size=gs if cfg.granularity == "per_group" else None,
            weight_scale=scales,
            act_scale=act_scale,
        )
        _set_submodule(m, name, new)
    m.lowbit_ptq_config = cfg
    return m


__all__ = ["calibrate", "model_inputs"]
