"""``QuantConfig.gemm``: Linear/Conv/MatMul layers whose matmuls run in ``lowbit.matmul``.

Oracles: hand-known accumulator behaviour (fp16 stops counting at 2048), direct
``lowbit.matmul`` calls on operands built independently of the layer (convolution patches
gathered by Python loops, not ``F.unfold``), and float64 torch references where the emulated
GEMM is float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit as lb
from lowbit.arith.matmul import GemmConfig
from lowbit.nn import (
    MatMul,
    QuantConfig,
    QuantConv1d,
    QuantConv2d,
    QuantEmbedding,
    QuantLinear,
    QuantMatMul,
    dequantize_,
    quantize_,
)
from lowbit.nn.functional import derive_seed

FP8 = dict(weight="e4m3", act="e4m3", grad_act="e5m2", grad_weight="e5m2")


def r(x, fmt) -> np.ndarray:
    """lb.round on a float64 numpy copy (saturating, as the layers' <= 8-bit forward casts)."""
    return lb.round(np.asarray(x, dtype=np.float64), fmt, "rne", overflow="saturate")


def rg(x, fmt) -> np.ndarray:
    """Gradient rounding (the format's own overflow default)."""
    return lb.round(np.asarray(x, dtype=np.float64), fmt, "rne")


def dyadic(gen, shape, scale=8, hi=33):
    k = torch.randint(1, hi, shape, generator=gen).double()
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return (k * sign / scale).float()


def exact_fp32_sums(terms: np.ndarray) -> bool:
    """Whether every sum of any subset of ``terms`` (float64) is exact in float32: all are
    multiples of 2**q and their absolute sum is below 2**(q + 24)."""
    t = [abs(float(v)) for v in terms.reshape(-1) if v != 0]
    if not t:
        return True

    def lsb_exp(v: float) -> int:  # v = odd integer * 2**lsb_exp
        m, e = math.frexp(v)
        mi = int(m * 2.0**53)
        return e - 53 + (mi & -mi).bit_length() - 1

    q = min(lsb_exp(v) for v in t)
    return math.fsum(t) < 2.0 ** (q + 24)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(11)


# ---- Linear ------------------------------------------------------------------------------------
def test_linear_fp16_accumulator_stops_at_2048():
    lin = QuantLinear(4096, 1, bias=False, config=QuantConfig(gemm="fp16-acc"))
    with torch.no_grad():
        lin.weight.fill_(1.0)
    x = torch.ones(1, 4096, requires_grad=True)
    y = lin(x)
    assert float(y.detach()) == 2048.0  # fp16 cannot count past 2048: 2048 + 1 rounds back
    assert float(nn.functional.linear(x, lin.weight).detach()) == 4096.0
    # weight gradient: a sum over 4096 tokens, also one fp16-accumulated reduction
    lin2 = QuantLinear(1, 1, bias=False, config=QuantConfig(gemm="fp16-acc"))
    with torch.no_grad():
        lin2.weight.fill_(1.0)
    lin2(torch.ones(4096, 1)).sum().backward()
    assert float(lin2.weight.grad) == 2048.0


def test_linear_gemm_forward_and_grads_equal_direct_lowbit_matmul(gen):
    cfg = QuantConfig(**FP8, gemm="bf16-acc")
    lin = QuantLinear(7, 5, config=cfg)
    x = (torch.randn(2, 3, 7, generator=gen) * 4).requires_grad_(True)
    y = lin(x)
    xq = r(x.detach(), "e4m3").reshape(6, 7)
    wq = r(lin.weight.detach(), "e4m3")
    y_or = lb.matmul(xq, wq.T, preset="bf16-acc").astype(np.float32) + lin.bias.detach().numpy()
    assert torch.equal(y.detach(), torch.from_numpy(y_or.reshape(2, 3, 5)))
    plain = F.linear(
        torch.from_numpy(xq.astype(np.float32)),
        torch.from_numpy(wq.astype(np.float32)),
        lin.bias.detach(),
    )
    assert not torch.equal(y.detach().reshape(6, 5), plain)  # bf16 accumulation did round
    dy = dyadic(gen, (2, 3, 5), scale=64)
    y.backward(dy)
    G = rg(dy, "e5m2").reshape(6, 5)
    dx_or = rg(lb.matmul(G, wq, preset="bf16-acc").astype(np.float32), "e5m2")
    dw_or = rg(lb.matmul(xq.T, G, preset="bf16-acc").T.astype(np.float32), "e5m2")
    db_or = rg(G.sum(0).astype(np.float32), "e5m2")
    assert torch.equal(x.grad, torch.from_numpy(dx_or.reshape(2, 3, 7).astype(np.float32)))
    assert torch.equal(lin.weight.grad, torch.from_numpy(dw_or.astype(np.float32)))
    assert torch.equal(lin.bias.grad, torch.from_numpy(db_or.astype(np.float32)))


def test_linear_gemm_fp64_matches_float64_torch_reference(gen):
    lin = QuantLinear(6, 4, config=QuantConfig(gemm="fp64")).double()
    ref = nn.Linear(6, 4).double()
    ref.load_state_dict(lin.state_dict())
    x = torch.randn(5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = lin(x), ref(x2)
    torch.testing.assert_close(y, y2, rtol=1e-14, atol=1e-14)
    g = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    y.backward(g)
    y2.backward(g)
    for a, b in (
        (x.grad, x2.grad),
        (lin.weight.grad, ref.weight.grad),
        (lin.bias.grad, ref.bias.grad),
    ):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


# ---- Conv --------------------------------------------------------------------------------------
def patches(x: np.ndarray, k: tuple[int, int], stride, dilation, padding, groups, mode):
    """(G, N·Ho·Wo, C_g·kh·kw) patches by Python loops; rows (n, ho, wo), cols (c, i, j)."""
    ph, pw = padding
    pad_mode = "constant" if mode == "zeros" else {"reflect": "reflect", "circular": "wrap"}[mode]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode=pad_mode)
    n, c, h, w = xp.shape
    kh, kw = k
    ho = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cg = c // groups
    out = np.zeros((groups, n * ho * wo, cg * kh * kw))
    for g in range(groups):
        row = 0
        for b in range(n):
            for oi in range(ho):
                for oj in range(wo):
                    col = 0
                    for ci in range(g * cg, (g + 1) * cg):
                        for i in range(kh):
                            for j in range(kw):
                                out[g, row, col] = xp[
                                    b,
                                    ci,
                                    oi * stride[0] + i * dilation[0],
                                    oj * stride[1] + j * dilation[1],
                                ]
                                col += 1
                    row += 1
    return out, (ho, wo), xp.shape


@pytest.mark.parametrize(
    "kw",
    [
        dict(stride=2, padding=1, dilation=1, groups=2, padding_mode="zeros"),
        dict(stride=1, padding=2, dilation=2, groups=1, padding_mode="reflect"),
    ],
)
def test_conv2d_gemm_equals_loop_built_patches_times_weight(gen, kw):
    preset = "fp16-acc"
    conv = QuantConv2d(4, 6, 3, bias=True, config=QuantConfig(gemm=preset), **kw)
    with torch.no_grad():
        conv.weight.copy_(dyadic(gen, conv.weight.shape, scale=16))
    x = dyadic(gen, (2, 4, 6, 5), scale=4).requires_grad_(True)
    y = conv(x)
    P, (ho, wo), _ = patches(
        x.detach().numpy().astype(np.float64),
        (3, 3),
        (kw["stride"],) * 2,
        (kw["dilation"],) * 2,
        (kw["padding"],) * 2,
        kw["groups"],
        kw["padding_mode"],
    )
    G = kw["groups"]
    W = conv.weight.detach().numpy().astype(np.float64).reshape(G, 6 // G, -1)
    y_or = np.stack([lb.matmul(P[g], W[g].T, preset=preset) for g in range(G)])  # (G, NL, Og)
    y_or = y_or.reshape(G, 2, ho, wo, 6 // G).transpose(1, 0, 4, 2, 3).reshape(2, 6, ho, wo)
    y_or = y_or.astype(np.float32) + conv.bias.detach().numpy()[None, :, None, None]
    assert torch.equal(y.detach(), torch.from_numpy(y_or))
    plain = conv._conv_forward(x.detach(), conv.weight.detach(), conv.bias.detach())
    assert not torch.equal(y.detach(), plain)  # the fp16 accumulator did round
    # weight gradient: per group, patches^T @ dL/dy, one fp16-accumulated reduction over N·L
    dy = dyadic(gen, y.shape, scale=8)
    y.backward(dy)
    Gy = dy.numpy().astype(np.float64).reshape(2, G, 6 // G, ho * wo).transpose(1, 0, 3, 2)
    Gy = Gy.reshape(G, 2 * ho * wo, 6 // G)
    dw = np.stack([lb.matmul(P[g].T, Gy[g], preset=preset).T for g in range(G)])
    assert torch.equal(
        conv.weight.grad, torch.from_numpy(dw.reshape(conv.weight.shape).astype(np.float32))
    )
    assert torch.equal(conv.bias.grad, dy.sum((0, 2, 3)))
    if kw["padding_mode"] != "zeros":
        return
    # input gradient: dcols = dL/dy @ W per group (emulated), then the overlap-add of the
    # patches back onto the padded input (exact here: the float32 sums are exact)
    dcols = np.stack([lb.matmul(Gy[g], W[g], preset=preset) for g in range(G)])
    dx = np.zeros((2, 4, 6 + 2 * kw["padding"], 5 + 2 * kw["padding"]))
    cg, s, p = 4 // G, kw["stride"], kw["padding"]
    for g in range(G):
        row = 0
        for b in range(2):
            for oi in range(ho):
                for oj in range(wo):
                    col = 0
                    for ci in range(g * cg, (g + 1) * cg):
                        for i in range(3):
                            for j in range(3):
                                dx[b, ci, oi * s + i, oj * s + j] += dcols[g, row, col]
                                col += 1
                    row += 1
    assert exact_fp32_sums(dcols.reshape(-1))
    assert torch.equal(x.grad, torch.from_numpy(dx[:, :, p:-p, p:-p].astype(np.float32)))


def test_conv1d_gemm_fp64_matches_float64_torch_reference(gen):
    kw = dict(stride=2, padding=1, dilation=2, groups=2)
    conv = QuantConv1d(4, 6, 3, config=QuantConfig(gemm="fp64"), **kw).double()
    ref = nn.Conv1d(4, 6, 3, **kw).double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(3, 4, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = conv(x), ref(x2)
    torch.testing.assert_close(y, y2, rtol=1e-14, atol=1e-14)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(g)
    y2.backward(g)
    for a, b in (
        (x.grad, x2.grad),
        (conv.weight.grad, ref.weight.grad),
        (conv.bias.grad, ref.bias.grad),
    ):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)
    # unbatched input and padding="same"
    c2 = QuantConv1d(4, 4, 3, padding="same", config=QuantConfig(gemm="fp64")).double()
    xu = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        c2(xu), F.conv1d(xu, c2.weight, c2.bias, padding="same"), rtol=1e-14, atol=1e-14
    )


# ---- MatMul ------------------------------------------------------------------------------------
def test_matmul_gemm_broadcast_forward_and_grads_equal_direct_lowbit_matmul(gen):
    preset = "bf16-acc"
    mm = QuantMatMul(config=QuantConfig(gemm=preset))
    a = (torch.randn(2, 3, 4, generator=gen) * 3).requires_grad_(True)
    b = (torch.randn(4, 5, generator=gen) * 3).requires_grad_(True)
    y = mm(a, b)
    an, bn = a.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)
    assert torch.equal(
        y.detach(), torch.from_numpy(lb.matmul(an, bn, preset=preset).astype(np.float32))
    )
    g = dyadic(gen, (2, 3, 5), scale=16)
    y.backward(g)
    ar, br, gn = r(an, "bf16"), r(bn, "bf16"), g.numpy().astype(np.float64)
    ga = lb.matmul(gn, br.T, preset=preset)
    gb = sum(lb.matmul(ar[i].T, gn[i], preset=preset) for i in range(2))  # float64 batch sum
    assert torch.equal(a.grad, torch.from_numpy(ga.astype(np.float32)))
    assert torch.equal(b.grad, torch.from_numpy(gb.astype(np.float32)))


# ---- stochastic GEMM, quantize_, Embedding -----------------------------------------------------
def test_stochastic_gemm_uses_derived_seed_per_step(gen):
    g = GemmConfig(acc="bf16", acc_mode="sr").to_dict()
    cfg = QuantConfig(gemm=g, seed=5)
    lin = QuantLinear(16, 3, bias=False, config=cfg, name="fc")
    assert lin.lowbit_gemm == GemmConfig(acc="bf16", acc_mode="sr")
    assert "lowbit_step" in lin._buffers
    x = torch.randn(4, 16, generator=gen)
    outs = [lin(x).detach() for _ in range(2)]
    for t, out in enumerate(outs):
        want = lb.matmul(
            x.numpy(),
            lin.weight.detach().numpy().T,
            preset=lin.lowbit_gemm,
            seed=derive_seed(5, "fc", "gemm", t),
        )
        assert np.array_equal(out.numpy(), want)
    assert not torch.equal(outs[0], outs[1])  # fresh random bits every training step
    lin.eval()
    assert torch.equal(lin(x), lin(x))


def test_quantize_swaps_gemm_layers_and_matches_float64_model(gen):
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
        nn.Embedding(3, 2),
    ).double()
    ref = nn.Sequential(*list(model.children())[:4])
    x = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64)
    want = ref(x)
    q = quantize_(model, QuantConfig(gemm="fp64"))
    assert q[0].lowbit_gemm == lb.GemmConfig() and q[3].lowbit_gemm == lb.GemmConfig()
    assert isinstance(q[4], QuantEmbedding) and q[4].lowbit_gemm is None  # no matmul
    torch.testing.assert_close(
        nn.Sequential(*list(q.children())[:4])(x), want, rtol=1e-14, atol=1e-14
    )
    idx = torch.tensor([2, 0])
    assert torch.equal(q[4](idx), F.embedding(idx, q[4].weight))
    back = dequantize_(q)
    assert type(back[0]) is nn.Conv2d and not hasattr(back[0], "lowbit_gemm")
    assert type(back[3]) is nn.Linear and not hasattr(back[3], "lowbit_gemm")


def test_matmul_module_float_swap_keeps_gemm_dict_config():
    cfg = QuantConfig.from_json(
        QuantConfig(gemm=GemmConfig(mult="e5m2", acc="fp32", block_k=4).to_dict()).to_json()
    )
    m = quantize_(nn.Sequential(MatMul()), cfg)
    assert m[0].lowbit_gemm == GemmConfig(mult="e5m2", acc="fp32", block_k=4)
    a, b = torch.randn(3, 8), torch.randn(8, 2)
    assert torch.equal(m[0](a, b), lb.matmul(a, b, preset=m[0].lowbit_gemm))
