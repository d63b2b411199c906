"""Observers against independent computations: numpy max/percentile/histogram, brute-force
MSE with lb.quantize_int, KL by scipy.stats.entropy in a plain loop."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

import lowbit as lb
from lowbit.ptq.fake_quant import MSE_GRID
from lowbit.ptq.observers import (
    HIST_BINS,
    KLObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    kl_threshold,
    make_observer,
)


def _batches(seed: int = 0, n: int = 4, heavy: bool = True) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(2000, generator=g)
        if heavy:  # a few large outliers, as activations have
            x[:5] *= 12
        out.append(x.reshape(20, 100))
    return out


def _feed(obs, batches) -> None:
    for x in batches:
        obs.observe_range(x)
    if obs.needs_second_pass:
        for x in batches:
            obs.observe(x)


def test_minmax_scale_is_float32_amax_over_batches_ignoring_nan_inf() -> None:
    bs = _batches()
    bs[1][0, 0] = float("nan")
    bs[2][0, 1] = float("inf")
    obs = MinMaxObserver(8)
    _feed(obs, bs)
    allx = torch.cat([b.reshape(-1) for b in bs]).double().numpy()
    amax = np.nanmax(np.abs(allx[np.isfinite(allx)]))
    assert obs.amax == amax
    assert obs.scale() == float(np.float32(amax / 127))
    assert obs.count == allx.size - 2  # the NaN and the inf are not counted


def test_histogram_counts_equal_numpy_histogram() -> None:
    bs = _batches(1)
    obs = PercentileObserver(8)
    _feed(obs, bs)
    a = np.abs(torch.cat([b.reshape(-1) for b in bs]).double().numpy())
    want, _ = np.histogram(a, bins=HIST_BINS, range=(0.0, a.max()))
    assert np.array_equal(obs.histogram(), want)


@pytest.mark.parametrize("p", [50.0, 99.0, 99.9, 99.99, 100.0])
def test_percentile_within_one_bin_of_numpy(p: float) -> None:
    bs = _batches(2, heavy=False)
    obs = PercentileObserver(8, p)
    _feed(obs, bs)
    a = np.abs(torch.cat([b.reshape(-1) for b in bs]).double().numpy())
    want = np.percentile(a, p)
    width = a.max() / HIST_BINS
    assert abs(obs.compute_amax() - want) <= width
    assert obs.scale() == float(np.float32(obs.compute_amax() / 127))


def test_mse_observer_picks_a_brute_force_argmin_over_the_same_grid() -> None:
    bs = _batches(3)
    obs = MSEObserver(8)
    _feed(obs, bs)
    x = torch.cat([b.reshape(-1) for b in bs]).double().numpy()
    amax = np.abs(x).max()
    cands = (np.arange(1, MSE_GRID + 1) / MSE_GRID * amax / 127).astype(np.float32)
    errs = np.array([((x - lb.quantize_int(x, 8, scale=float(c))) ** 2).sum() for c in cands])
    k = int(np.flatnonzero(cands == np.float32(obs.scale()))[0])
    assert errs[k] <= errs.min() * (1 + 1e-12)
    # outliers: clipping below amax wins
    assert obs.scale() < float(np.float32(amax / 127))
    # the accumulated errors are the brute-force ones (summation order aside)
    assert np.allclose(obs.errors.numpy(), errs, rtol=1e-12, atol=0)


def _kl_loop(hist: np.ndarray, levels: int) -> tuple[int, np.ndarray]:
    """TensorRT's entropy calibration written out with loops and scipy.stats.entropy."""
    hist = hist.astype(np.float64)
    divs = []
    for i in range(levels, len(hist) + 1):
        p = list(hist[:i])
        p[i - 1] += hist[i:].sum()
        merged = i // levels
        q = [0.0] * i
        for lv in range(levels):
            start = lv * merged
            stop = i if lv == levels - 1 else start + merged
            chunk = hist[start:stop]
            nonzero = sum(1 for c in chunk if c > 0)
            for j in range(start, stop):
                if hist[j] > 0:
                    q[j] = chunk.sum() / nonzero
        divs.append(scipy.stats.entropy(p, q) if sum(q) > 0 else np.inf)
    divs = np.array(divs)
    return levels + int(np.argmin(divs)), divs


@pytest.mark.parametrize("nbins, levels, seed", [(256, 16, 0), (300, 8, 1), (1024, 64, 2)])
def test_kl_threshold_equals_scipy_entropy_loop(nbins: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.abs(rng.laplace(size=20000))
    a[:3] *= 6  # a long tail worth clipping
    hist, _ = np.histogram(a, bins=nbins, range=(0, a.max()))
    got = kl_threshold(hist, levels)
    want, divs = _kl_loop(hist, levels)
    assert got == want or divs[got - levels] <= divs.min() * (1 + 1e-12)
    assert got < nbins  # the tail is clipped


def test_kl_observer_threshold_is_bins_kept_times_width() -> None:
    bs = _batches(4)
    obs = KLObserver(8)
    _feed(obs, bs)
    i = kl_threshold(obs.histogram(), 128)
    assert obs.compute_amax() == min(i * obs.amax / HIST_BINS, obs.amax)
    assert obs.scale() == float(np.float32(obs.compute_amax() / 127))


def test_all_zero_input_gives_scale_one_and_unknown_method_raises() -> None:
    for m in ("minmax", "percentile", "mse", "kl"):
        obs = make_observer(m, 8)
        _feed(obs, [torch.zeros(10)])
        assert obs.scale() == 1.0
    with pytest.raises(ValueError, match=r"method='entropy'.*accepted"):
        make_observer("entropy", 8)
