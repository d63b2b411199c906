"""HASB: Hessian-aware stochastic bit-switching.

* Sensitivity of layer ``l``: ``t_l = tr(H_l) / n_l``, the Hutchinson estimate of the trace of
  the Hessian block of its weights divided by their number. With Rademacher probes ``v``
  (independent ±1 entries), ``E[vᵀ H v] = tr(H)``; restricted to the coordinates of one layer,
  ``E[Σ_{i∈l} v_i (Hv)_i] = tr(H_l)``. ``Hv`` comes from double backprop (the gradient of
  ``gᵀv`` where ``g`` is the gradient built with ``create_graph=True``).
* After a warm-up (10 epochs in the paper), each training step of a width may be replaced by
  a mixed configuration with probability ``0.5·(e+1)/E`` at epoch ``e`` of ``E``; in it,
  layers whose ``t_l`` is above the mean draw their width with probability proportional to
  ``b`` (high widths more often), the others uniformly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowbit.methods.double_rounding.convert import dr_layers, get_bits, set_bits


def rademacher(
    n_probes: int, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``n_probes`` Rademacher vectors of length ``n`` (rows), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n_probes, n), generator=g) * 2 - 1).to(dtype)


def all_sign_vectors(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """All ``2^n`` vectors of ±1 (rows): their mean of ``vᵀHv`` is exactly ``tr(H)``."""
    if not 0 < n <= 20:
        raise ValueError(f"n={n}; all sign vectors are enumerated only for 1..20 entries")
    codes = torch.arange(1 << n).unsqueeze(1)
    bits = (codes >> torch.arange(n)) & 1
    return (bits * 2 - 1).to(dtype)


def hutchinson_samples(
    loss: Tensor,
    groups: Mapping[str, Sequence[Tensor]],
    *,
    n_probes: int = 8,
    seed: int = 0,
    probes: Tensor | None = None,
    chunk: int = 8,
) -> dict[str, Tensor]:
    """Per-probe samples ``Σ_{i∈group} v_i (Hv)_i`` of the Hessian of ``loss``.

    Args:
        loss: a scalar computed from the parameters with autograd recording.
        groups: parameter tensors by group name (a layer's weight, or several tensors).
        n_probes: number of Rademacher probes (ignored when ``probes`` is given).
        seed: seed of the probes.
        probes: explicit probes, shape ``(P, n)`` over the concatenation of every group's
            flattened tensors in the given order.
        chunk: probes per batched Hessian-vector product (memory grows with it).

    Returns:
        ``{group: tensor of P samples}``; their mean estimates the trace of the group's block.
    """
    names = list(groups)
    params = [p for n in names for p in groups[n]]
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    if probes is None:
        if n_probes < 1:
            raise ValueError(f"n_probes={n_probes}; accepted: >= 1")
        probes = rademacher(n_probes, total, seed=seed, dtype=params[0].dtype)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r}; accepted: an int >= 1")
    if probes.dim() != 2 or probes.shape[1] != total:
        raise ValueError(f"probes must have shape (P, {total}), got {tuple(probes.shape)}")
    grads = torch.autograd.grad(loss, params, create_graph=True)
    out = {n: torch.empty(probes.shape[0], dtype=torch.float64) for n in names}
    owner = [n for n in names for _ in groups[n]]
    for start in range(0, probes.shape[0], chunk):
        block = probes[start : start + chunk]
        vs = [
            t.reshape(-1, *p.shape).to(p.dtype)
            for t, p in zip(block.split(sizes, dim=1), params, strict=True)
        ]
        # Hv for a chunk of probes at once (vmap over the backward graph)
        hv = torch.autograd.grad(
            grads,
            params,
            grad_outputs=vs,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
        acc = {n: torch.zeros(block.shape[0], dtype=torch.float64) for n in names}
        for n, v, h in zip(owner, vs, hv, strict=True):
            if h is not None:
                acc[n] += (v * h).reshape(block.shape[0], -1).sum(1).double()
        for n in names:
            out[n][start : start + block.shape[0]] = acc[n]
    return out


def hutchinson_trace(
    loss: Tensor,
    groups: Mapping[str, Sequence[Tensor]],
    *,
    n_probes: int = 8,
    seed: int = 0,
    probes: Tensor | None = None,
    chunk: int = 8,
) -> dict[str, float]:
    """Hutchinson estimate of the trace of each group's Hessian block (mean of the samples)."""
    samples = hutchinson_samples(
        loss, groups, n_probes=n_probes, seed=seed, probes=probes, chunk=chunk
    )
    return {n: float(s.mean()) for n, s in samples.items()}


def layer_traces(
    model: nn.Module,
    loader: Iterable,
    *,
    bits: int | None = None,
    n_batches: int = 2,
    n_probes: int = 8,
    seed: int = 0,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> dict[str, float]:
    """HASB sensitivity ``t_l = tr(H_l) / n_l`` of every switchable layer's weight.

    Computed in eval mode (running BatchNorm statistics; nothing is updated) at width
    ``bits`` (default: the highest width), averaged over ``n_batches`` batches of ``loader``.
    The model's widths and train/eval mode are restored afterwards.
    """
    layers = dr_layers(model)
    if not layers:
        raise ValueError("model has no switchable layer; convert it first")
    saved_bits, was_training = get_bits(model), model.training
    device = next(model.parameters()).device
    set_bits(model, max(next(iter(layers.values())).widths) if bits is None else bits)
    model.eval()
    sums = dict.fromkeys(layers, 0.0)
    seen = 0
    try:
        for i, (x, y) in enumerate(loader):
            if i >= n_batches:
                break
            loss = loss_fn(model(x.to(device)), y.to(device))
            est = hutchinson_trace(
                loss, {n: [m.weight] for n, m in layers.items()}, n_probes=n_probes, seed=seed + i
            )
            for n in layers:
                sums[n] += est[n]
            seen += 1
    finally:
        set_bits(model, saved_bits)
        model.train(was_training)
    if seen == 0:
        raise ValueError("loader gave no batch")
    return {n: sums[n] / seen / layers[n].weight.numel() for n in layers}


@dataclass
class HASBSchedule:
    """When and how HASB replaces a uniform-width step by a mixed configuration.

    Args:
        traces: ``t_l`` by layer name (from :func:`layer_traces`).
        bits: the widths.
        epochs: total epochs ``E``.
        warmup: epochs of plain multi-precision training before any switching.
        seed: seed of the random draws.
    """

    traces: dict[str, float]
    bits: tuple[int, ...]
    epochs: int
    warmup: int = 10
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.warmup:
            raise ValueError(
                f"epochs={self.epochs}, warmup={self.warmup}; accepted: epochs >= 1, warmup >= 0"
            )
        self.rng = np.random.default_rng(self.seed)

    @property
    def sensitive(self) -> tuple[str, ...]:
        """Layers whose ``t_l`` is above the mean of all layers."""
        mean = sum(self.traces.values()) / len(self.traces)
        return tuple(n for n, t in self.traces.items() if t > mean)

    def switch_probability(self, epoch: int) -> float:
        """``0.5·(e+1)/E`` after the warm-up, 0 during it (``e`` counts from 0)."""
        if epoch < self.warmup:
            return 0.0
        return min(1.0, 0.5 * (epoch + 1) / self.epochs)

    def width_probabilities(self, layer: str) -> dict[int, float]:
        """``P(b)``: proportional to ``b`` for a sensitive layer, uniform otherwise."""
        if layer in self.sensitive:
            total = sum(self.bits)
            return {b: b / total for b in self.bits}
        return {b: 1 / len(self.bits) for b in self.bits}

    def sample_config(self) -> dict[str, int]:
        """One mixed configuration ``{layer: width}``."""
        sens = set(self.sensitive)
        widths = np.array(self.bits)
        p_sens = widths / widths.sum()
        return {
            n: int(self.rng.choice(widths, p=p_sens if n in sens else None)) for n in self.traces
        }

    def step_bits(self, epoch: int, bits: int) -> int | dict[str, int]:
        """The configuration of one step planned at width ``bits``: ``bits`` itself, or with
        the switch probability a sampled mixed configuration."""
        p = self.switch_probability(epoch)
        if p > 0 and self.rng.random() < p:
            return self.sample_config()
        return bits


def expected_trace_std(hessian: Tensor) -> float:
    """Standard deviation of one Rademacher sample ``vᵀHv`` of a symmetric ``H``:
    ``sqrt(2·Σ_{i≠j} H_ij²)`` (used by the tests to size tolerances)."""
    off = hessian - torch.diag(torch.diagonal(hessian))
    return math.sqrt(2.0 * float((off**2).sum()))
