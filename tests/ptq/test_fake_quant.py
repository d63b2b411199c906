"""PTQ quantizers against lowbit.quantize_int bit for bit; weight scales against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.ptq.fake_quant import (
    MSE_GRID,
    fake_quant_int,
    quantize_weight,
    weight_scales,
)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_fake_quant_int_equals_quantize_int_bitwise(dtype: torch.dtype, bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    s = float(np.float32(0.0371))
    x = (torch.randn(3000, generator=g, dtype=torch.float64) * 3).to(dtype)
    k = torch.arange(-40, 40, dtype=torch.float64)
    x[:80] = ((k + 0.5) * s).to(dtype)  # ties (as far as the dtype holds them exactly)
    x[80:84] = torch.tensor([1e30, -1e30, 0.0, -0.0], dtype=dtype)
    got = fake_quant_int(x, s, bits)
    want = lb.quantize_int(x, bits, scale=s)
    assert got.dtype == dtype
    assert torch.equal(_bits(got), _bits(want))


def test_fake_quant_int_nan_inf_and_per_channel_scale() -> None:
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.3])
    y = fake_quant_int(x, 0.01, 8)
    assert torch.isnan(y[0]) and y[1] == np.float32(127 * 0.01) and y[2] == np.float32(-128 * 0.01)
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    s = np.float32(np.random.default_rng(0).uniform(0.005, 0.03, 6))
    got = fake_quant_int(w, torch.from_numpy(s).reshape(6, 1), 8)
    want = lb.quantize_int(w, 8, granularity="channel", axis=0, scale=s.astype(np.float64))
    assert torch.equal(_bits(got), _bits(want))


def _numpy_minmax_scales(w: np.ndarray, bits: int, gran: str, gs: int) -> np.ndarray:
    w2 = np.abs(w.reshape(w.shape[0], -1).astype(np.float64))
    qmax = 2 ** (bits - 1) - 1
    if gran == "per_tensor":
        a = np.array(w2.max())
    elif gran == "per_channel":
        a = w2.max(axis=1)
    else:
        a = np.stack([w2[:, i : i + gs].max(axis=1) for i in range(0, w2.shape[1], gs)], 1)
    return np.where(a > 0, a / qmax, 1.0).astype(np.float32)


@pytest.mark.parametrize("gran", ["per_tensor", "per_channel", "per_group"])
@pytest.mark.parametrize("shape", [(8, 20), (6, 3, 3, 3)])
def test_minmax_weight_quantization_equals_quantize_int(gran: str, shape: tuple) -> None:
    g = torch.Generator().manual_seed(len(shape))
    w = torch.randn(shape, generator=g)
    w[1] = 0.0  # an all-zero channel gets scale 1
    bits, gs = (4, 8) if gran == "per_group" else (8, 0)
    scales = weight_scales(w, bits, gran, gs, "minmax")
    want_scales = _numpy_minmax_scales(w.numpy(), bits, gran, gs)
    assert scales.dtype == np.float32 and np.array_equal(scales, want_scales)
    q = quantize_weight(w, bits, gran, gs, scales)
    w2 = w.reshape(shape[0], -1)
    lbgran = {"per_tensor": "tensor", "per_channel": "channel", "per_group": "group"}[gran]
    want = lb.quantize_int(
        w2,
        bits,
        granularity=lbgran,
        axis=1 if gran == "per_group" else 0,
        group_size=max(gs, 1),
        scale=want_scales.astype(np.float64),
    )
    assert q.shape == w.shape
    assert torch.equal(_bits(q.reshape(shape[0], -1)), _bits(want))
    # the stored values are integer codes times the float32 scale, rounded once to float32
    s = torch.from_numpy(want_scales.astype(np.float64))
    if gran == "per_channel":
        s = s.reshape(-1, 1)
    elif gran == "per_group":
        s = s.repeat_interleave(gs, dim=1)[:, : w2.shape[1]]
    codes = (q.reshape(shape[0], -1).double() / s).round()
    assert torch.equal(_bits((codes * s).float()), _bits(q.reshape(shape[0], -1)))
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1


def test_per_channel_minmax_matches_default_quantize_int_codes() -> None:
    """With data-derived scales, lb.quantize_int's codes are the same integers."""
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(3))
    scales = weight_scales(w, 8, "per_channel", 0, "minmax")
    q = quantize_weight(w, 8, "per_channel", 0, scales)
    codes = (q.double() / torch.from_numpy(scales.astype(np.float64)).reshape(-1, 1)).round()
    want = lb.blocks.quantize_int_codes(w, 8, granularity="channel", axis=0)
    assert torch.equal(codes.to(torch.int64), want)


@pytest.mark.parametrize("gran", ["per_tensor", "per_channel", "per_group"])
def test_mse_weight_scales_are_brute_force_argmins(gran: str) -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.randn(5, 24, generator=g) * torch.linspace(0.5, 2, 24)
    w[:, 0] *= 8  # outliers make clipping pay off
    bits, gs = 4, 8
    got = weight_scales(w, bits, gran, gs, "mse")
    w2 = w.double().numpy()
    qmax = 2 ** (bits - 1) - 1
    ratios = np.arange(1, MSE_GRID + 1) / MSE_GRID

    def best(block: np.ndarray) -> tuple[float, float, float]:
        """(error of got's scale, min error over the grid) for one block of weights."""
        amax = np.abs(block).max()
        errs = []
        cands = (ratios * amax / qmax).astype(np.float32)
        for c in cands:
            q = lb.quantize_int(block, bits, scale=float(c))
            errs.append(float(((block - q) ** 2).sum()))
        return np.array(errs), cands

    if gran == "per_tensor":
        blocks = [(w2, got)]
    elif gran == "per_channel":
        blocks = [(w2[i], got[i]) for i in range(5)]
    else:
        blocks = [(w2[i, j * gs : (j + 1) * gs], got[i, j]) for i in range(5) for j in range(3)]
    for block, s in blocks:
        errs, cands = best(block)
        k = int(np.flatnonzero(cands == s)[0])
        assert errs[k] <= errs.min() * (1 + 1e-12)
    # clipping helped somewhere: not every scale is the min-max one
    assert not np.array_equal(got, weight_scales(w, bits, gran, gs, "minmax"))
