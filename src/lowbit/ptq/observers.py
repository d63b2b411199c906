"""Activation observers: the per-tensor scale of a symmetric integer quantizer from data.

Calibration runs in two passes over the batches. Pass 1 (:meth:`Observer.observe_range`)
finds ``amax``, the largest finite magnitude. Pass 2 (:meth:`Observer.observe`), for the
methods that need it, collects what the clipping search needs over ``[0, amax]``:

* ``minmax``: ``amax`` itself (no second pass).
* ``percentile``: a 2048-bin histogram of ``|x|`` over ``[0, amax]``; the ``p``-th
  percentile of ``|x|`` (numpy's default "linear" definition) is estimated by placing each
  bin's counts uniformly inside it, so it is within one bin width (``amax / 2048``) of the
  exact value.
* ``mse``: the exact ``sum((x - q_s(x))**2)`` for the scales ``s_k`` of the clipping ratios
  ``k / 100`` of ``amax`` (``k = 1..100``), accumulated over all batches; the smallest wins
  (the first on ties).
* ``kl``: the 2048-bin histogram and TensorRT's entropy calibration (:func:`kl_threshold`).

Scales are float32 values ``amax / qmax`` (``1`` when ``amax`` is 0); NaN and inf values
are ignored by the statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lowbit.blocks.intquant import int_range
from lowbit.ptq.fake_quant import MSE_GRID, fake_quant_int, scale_from_amax

HIST_BINS = 2048
METHODS = ("minmax", "percentile", "mse", "kl")


def _finite_abs(x: torch.Tensor) -> torch.Tensor:
    a = x.detach().abs().reshape(-1)
    if not bool(torch.isfinite(a).all()):
        a = a[torch.isfinite(a)]
    return a


class Observer:
    """Base observer: ``amax`` from pass 1; subclasses refine it in pass 2."""

    needs_second_pass = False

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.qmax = int_range(bits)[1]
        self.amax = 0.0
        self.count = 0

    def observe_range(self, x: torch.Tensor) -> None:
        """Pass 1: track the largest finite magnitude."""
        a = _finite_abs(x)
        self.count += a.numel()
        if a.numel():
            self.amax = max(self.amax, float(a.max()))

    def observe(self, x: torch.Tensor) -> None:
        """Pass 2 (only called when :attr:`needs_second_pass`)."""

    def scale(self) -> float:
        """The float32 scale of the quantizer."""
        return float(scale_from_amax(self.amax, self.bits))


class MinMaxObserver(Observer):
    """``scale = amax / qmax``."""


class _HistogramObserver(Observer):
    needs_second_pass = True

    def __init__(self, bits: int, bins: int = HIST_BINS) -> None:
        super().__init__(bits)
        self.bins = bins
        self.hist: torch.Tensor | None = None

    def observe(self, x: torch.Tensor) -> None:
        a = _finite_abs(x).to(torch.float64)
        if self.hist is None:
            self.hist = torch.zeros(self.bins, dtype=torch.int64, device=x.device)
        if self.amax == 0 or not a.numel():
            return
        # bin j holds [j * w, (j + 1) * w) with w = amax / bins; amax itself goes to the last
        idx = torch.floor(a * (self.bins / self.amax)).clamp_(0, self.bins - 1).to(torch.int64)
        self.hist += torch.bincount(idx, minlength=self.bins)

    def histogram(self) -> np.ndarray:
        """Counts per bin (int64, ``bins`` long)."""
        if self.hist is None:
            return np.zeros(self.bins, dtype=np.int64)
        return self.hist.cpu().numpy()

    @property
    def bin_width(self) -> float:
        return self.amax / self.bins


class PercentileObserver(_HistogramObserver):
    """``amax`` = the ``percentile``-th percentile of ``|x|`` (from the histogram)."""

    def __init__(self, bits: int, percentile: float = 99.99, bins: int = HIST_BINS) -> None:
        super().__init__(bits, bins)
        self.percentile = percentile

    def compute_amax(self) -> float:
        h = self.histogram()
        n = int(h.sum())
        if n == 0 or self.amax == 0:
            return self.amax
        cum = np.cumsum(h)
        width = self.bin_width

        def order_stat(k: int) -> float:
            # the k-th smallest (0-based), its bin's counts spread evenly inside the bin
            j = int(np.searchsorted(cum, k, side="right"))
            before = cum[j - 1] if j else 0
            return width * (j + (k - before + 0.5) / h[j])

        rank = self.percentile / 100 * (n - 1)
        lo = int(np.floor(rank))
        hi = min(lo + 1, n - 1)
        v = order_stat(lo) + (rank - lo) * (order_stat(hi) - order_stat(lo))
        return float(min(v, self.amax))

    def scale(self) -> float:
        return float(scale_from_amax(self.compute_amax(), self.bits))


def kl_threshold(hist: Any, levels: int) -> int:
    """TensorRT entropy calibration: the number of bins ``i`` to keep (threshold ``i * w``).

    For every ``i`` from ``levels`` to ``len(hist)``: the reference ``P`` is ``hist[:i]``
    with the counts beyond (``hist[i:]``) added to its last bin; the candidate ``Q`` merges
    ``hist[:i]`` into ``levels`` quantization levels (``i // levels`` consecutive bins each,
    the last level taking the remainder) and spreads each level's count evenly over its bins
    that are nonzero in ``hist`` (zero bins stay zero). Both are normalised and the ``i`` with
    the smallest ``KL(P || Q) = sum P log(P / Q)`` wins (the first on ties; a bin with
    ``P > 0 = Q`` makes it infinite).

    Args:
        hist: counts of ``|x|`` in equal bins starting at 0.
        levels: quantization levels of the magnitude (``qmax + 1``; 128 for int8).

    Returns:
        ``i``; ``len(hist)`` (no clipping) when the histogram has fewer than ``levels``
        bins or holds nothing.
    """
    h = np.asarray(hist, dtype=np.float64)
    nb = h.size
    if nb <= levels or h.sum() == 0:
        return nb
    tail = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])  # tail[i] = sum(h[i:])
    best_i, best_kl = nb, np.inf
    for i in range(levels, nb + 1):
        p = h[:i].copy()
        p[-1] += tail[i]
        merged = i // levels
        lvl = np.minimum(np.arange(i) // merged, levels - 1)
        nz = h[:i] > 0
        level_sum = np.bincount(lvl, weights=h[:i], minlength=levels)
        level_nz = np.bincount(lvl, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, level_sum[lvl] / np.maximum(level_nz[lvl], 1), 0.0)
        p /= p.sum()
        qs = q.sum()
        if qs == 0:
            continue
        q /= qs
        pos = p > 0
        if np.any(pos & (q == 0)):
            kl = np.inf
        else:
            kl = float(np.sum(p[pos] * np.log(p[pos] / q[pos])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


class KLObserver(_HistogramObserver):
    """``amax`` = the threshold of minimal KL divergence (:func:`kl_threshold`)."""

    def compute_amax(self) -> float:
        if self.amax == 0:
            return 0.0
        i = kl_threshold(self.histogram(), self.qmax + 1)
        return float(min(i * self.bin_width, self.amax))

    def scale(self) -> float:
        return float(scale_from_amax(self.compute_amax(), self.bits))


class MSEObserver(Observer):
    """The scale among ``k / 100`` clipping ratios that minimises the squared error."""

    needs_second_pass = True

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        self.errors: torch.Tensor | None = None

    def candidates(self) -> np.ndarray:
        """float32 candidate scales, one per clipping ratio ``k / MSE_GRID``."""
        ratios = np.arange(1, MSE_GRID + 1, dtype=np.float64) / MSE_GRID
        return scale_from_amax(ratios * self.amax, self.bits)

    def observe(self, x: torch.Tensor) -> None:
        v = x.detach().reshape(-1)
        if not bool(torch.isfinite(v).all()):
            v = v[torch.isfinite(v)]
        v = v.to(torch.float64)
        if self.errors is None:
            self.errors = torch.zeros(MSE_GRID, dtype=torch.float64, device=x.device)
        if self.amax == 0 or not v.numel():
            return
        for k, s in enumerate(self.candidates().tolist()):
            self.errors[k] += ((v - fake_quant_int(v, s, self.bits)) ** 2).sum()

    def scale(self) -> float:
        if self.amax == 0 or self.errors is None:
            return float(scale_from_amax(self.amax, self.bits))
        return float(self.candidates()[int(torch.argmin(self.errors))])


def make_observer(method: str, bits: int, *, percentile: float = 99.99) -> Observer:
    """A fresh observer for ``method`` (one of :data:`METHODS`)."""
    if method == "minmax":
        return MinMaxObserver(bits)
    if method == "percentile":
        return PercentileObserver(bits, percentile)
    if method == "mse":
        return MSEObserver(bits)
    if method == "kl":
        return KLObserver(bits)
    raise ValueError(f"method={method!r}; accepted: {', '.join(map(repr, METHODS))}")


__all__ = [
    "HIST_BINS",
    "METHODS",
    "KLObserver",
    "MSEObserver",
    "MinMaxObserver",
    "Observer",
    "PercentileObserver",
    "kl_threshold",
    "make_observer",
]
