"""Precision assignments: which tensor of a training step is stored in which format.

An :class:`Assignment` maps every tensor of a :class:`~.groups.TensorGraph` to ``fp_6_9``
(high), ``fp_4_3_4`` (low ``P``/``Y``) or ``fp_5_2`` (low ``GY``); ``GP`` is always high.
Schemes (Lee, Sharma & Aiken; repository names in brackets):

* ``"ours"`` [``topr_dec``]: demote whole groups, largest first, until the low-precision
  ratio ``r`` reaches ``r_min``. A few early, high-resolution activation groups hold most of
  the memory, so demoting them buys the most memory per unit of accuracy lost.
* ``"smallest_first"`` [``topr_inc``]: the same, smallest groups first (the ablation).
* ``"random"`` [``rand``]: the same, groups in a seeded random order (``random.Random``).
* ``"pi_op"`` [``std`` + ``--pa-upd-no-end``]: the HFP8 standard: every GEMM's weight,
  input and output gradient low, except the first and the last GEMM; GEMM outputs high.

``r`` is the paper's memory metric: the fraction of the step's tensor elements (``P``, ``Y``,
``GY``, ``GP`` at the training batch size) stored in low precision, equal to the repository's
``(bits_all_high − bits_now) / bits_all_high · 2``. ``r_min = 0`` demotes nothing and
``r_min = 1`` every group (``r`` then stays just below 1: ``GP`` is high).

The group order follows the repository (size, ties by execution order); the stopping rule
uses ``r`` itself, so the assignment always satisfies ``r >= r_min`` (the repository stops on
the demoted groups' share with ``GP`` included, a difference of the parameter-gradient size).

The emulation (:attr:`Assignment.config`) is a :class:`lowbit.nn.QuantConfig` whose layers are
the GEMMs (Conv/Linear): per layer ``weight`` = its ``P``, ``act`` = the ``Y`` of the operation
that produced its input (``X`` inherits it, as in the repository), ``output`` = its ``Y``,
``grad_act`` = its ``GY``, ``grad_weight`` = high. What it leaves out: the tensors of non-GEMM
operations (BatchNorm, ReLU, add, pooling) are counted in ``r`` but kept in fp32 between the
GEMMs (ReLU and pooling commute with rounding, so only BatchNorm's output and the identity
shortcut differ), and a layer's input gradient ``dL/dx`` takes its own ``grad_act`` format
rather than its producer's ``GY`` format (``QuantLayer`` has one gradient format).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lowbit.formats import get_format
from lowbit.methods.assign.formats import HIGH, LOW, LOW_GRAD, format_label
from lowbit.methods.assign.groups import TensorGraph, tensor_groups
from lowbit.nn import QuantConfig

SCHEMES = ("ours", "smallest_first", "random", "pi_op")
_SCHEME_ALIASES = {
    "topr_dec": "ours",
    "topr_inc": "smallest_first",
    "rand": "random",
    "std": "pi_op",
    "hfp8": "pi_op",
}
#: format of each tensor kind when its group is demoted
DEMOTED = {"Y": LOW.name, "GY": LOW_GRAD.name, "P": LOW.name, "GP": HIGH.name}
ROLES = ("weight", "act", "output", "grad_act", "grad_weight")


def scheme_name(scheme: Any) -> str:
    """The canonical scheme name (repository names accepted); ValueError if unknown."""
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a str, got {type(scheme).__name__}")
    s = _SCHEME_ALIASES.get(scheme, scheme)
    if s not in SCHEMES:
        raise ValueError(
            f"scheme={scheme!r}; accepted: {', '.join(SCHEMES)} (or the "
            f"repository's names {', '.join(_SCHEME_ALIASES)})"
        )
    return s


def _fnmatch_literal(name: str) -> str:
    """An fnmatch pattern that matches exactly ``name``."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


@dataclass(frozen=True)
class Promotion:
    """One tensor moved to high precision by the overflow rule."""

    step: int
    tensor: str
    fraction: float


