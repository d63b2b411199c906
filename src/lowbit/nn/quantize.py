"""``quantize_(model, config)``: swap a model's layers for quantized ones, in place.

* Handlers are looked up by the module's exact type (a registry ``type -> handler``;
  subclasses are not swapped, since their ``forward`` may differ): ``nn.Linear``,
  ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Embedding`` and ``lowbit.nn.MatMul`` by default;
  :func:`register_handler` adds more. ``nn.MultiheadAttention`` is left alone (its matmuls
  are fused inside ``F.multi_head_attention_forward``; models write attention with ``MatMul``).
* A layer is left in fp32 when its qualified name matches a ``config.skip`` pattern, when
  ``filter_fn(module, name)`` returns False, or when its handler declines (an
  ``nn.Embedding`` with ``max_norm`` or sparse gradients, a parametrized module); the reason
  shows in :func:`summary`.
* The quantized layer shares the float layer's Parameter objects, buffers and hooks, so
  optimizers built before ``quantize_`` keep working and the original ``state_dict`` keys are
  unchanged; new entries are LSQ scales (``<layer>.<role>_quant.scale`` and
  ``.initialized``) and ``<layer>.lowbit_step`` (layers with stochastic rounding).
* ``model.lowbit_config`` is set to the config (checkpoints store it).
* Re-quantizing: ``quantize_`` on a model that already holds quantized layers raises
  ``ValueError``; call :func:`dequantize_` first (it swaps the float layers back, same
  parameters) and quantize again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lowbit.nn.config import QuantConfig
from lowbit.nn.layers import (
    QuantConv1d,
    QuantConv2d,
    QuantEmbedding,
    QuantLayer,
    QuantLinear,
    QuantMatMul,
)
from lowbit.nn.matmul import MatMul

Handler = Callable[[nn.Module, QuantConfig, str], nn.Module]
FilterFn = Callable[[nn.Module, str], bool]

_HANDLERS: dict[type[nn.Module], Handler] = {}


def register_handler(module_type: type[nn.Module], handler: Handler) -> None:
    """Make ``quantize_`` swap modules of exactly ``module_type`` with ``handler``.

    Args:
        module_type: the float module class.
        handler: ``handler(module, layer_config, name) -> quantized module``; the layer config
            has the overrides for ``name`` applied. It may raise ``NotImplementedError`` to
            leave a module unquantized (its message becomes the summary's note).
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    _HANDLERS[module_type] = handler


_METHOD_HANDLERS: dict[tuple[str, type[nn.Module]], Handler] = {}


def register_method(method: str, module_type: type[nn.Module], handler: Handler) -> None:
    """Make ``quantize_`` swap ``module_type`` with ``handler`` when ``config.method == method``.

    Layer-6 methods (DFP-16, A2Q, ...) register their layers on import; a config naming a
    method uses these handlers first and the default ones for the other module types.
    """
    if not isinstance(method, str) or not method:
        raise TypeError(f"method must be a non-empty string, got {method!r}")
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    _METHOD_HANDLERS[(method, module_type)] = handler


def methods() -> list[str]:
    """Names of the registered methods (``QuantConfig.method`` values)."""
    return sorted({m for m, _ in _METHOD_HANDLERS})


def handlers() -> dict[type[nn.Module], Handler]:
    """The registry (a copy)."""
    return dict(_HANDLERS)


def _embedding_handler(mod: nn.Module, cfg: QuantConfig, name: str) -> nn.Module:
    assert isinstance(mod, nn.Embedding)
    if mod.max_norm is not None or mod.sparse:
        raise NotImplementedError("Embedding with max_norm or sparse=True is not quantized")
    return QuantEmbedding.from_float(mod, cfg, name)


register_handler(nn.Linear, QuantLinear.from_float)
register_handler(nn.Conv1d, QuantConv1d.from_float)
register_handler(nn.Conv2d, QuantConv2d.from_float)
register_handler(nn.Embedding, _embedding_handler)
register_handler(MatMul, QuantMatMul.from_float)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` (or any submodule) is a quantized layer or carries a config."""
    return hasattr(model, "lowbit_config") or any(
        isinstance(m, QuantLayer) for m in model.modules()
    )


def _swap(model: nn.Module, replaced: dict[int, nn.Module]) -> None:
    """Point every reference to a replaced module (shared modules too) at its replacement."""
    for m in list(model.modules()):
        for key, child in list(m._modules.items()):
            if child is not None and id(child) in replaced:
                m._modules[key] = replaced[id(child)]


def quantize_(
    model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Swap every supported layer of ``model`` for its quantized version, in place.

    Args:
        model: the float model.
        config: formats and modes; per-layer ``overrides`` and ``skip`` patterns match the
            qualified module names of ``model.named_modules()``.
        filter_fn: ``filter_fn(module, name) -> bool``; False leaves the layer in fp32.

    Returns:
        ``model`` (quantized in place). When ``model`` itself is a swappable layer (a bare
        ``nn.Linear``) the quantized replacement is returned instead and must be used.

    Raises:
        ValueError: the model is already quantized, or a layer's weight does not fit the
            config's granularity (axis out of range, group size not dividing).
        TypeError: ``config`` is not a :class:`QuantConfig`.
    """
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if is_quantized(model):
        raise ValueError(
            "model is already quantized; call lowbit.nn.dequantize_(model) "
            "first to swap the float layers back, then quantize_ it again"
        )
    if config.method is not None and config.method not in methods():
        raise ValueError(
            f"method={config.method!r} is not registered; registered: "
            f"{', '.join(methods()) or 'none'} (lowbit.recipes imports the "
            "methods that register themselves)"
        )
    replaced: dict[int, nn.Module] = {}
    notes: dict[str, str] = {}
    for name, mod in list(model.named_modules()):
        handler = _HANDLERS.get(type(mod))
        if config.method is not None:
            handler = _METHOD_HANDLERS.get((config.method, type(mod)), handler)
        if handler is None:
            continue
        if config.skips(name):
            notes[name] = "skipped (config.skip)"
            continue
        if filter_fn is not None and not filter_fn(mod, name):
            notes[name] = "skipped (filter_fn)"
            continue
        if hasattr(mod, "parametrizations"):
            notes[name] = "not quantized (parametrized module)"
            continue
        try:
            new = handler(mod, config.for_layer(name), name)
        except NotImplementedError as err:
            notes[name] = f"not quantized ({err})"
            continue
        replaced[id(mod)] = new
    root = replaced.get(id(model))
    if root is not None:
        model = root
    _swap(model, replaced)
    model.lowbit_config = config
    model.lowbit_notes = notes
    return model


def dequantize_(model: nn.Module) -> nn.Module:
    """Swap every quantized layer back to its float layer (same parameters), in place.

    Removes ``model.lowbit_config``. Returns ``model`` (or the float replacement when the
    model itself is a quantized layer).
    """
    replaced: dict[int, nn.Module] = {}
    for m in list(model.modules()):
        if isinstance(m, QuantLayer):
            replaced[id(m)] = m.to_float()
    root = replaced.get(id(model))
    if root is not None:
        model = root
    _swap(model, replaced)
    for attr in ("lowbit_config", "lowbit_notes"):
        if attr in model.__dict__:
            del model.__dict__[attr]
    return model


# ---- summary -----------------------------------------------------------------------------------
_COLUMNS = ("layer", "type", "weight", "act", "grad_act", "grad_weight", "output", "note")


@dataclass
class QuantSummary:
    """Which tensor of which layer gets which format.

    ``rows`` hold one dict per layer (keys ``_COLUMNS``); ``str()`` is a markdown table and
    ``rich.print(summary)`` draws a rich table.
    """

    rows: list[dict[str, str]] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        for r in self.rows:
            lines.append("| " + " | ".join(r[c].replace("|", "\\|") for c in _COLUMNS) + " |")
        return "\n".join(lines)

    def to_rich(self) -> Any:
        from rich.table import Table

        t = Table(title="lowbit quantization")
        for c in _COLUMNS:
            t.add_column(c)
        for r in self.rows:
            t.add_row(*(r[c] for c in _COLUMNS))
        return t

    def __rich__(self) -> Any:
        return self.to_rich()

    def __str__(self) -> str:
        return self.to_markdown()

    def __len__(self) -> int:
        return len(self.rows)


def summary(model: nn.Module) -> QuantSummary:
    """One row per layer of ``model``: every quantized layer, every other leaf module and
    every module with parameters of its own (``nn.MultiheadAttention``).

    Formats are written as ``"<format> <mode> [scaling] [granularity]"``; ``fp32`` means the
    tensor is not rounded, ``-`` that the layer has no such tensor. MatMul layers list both
    operands under ``act`` (``a: ...; b: ...``).
    """
    notes: dict[str, str] = getattr(model, "lowbit_notes", {})
    rows = []
    inside_quant: set[str] = set()
    for name, m in model.named_modules():
        if "" in inside_quant or any(name.startswith(p + ".") for p in inside_quant):
            continue
        if isinstance(m, QuantLayer):
            inside_quant.add(name)
            qs = m.quantizers()
            row = {"layer": name or "(root)", "type": type(m).__name__, "note": ""}
            for role in ("weight", "grad_act", "grad_weight", "output"):
                if role in m.ROLES:
                    q = qs.get(role)
                    row[role] = q.describe() if q is not None else "fp32"
                else:
                    row[role] = "-"
            if "act" not in m.ROLES:
                row["act"] = "-"
            elif len(m.ACT_ATTRS) == 1:
                q = qs["act"]
                row["act"] = q.describe() if q is not None else "fp32"
            else:
                parts = []
                for attr, _ in m.ACT_ATTRS:
                    key = attr.removesuffix("_quant")
                    q = qs[key]
                    parts.append(f"{key}: {q.describe() if q is not None else 'fp32'}")
                row["act"] = "; ".join(parts)
            rows.append(row)
        else:
            has_p = any(True for _ in m.parameters(recurse=False))
            if m._modules and not has_p and name not in notes:
                continue  # a container: its layers have their own rows
            note = notes.get(name, "not quantized" if has_p else "")
            if isinstance(m, nn.MultiheadAttention) and name not in notes:
                note = "not quantized (fused attention: write it with lowbit.nn.MatMul)"
            row = {"layer": name or "(root)", "type": type(m).__name__, "note": note}
            for role in ("weight", "act", "grad_act", "grad_weight", "output"):
                row[role] = "fp32" if has_p else "-"
            rows.append(row)
    return QuantSummary(rows)


__all__ = [
    "QuantSummary",
    "dequantize_",
    "handlers",
    "is_quantized",
    "quantize_",
    "register_handler",
    "summary",
]
