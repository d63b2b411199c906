"""Checkpoints as safetensors files: every state_dict tensor bit-exact, no pickle.

The file's string metadata holds ``"format": "lowbit-checkpoint-v1"``, ``"lowbit_version"``,
``"quant_config"`` (``model.lowbit_config.to_json()``, when the model was quantized with
``lowbit.nn.quantize_``) and the caller's own string pairs. ``load`` re-applies the stored
quantization config to a float model before it loads the tensors, so the quantizers' buffers
(scales and the like) exist to receive their saved values.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT = "lowbit-checkpoint-v1"
RESERVED_KEYS = ("format", "lowbit_version", "quant_config")


def _version() -> str:
    # imported late: lowbit/__init__ may itself import this module
    import lowbit

    return str(getattr(lowbit, "__version__", "unknown"))


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    out: dict[str, str] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"metadata must map str to str; got {k!r}: {v!r} "
                f"({type(k).__name__} → {type(v).__name__}); encode other values, e.g. as JSON"
            )
        if k in RESERVED_KEYS:
            raise ValueError(
                f"metadata key {k!r} is reserved (reserved: {', '.join(RESERVED_KEYS)})"
            )
        out[k] = v
    return out


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``model.state_dict()`` (parameters and buffers) to a safetensors file.

    Every tensor is copied to a contiguous CPU tensor of its own (safetensors refuses tensors
    that share memory, e.g. tied weights; each name gets its own copy, and ``load`` writes the
    same values into both). The file is written next to ``path`` and renamed into place, so an
    interrupted save leaves any older file intact.

    Args:
        model: the model.
        path: the file to write (conventionally ``*.safetensors``).
        metadata: extra string pairs to store (keys other than ``format``, ``lowbit_version``,
            ``quant_config``).

    Raises:
        TypeError: metadata that is not str → str, or a state entry that is not a tensor.
        ValueError: a reserved metadata key.
    """
    meta = {"format": FORMAT, "lowbit_version": _version()}
    config = getattr(model, "lowbit_config", None)
    if config is not None:
        meta["quant_config"] = config.to_json()
    meta.update(_check_metadata(metadata))
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state entry {name!r} is a {type(t).__name__}, not a tensor")
        tensors[name] = t.detach().to("cpu", copy=True).contiguous()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none)."""
    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> dict[str, str]:
    """Load a checkpoint written by ``save`` into ``model`` (in place); return its metadata.

    If the file has a ``quant_config`` and ``model`` has no ``lowbit_config``, the model is
    first quantized with ``lowbit.nn.quantize_(model, QuantConfig.from_json(...))``. Tensors are
    checked before anything is copied: a dtype or shape that differs from the model's is a
    ValueError naming the tensor (``load_state_dict`` would silently cast dtypes).

    Args:
        model: a model of the architecture that was saved.
        path: the safetensors file.
        strict: names must match exactly (no missing, no unexpected tensors), and a model that
            is already quantized must carry the same config as the file. With ``strict=False``
            only the tensors present in both are loaded.

    Returns:
        The file's metadata (``format``, ``lowbit_version``, ``quant_config`` if any, and the
        user's pairs).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a lowbit checkpoint, mismatched names/dtypes/shapes, or (strict) a
            different quantization config.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file {path!r}")
    meta = read_metadata(path)
    if meta.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{path}: format {meta['format']!r} is not {FORMAT!r}")
    stored_cfg = meta.get("quant_config")
    if stored_cfg is not None:
        current = getattr(model, "lowbit_config", None)
        if current is None:
            from lowbit.nn import QuantConfig, quantize_

            quantize_(model, QuantConfig.from_json(stored_cfg))
        elif strict and json.loads(current.to_json()) != json.loads(stored_cfg):
            raise ValueError(
                f"{path}: the model is already quantized with a different config "
                f"(model: {current.to_json()}, file: {stored_cfg}); pass strict=False to load "
                f"the tensors anyway"
            )

    own = model.state_dict()
    with safe_open(path, framework="pt") as f:
        names = list(f.keys())
        missing = [k for k in own if k not in names]
        unexpected = [k for k in names if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"{path} does not match the model's state: missing {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''} ({len(missing)} missing, "
                f"{len(unexpected)} unexpected)"
            )
        loaded: dict[str, torch.Tensor] = {}
        in_file = set(names)
        for k, ref in own.items():  # model order, so the first mismatch reported is the first
            if k not in in_file:
                continue
            t = f.get_tensor(k)
            if t.dtype != ref.dtype or t.shape != ref.shape:
                raise ValueError(
                    f"{path}: tensor {k!r} is {t.dtype} {tuple(t.shape)} in the file but "
                    f"{ref.dtype} {tuple(ref.shape)} in the model"
                )
            loaded[k] = t
    model.load_state_dict(loaded, strict=strict)
    return meta
