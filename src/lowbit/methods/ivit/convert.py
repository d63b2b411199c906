"""``convert``: a trained float ViT / BERT → its I-ViT twin, calibrated on a few batches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from lowbit.methods.ivit.model import IBert, IViT, IViTConfig


def _is_vit(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("patch_embed", "pos_embed", "blocks", "norm", "head"))


def _is_bert(m: nn.Module) -> bool:
    return hasattr(m, "embeddings") and hasattr(m, "encoder") and hasattr(m.encoder, "layer")


def _check_float_attention(model: nn.Module) -> None:
    """The converted model must still be the float model: its attention matmuls are plain
    ``lowbit.nn.MatMul`` (a ``quantize_``-d model has other arithmetic to mirror)."""
    from lowbit.nn.matmul import MatMul

    for name, mod in model.named_modules():
        if name.endswith((".score", ".mix", ".qk", ".av")) and type(mod) is not MatMul:
            raise ValueError(
                f"convert: {name} is a {type(mod).__name__}, expected the float "
                "lowbit.nn.MatMul (convert the unquantized model)"
            )


def _inputs(net: nn.Module, batch: Any) -> tuple[Any, ...]:
    if isinstance(net, IViT):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return (x,)
    if isinstance(batch, dict):
        return batch["input_ids"], batch.get("attention_mask")
    if isinstance(batch, (tuple, list)):
        return tuple(batch[:2]) if len(batch) >= 2 else (batch[0], None)
    return batch, None


@torch.no_grad()
def calibrate(net: IViT | IBert, loader: Iterable[Any], max_batches: int | None = None) -> int:
    """Set the activation ranges from ``loader`` (train-mode forwards, no gradient: the first
    batch sets each min/max, later ones move it by the EMA momentum), then record the integer
    constants. Returns the number of batches used.

    Batches: images or ``(images, labels)`` for :class:`IViT`; ``(input_ids,
    attention_mask)``, a dict with those keys, or ids alone for :class:`IBert`.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches={max_batches}; accepted: None or >= 1")
    was = net.training
    net.train()
    n = 0
    try:
        for batch in loader:
            net(*_inputs(net, batch))
            n += 1
            if max_batches is not None and n >= max_batches:
                break
    finally:
        net.train(was)
    if n == 0:
        raise ValueError("calibrate: the loader yielded no batch")
    net.refresh()
    return n


def convert(
    model: nn.Module,
    calib_loader: Iterable[Any],
    *,
    config: IViTConfig | None = None,
    input_mean: float = 0.0,
    input_std: float = 1.0,
    pixel_levels: int = 255,
    max_batches: int | None = None,
) -> IViT | IBert:
    """Build the I-ViT network of a trained float model and calibrate it (PTQ).

    Args:
        model: a ``lowbit.models.ViTTiny`` (anything with ``patch_embed``, ``pos_embed``,
            ``blocks``, ``norm``, ``head`` of that layout) → :class:`IViT`; or a BERT encoder
            such as ``lowbit.models.minilm.MiniLM`` (``embeddings``, ``encoder.layer``) →
            :class:`IBert`. Its parameters are copied; the model is left unchanged.
        calib_loader: batches for :func:`calibrate`.
        config: bit widths; default :class:`IViTConfig()` (the authors' repo settings).
        input_mean, input_std, pixel_levels: the ViT's input normalisation
            ``(p/pixel_levels − mean)/std`` (``DataSplits.mean``, ``.std``), folded into the
            patch embedding so the integer path takes raw pixel codes.
        max_batches: calibrate on at most this many batches.

    Returns:
        The calibrated network in eval mode: ``forward`` is the fake-quant graph (call
        ``.train()`` and any optimizer for QAT), ``run_int`` the integer-only path.

    Raises:
        ValueError: the model is neither layout, or its attention is already quantized.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_float_attention(model)
    net: IViT | IBert
    if _is_vit(model):
        net = IViT(
            model, config, input_mean=input_mean, input_std=input_std, pixel_levels=pixel_levels
        )
    elif _is_bert(model):
        net = IBert(model, config)
    else:
        raise ValueError(
            f"convert: {type(model).__name__} is neither a ViT (patch_embed, "
            "pos_embed, blocks, norm, head) nor a BERT encoder (embeddings, "
            "encoder.layer)"
        )
    device = next(model.parameters()).device
    net.to(device)
    calibrate(net, calib_loader, max_batches)
    return net.eval()


__all__ = ["calibrate", "convert"]
