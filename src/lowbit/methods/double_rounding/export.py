"""Export a trained Double Rounding model as int8 safetensors, and load it back.

File layout (safetensors; no pickle):

* ``<layer>.weight_int8``: the stored integers ``W_h`` (int8) of every switchable layer;
* ``<layer>.weight_scale``: its per-channel scale ``s_h`` (float32, shape ``(C,)``);
* every other entry of the model's ``state_dict`` unchanged (full-precision first and last
  layers, biases, per-width activation scales, per-width BatchNorm parameters and statistics,
  the transitional statistics);
* metadata (str → str): ``format`` (``"lowbit-dr-int8/1"``), ``h``, ``bits`` and ``layers``
  (JSON lists), ``lowbit_version``, plus the caller's entries (the CLI stores the model and
  data set there).

The float weights of the switchable layers are not stored: :meth:`DRCheckpoint.load_into`
sets them to ``W_h · s_h``, from which the quantizer recovers ``W_h`` exactly
(``round((c·s)/s) = c`` for ``|c| ≤ 128`` in float32), so every width behaves as in training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lowbit.methods.double_rounding.convert import dr_layers, model_widths
from lowbit.methods.double_rounding.quantizer import (
    check_bits,
    check_method,
    dequantize,
    switch,
)

FORMAT = "lowbit-dr-int8/1"

__all__ = ["FORMAT", "DRCheckpoint", "export", "load_int8", "switch"]


def _layer_keys(name: str) -> tuple[str, str, str, str]:
    return (
        f"{name}.weight",
        f"{name}.weight_quant.scale",
        f"{name}.weight_int8",
        f"{name}.weight_scale",
    )


def export(model: nn.Module, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (converted and trained) to ``path`` as int8 safetensors.

    Args:
        model: a Double Rounding model.
        path: output file (conventionally ``*.safetensors``).
        metadata: extra str → str entries.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    from lowbit import __version__

    layers = dr_layers(model)
    if not layers:
        raise ValueError("model has no switchable layer; convert and train it first")
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str, got {k!r}: {v!r}")
    state = model.state_dict()
    tensors: dict[str, Tensor] = {}
    skip: set[str] = set()
    h = getattr(model, "dr_h", 8)
    for n, m in layers.items():
        w_key, s_key, c_key, ws_key = _layer_keys(n)
        skip.update((w_key, s_key))
        tensors[c_key] = m.weight_quant.codes(m.weight).cpu().contiguous()
        tensors[ws_key] = m.weight_quant.step_scale().cpu().contiguous().clone()
    for k, v in state.items():
        if k in skip:
            continue
        if k in tensors:
            raise ValueError(f"state_dict key {k!r} clashes with an exported key")
        tensors[k] = v.detach().cpu().contiguous().clone()
    meta = {
        "format": FORMAT,
        "h": str(h),
        "bits": json.dumps(list(model_widths(model))),
        "layers": json.dumps(list(layers)),
        "lowbit_version": __version__,
    }
    meta.update(metadata or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


@dataclass
class DRCheckpoint:
    """An exported int8 model, as read by :func:`load_int8`.

    Attributes:
        codes: ``W_h`` (int8) by layer name.
        scales: ``s_h`` by layer name.
        state: every other tensor (state_dict keys).
        metadata: the file's metadata.
        h: stored width; ``bits``: the trained widths; ``layers``: switchable layer names.
    """

    codes: dict[str, Tensor]
    scales: dict[str, Tensor]
    state: dict[str, Tensor]
    metadata: dict[str, str]
    h: int = 8
    bits: tuple[int, ...] = ()
    layers: tuple[str, ...] = field(default=())

    def int_weight(self, layer: str, bits: int, method: str = "round") -> Tensor:
        """``W_l`` of one layer by the integer switch of its stored codes."""
        self._check_layer(layer)
        return switch(self.codes[layer], self.h, check_bits(bits, self.h), check_method(method))

    def weight(self, layer: str, bits: int, method: str = "round") -> Tensor:
        """The dequantized weight ``Ŵ_l = W_l · s_h · 2^(h-l)`` of one layer."""
        return dequantize(self.int_weight(layer, bits, method), self.scales[layer], self.h - bits)

    def _check_layer(self, layer: str) -> None:
        if layer not in self.codes:
            raise ValueError(f"layer={layer!r} is not in the file; accepted: {list(self.codes)}")

    def load_into(self, model: nn.Module, *, strict: bool = True) -> nn.Module:
        """Load into a model converted with the same architecture and widths.

        Switchable weights become ``W_h · s_h`` (see the module docstring); everything else is
        copied bit for bit.
        """
        layers = dr_layers(model)
        if set(layers) != set(self.layers):
            raise ValueError(
                f"the model's switchable layers {sorted(layers)} differ from the "
                f"file's {sorted(self.layers)}"
            )
        if tuple(model_widths(model)) != tuple(self.bits):
            raise ValueError(
                f"the model was converted for bits={model_widths(model)}, the "
                f"file holds bits={self.bits}"
            )
        state = dict(self.state)
        for n in layers:
            w_key, s_key, _, _ = _layer_keys(n)
            state[w_key] = dequantize(self.codes[n], self.scales[n], 0)
            state[s_key] = self.scales[n]
        model.load_state_dict(state, strict=strict)
        return model


def load_int8(path: str | Path) -> DRCheckpoint:
    """Read a file written by :func:`export` (every tensor bit-exact)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    tensors: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a Double Rounding export (format="
            f"{meta.get('format')!r}; expected {FORMAT!r})"
        )
    layers = tuple(json.loads(meta["layers"]))
    codes, scales = {}, {}
    for n in layers:
        _, _, c_key, ws_key = _layer_keys(n)
        codes[n] = tensors.pop(c_key)
        scales[n] = tensors.pop(ws_key)
        if codes[n].dtype != torch.int8:
            raise ValueError(f"{c_key} has dtype {codes[n].dtype}; expected torch.int8")
    return DRCheckpoint(
        codes=codes,
        scales=scales,
        state=tensors,
        metadata=meta,
        h=int(meta["h"]),
        bits=tuple(json.loads(meta["bits"])),
        layers=layers,
    )