class Assignment:
    """A precision for every tensor of a training step, and the QuantConfig emulating it.

    Attributes:
        graph: the traced tensors and groups.
        formats: tensor name -> format name (every tensor of ``graph``).
        scheme: the scheme that made it.
        r_min: the requested ratio (None for ``pi_op``).
        demoted: names of the demoted groups, in demotion order.
        seed: seed of the ``random`` scheme.
        promotions: tensors the overflow rule promoted since (:class:`Promotion`).

    Treat it as read-only: :meth:`promoted` returns a changed copy (the config is cached).
    """

    def __init__(
        self,
        graph: TensorGraph,
        formats: Mapping[str, str],
        *,
        scheme: str,
        r_min: float | None,
        demoted: Iterable[str] = (),
        seed: int = 0,
        promotions: Iterable[Promotion] = (),
    ) -> None:
        missing = [t.name for t in graph.tensors if t.name not in formats]
        if missing:
            raise ValueError(f"formats lacks tensors {missing[:5]}")
        self.graph = graph
        self.formats: dict[str, str] = {t.name: formats[t.name] for t in graph.tensors}
        self.scheme = scheme
        self.r_min = r_min
        self.demoted = tuple(demoted)
        self.seed = seed
        self.promotions = tuple(promotions)
        self._config: QuantConfig | None = None

    # ---- memory ----------------------------------------------------------------------------
    def is_low(self, tensor: str) -> bool:
        """Whether ``tensor`` is stored in a low-precision (8-bit) format."""
        return self.formats[tensor] != HIGH.name

    @property
    def low_size(self) -> int:
        """Elements stored in low precision."""
        return sum(t.size for t in self.graph.tensors if self.is_low(t.name))

    @property
    def ratio(self) -> float:
        """The low-precision ratio r: low-precision elements / all elements of the step."""
        total = self.graph.total_size
        return self.low_size / total if total else 0.0

    @property
    def total_bits(self) -> int:
        """Bits of every tensor of the step in its assigned format."""
        return sum(
            t.size * get_format(self.formats[t.name]).bits  # type: ignore[union-attr]
            for t in self.graph.tensors
        )

    @property
    def bits_all_high(self) -> int:
        """Bits of every tensor of the step in the high format (16 bits each)."""
        return self.graph.total_size * HIGH.bits

    @property
    def memory_bits(self) -> int:
        """Bits saved against storing every tensor in the high format."""
        return self.bits_all_high - self.total_bits

    # ---- per layer ---------------------------------------------------------------------------
    def layer_formats(self, module: str) -> dict[str, str]:
        """The format of each QuantConfig role of the GEMM module ``module``.

        Calls of one module that disagree (a module used twice) get the high format.
        """
        calls = [o for o in self.graph.calls(module) if o.gemm]
        if not calls:
            raise ValueError(
                f"{module!r} is not a Conv/Linear module of the traced model; "
                f"GEMM modules: {', '.join(self.graph.gemm_modules())}"
            )
        per_call = []
        for op in calls:
            f = self.formats
            pname = next((o.name for o in calls if f"{o.name}.P" in f), None)
            roles = {
                "weight": f.get(f"{pname}.P", HIGH.name) if pname else HIGH.name,
                "act": (
                    f.get(f"{self.graph.ops[op.preds[0]].name}.Y", HIGH.name)
                    if op.preds
                    else HIGH.name
                ),
                "output": f.get(f"{op.name}.Y", HIGH.name),
                "grad_act": f.get(f"{op.name}.GY", HIGH.name),
                "grad_weight": HIGH.name,
            }
            per_call.append(roles)
        return {
            r: (per_call[0][r] if all(c[r] == per_call[0][r] for c in per_call) else HIGH.name)
            for r in ROLES
        }

    @property
    def config(self) -> QuantConfig:
        """The QuantConfig: every role high, with one override per GEMM layer that differs."""
        if self._config is None:
            base = {r: HIGH.name for r in ROLES}
            overrides = []
            for module in self.graph.gemm_modules():
                roles = self.layer_formats(module)
                diff = {r: v for r, v in roles.items() if v != base[r]}
                if diff:
                    overrides.append((_fnmatch_literal(module), diff))
            self._config = QuantConfig(**base, overrides=tuple(overrides))
        return self._config

    def apply(self, model: nn.Module) -> nn.Module:
        """``lowbit.nn.quantize_(model, self.config)``: quantize ``model`` in place."""
        from lowbit.nn import quantize_

        return quantize_(model, self.config)

    # ---- reports -----------------------------------------------------------------------------
    def group_name(self, index: int | None) -> str:
        return "-" if index is None else self.graph.groups[index].name

    def table(self) -> list[dict[str, Any]]:
        """One row per tensor: ``tensor``, ``group``, ``size``, ``format``."""
        return [
            {
                "tensor": t.name,
                "group": self.group_name(t.group),
                "size": t.size,
                "format": self.formats[t.name],
            }
            for t in self.graph.tensors
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: scheme, r_min, r, demoted groups, bits."""
        return {
            "scheme": self.scheme,
            "r_min": self.r_min,
            "r": self.ratio,
            "demoted": list(self.demoted),
            "low_elements": self.low_size,
            "elements": self.graph.total_size,
            "bits": self.total_bits,
            "bits_all_high": self.bits_all_high,
            "memory_bits_saved": self.memory_bits,
            "promoted": [p.tensor for p in self.promotions],
        }

    def promoted(
        self, tensors: Iterable[str], *, step: int = 0, fractions: Mapping[str, float] | None = None
    ) -> Assignment:
        """A copy with ``tensors`` in the high format (the overflow rule's promotion)."""
        names = list(tensors)
        for n in names:
            if n not in self.formats:
                raise KeyError(f"no tensor {n!r} in the assignment")
        formats = dict(self.formats)
        new = []
        for n in names:
            if formats[n] != HIGH.name:
                formats[n] = HIGH.name
                new.append(Promotion(step, n, float((fractions or {}).get(n, float("nan")))))
        return Assignment(
            self.graph,
            formats,
            scheme=self.scheme,
            r_min=self.r_min,
            demoted=self.demoted,
            seed=self.seed,
            promotions=(*self.promotions, *new),
        )

    def __repr__(self) -> str:
        return (
            f"Assignment(scheme={self.scheme!r}, r_min={self.r_min}, r={self.ratio:.4f}, "
            f"demoted={len(self.demoted)}/{len(self.graph.groups)} groups, "
            f"promoted={len(self.promotions)})"
        )

    def describe(self, tensor: str) -> str:
        """``"1-4-3 b4"``-style label of a tensor's format."""
        return format_label(self.formats[tensor])


# ---- schemes ---------------------------------------------------------------------------------
def _formats_for(graph: TensorGraph, demoted: set[int]) -> dict[str, str]:
    out = {}
    for t in graph.tensors:
        low = bool(t.requires) and t.requires <= demoted
        out[t.name] = DEMOTED[t.kind] if low else HIGH.name
    return out


def group_order(graph: TensorGraph, scheme: str = "ours", seed: int = 0) -> list[int]:
    """Group indices in the order a scheme demotes them.

    ``ours``: size decreasing, ties by execution order; ``smallest_first``: size increasing,
    ties by execution order; ``random``: ``random.Random(seed).shuffle`` of execution order.
    """
    s = scheme_name(scheme)
    idx = [g.index for g in graph.groups]
    if s == "ours":
        return sorted(idx, key=lambda i: (-graph.groups[i].size, i))
    if s == "smallest_first":
        return sorted(idx, key=lambda i: (graph.groups[i].size, i))
    if s == "random":
        random.Random(seed).shuffle(idx)
        return idx
    raise ValueError("pi_op demotes tensors by layer kind, not groups in an order")


def _ratio(graph: TensorGraph, formats: Mapping[str, str]) -> float:
    total = graph.total_size
    return sum(t.size for t in graph.tensors if formats[t.name] != HIGH.name) / total


def _pi_op(graph: TensorGraph) -> dict[str, str]:
    formats = {t.name: HIGH.name for t in graph.tensors}
    gemms = [o for o in graph.ops if o.gemm]
    first, last = gemms[0], gemms[-1]

    def setf(name: str, fmt: str) -> None:
        if graph.has_tensor(name):
            formats[name] = fmt

    for op in gemms:  # HFP8: GEMM inputs, weights and output gradients in 8 bits
        setf(f"{op.name}.P", LOW.name)
        setf(f"{op.name}.GY", LOW_GRAD.name)
        if op.preds:
            setf(f"{graph.ops[op.preds[0]].name}.Y", LOW.name)
    for op in (first, last):  # ... except the first and the last layer
        for kind in ("P", "Y", "GY"):
            setf(f"{op.name}.{kind}", HIGH.name)
        for p in op.preds:
            setf(f"{graph.ops[p].name}.Y", HIGH.name)
            setf(f"{graph.ops[p].name}.GY", HIGH.name)
    return formats


def assign(
    graph: TensorGraph, r: float | None = None, scheme: str = "ours", seed: int = 0
) -> Assignment:
    """Assign precisions to the tensors of ``graph`` (see the module docstring).

    Args:
        graph: from :func:`~.groups.tensor_groups`.
        r: the minimum low-precision ratio ``r_min`` in [0, 1] (required, except for
            ``pi_op``, whose assignment is fixed: pass None).
        scheme: ``"ours"``, ``"smallest_first"``, ``"random"`` or ``"pi_op"``.
        seed: seed of the ``random`` order.

    Raises:
        ValueError: unknown scheme, ``r`` outside [0, 1], missing, or given for ``pi_op``.
    """
    s = scheme_name(scheme)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if s == "pi_op":
        if r is not None:
            raise ValueError(f"scheme='pi_op' has a fixed assignment; pass r=None (got r={r!r})")
        return Assignment(graph, _pi_op(graph), scheme=s, r_min=None, seed=seed)
    if r is None:
        raise ValueError(f"scheme={s!r} needs r (the minimum low-precision ratio in [0, 1])")
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
        raise ValueError(f"r={r!r} must be a number in [0, 1]")
    r = float(r)
    order = group_order(graph, s, seed)
    chosen: list[int] = []
    if r >= 1.0:
        chosen = list(order)
    elif r > 0.0:
        for gi in order:
            if _ratio(graph, _formats_for(graph, set(chosen))) >= r:
                break
            chosen.append(gi)
    formats = _formats_for(graph, set(chosen))
    return Assignment(
        graph, formats, scheme=s, r_min=r, demoted=[graph.groups[i].name for i in chosen], seed=seed
    )


def lee_assignment(
    model: nn.Module,
    example_input: torch.Tensor,
    r: float | None = None,
    scheme: str = "ours",
    seed: int = 0,
    *,
    batch_size: int | None = None,
) -> Assignment:
    """Lee, Sharma & Aiken's precision assignment of ``model``'s training tensors.

    Traces ``model`` on ``example_input`` (:func:`~.groups.tensor_groups`), then demotes
    tensor groups by ``scheme`` until the low-precision ratio reaches ``r``.

    Args:
        model: float or quantized model (not changed; quantize it with ``.apply(model)``).
        example_input: one batch; sizes are scaled to ``batch_size``.
        r: minimum low-precision ratio in [0, 1] (None for ``pi_op``).
        scheme: ``"ours"`` (largest groups first), ``"smallest_first"``, ``"random"``,
            ``"pi_op"`` (HFP8 standard).
        seed: seed of ``random``.
        batch_size: training batch size (default: the example's).

    Returns:
        The :class:`Assignment` (``.config``, ``.table()``, ``.ratio``, ``.memory_bits``).

    Example::

        a = lee_assignment(model, x[:8], r=0.5, batch_size=128)
        a.apply(model)
        promoter = OverflowPromoter(model, a)
        fit(model, ..., scaler=LeeLossScaler(len(train_loader), model=model,
                                             promoter=promoter))
    """
    graph = tensor_groups(model, example_input, batch_size=batch_size)
    return assign(graph, r, scheme, seed)


__all__ = [
    "DEMOTED",
    "SCHEMES",
    "Assignment",
    "Promotion",
    "assign",
    "group_order",
    "lee_assignment",
    "scheme_name",
]
