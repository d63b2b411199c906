"""Quantized layers: forward values and backward gradients against hand computations.

The backward oracles round ``dL/dy`` themselves, do the two backward matmuls in float64 on
the rounded operands and round the results (``lb.round`` / ``lb.quantize_int``). The data are
chosen so that float32 accumulation is exact (values with few significant bits and a small
exponent spread — each test asserts that precondition), so the layer's float32 matmuls and
the float64 oracle must agree bit for bit.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import lowbit as lb
from lowbit.nn import (
    MatMul,
    QuantConfig,
    QuantConv2d,
    QuantEmbedding,
    QuantLinear,
    QuantMatMul,
    quantize_,
)
from lowbit.nn.functional import derive_seed, stream_offset

FP8 = dict(weight="e4m3", act="e4m3", grad_act="e5m2", grad_weight="e5m2")


def bits_equal(a, b) -> bool:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    it = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    return torch.equal(a.contiguous().view(it), b.contiguous().view(it))


def r(x, fmt, mode="rne", **kw) -> np.ndarray:
    """lb.round on a float64 numpy copy (the oracle's rounding)."""
    return lb.round(np.asarray(x, dtype=np.float64), fmt, mode, overflow="saturate", **kw)


def exact_in_fp32(a: np.ndarray) -> bool:
    return bool(np.array_equal(a.astype(np.float32).astype(np.float64), a))


def signed_uniform(gen, shape, lo, hi):
    mag = lo + (hi - lo) * torch.rand(shape, generator=gen)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return mag * sign


def dyadic_grad(gen, shape):
    """Upstream gradients k/32 with 1 <= |k| <= 64 (not all on the e5m2 grid)."""
    k = torch.randint(1, 65, shape, generator=gen).float()
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)
    return k * sign / 32


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(7)


# ---- Linear --------------------------------------------------------------------------------------
def test_linear_forward_equals_rounded_operands(gen):
    lin = QuantLinear(6, 5, config=QuantConfig(**FP8, output="bf16"))
    x = torch.randn(8, 6, generator=gen) * 100
    y = lin(x)
    xq = torch.from_numpy(r(x, "e4m3").astype(np.float32))
    wq = torch.from_numpy(r(lin.weight.detach(), "e4m3").astype(np.float32))
    want = torch.from_numpy(lb.round(F.linear(xq, wq, lin.bias.detach()).numpy(), "bf16"))
    assert bits_equal(y.detach(), want)


def test_linear_backward_by_hand_fp8(gen):
    lin = QuantLinear(6, 5, config=QuantConfig(**FP8))
    with torch.no_grad():
        lin.weight.copy_(signed_uniform(gen, (5, 6), 0.125, 1.0))
        lin.bias.copy_(signed_uniform(gen, (5,), 0.125, 1.0))
    x = signed_uniform(gen, (8, 6), 0.125, 2.0).requires_grad_()
    g = dyadic_grad(gen, (8, 5))
    lin(x).backward(g)

    xq, wq = r(x.detach(), "e4m3"), r(lin.weight.detach(), "e4m3")
    G = r(g, "e5m2")
    assert not np.array_equal(G, g.double().numpy())  # dL/dy really gets rounded
    dx, dw, db = G @ wq, G.T @ xq, G.sum(0)
    for a in (dx, dw, db):
        assert exact_in_fp32(a)  # precondition: float32 accumulation is exact
    assert not np.array_equal(r(dx, "e5m2"), dx)  # and the output roundings matter
    assert bits_equal(x.grad, torch.from_numpy(r(dx, "e5m2").astype(np.float32)))
    assert bits_equal(lin.weight.grad, torch.from_numpy(r(dw, "e5m2").astype(np.float32)))
    assert bits_equal(lin.bias.grad, torch.from_numpy(r(db, "e5m2").astype(np.float32)))


def _int8_scale(a: np.ndarray, axis=None) -> np.ndarray:
    amax = np.abs(a).max() if axis is None else np.abs(a).max(axis=axis)
    return np.float32(amax) / np.float32(127)


def test_linear_backward_by_hand_int8(gen):
    """int8 everywhere (weights per output channel). Data with amax = 127·2^-k make the scales
    powers of two, so the float32 matmuls of dequantized values are exact."""
    cfg = QuantConfig(
        weight="int8", act="int8", grad_act="int8", grad_weight="int8", granularity="per_channel"
    )
    lin = QuantLinear(6, 5, bias=False, config=cfg)
    w = signed_uniform(gen, (5, 6), 0.1, 1.9)
    w[:, 0] = 127 / 64  # each row's amax: scale 1/64
    x = signed_uniform(gen, (8, 6), 0.1, 3.9)
    x[0, 0] = 127 / 32
    g = signed_uniform(gen, (8, 5), 0.1, 0.9)
    g[0, 0] = -127 / 128
    with torch.no_grad():
        lin.weight.copy_(w)
    x.requires_grad_()
    lin(x).backward(g)

    def qi(a, scale, **kw):
        return lb.quantize_int(np.asarray(a, np.float64), 8, scale=np.float64(scale), **kw)

    xq = qi(x.detach().numpy(), _int8_scale(x.detach().numpy()))
    wq = qi(w.numpy(), _int8_scale(w.numpy(), 1), granularity="channel", axis=0)
    G = qi(g.numpy(), _int8_scale(g.numpy()))
    dx, dw = G @ wq, G.T @ xq
    assert exact_in_fp32(dx) and exact_in_fp32(dw)
    want_dx = qi(dx, _int8_scale(dx.astype(np.float32))).astype(np.float32)
    want_dw = qi(dw, _int8_scale(dw.astype(np.float32))).astype(np.float32)
    assert bits_equal(x.grad, torch.from_numpy(want_dx))
    assert bits_equal(lin.weight.grad, torch.from_numpy(want_dw))


def test_stochastic_backward_follows_documented_streams(gen):
    cfg = QuantConfig(**FP8, grad_mode="sr", act_mode="sr", seed=3)
    model = quantize_(nn.Sequential(OrderedDict(fc=nn.Linear(6, 5))), cfg)
    fc = model.fc
    with torch.no_grad():
        fc.weight.copy_(signed_uniform(gen, (5, 6), 0.125, 1.0))
    x0 = signed_uniform(gen, (8, 6), 0.125, 2.0)
    g = dyadic_grad(gen, (8, 5))
    grads = []
    for step in range(2):
        x = x0.clone().requires_grad_()
        fc.weight.grad = fc.bias.grad = None
        fc(x).backward(g)
        assert int(fc.lowbit_step) == step + 1

        def sr(a, role, stream, step=step):
            return r(
                a,
                "e5m2" if role.startswith("grad") else "e4m3",
                "sr",
                seed=derive_seed(3, "fc", role),
                offset=stream_offset(step, stream),
            )

        xq = sr(x0, "act", 0)
        wq = r(fc.weight.detach(), "e4m3")  # weight_mode stays rne
        G = sr(g, "grad_act", 0)
        dx, dw = G @ wq, G.T @ xq
        assert exact_in_fp32(dx) and exact_in_fp32(dw)
        assert bits_equal(x.grad, torch.from_numpy(sr(dx, "grad_act", 1).astype(np.float32)))
        assert bits_equal(
            fc.weight.grad, torch.from_numpy(sr(dw, "grad_weight", 0).astype(np.float32))
        )
        assert bits_equal(
            fc.bias.grad, torch.from_numpy(sr(G.sum(0), "grad_weight", 1).astype(np.float32))
        )
        grads.append(x.grad.clone())
    assert not torch.equal(grads[0], grads[1])  # fresh random bits every step


def test_stochastic_runs_are_reproducible_and_seeded(gen):
    x = torch.randn(16, 6, generator=gen)
    g = torch.randn(16, 5, generator=gen)

    def run(seed):
        torch.manual_seed(0)
        m = quantize_(nn.Sequential(nn.Linear(6, 5)), QuantConfig(**FP8, grad_mode="sr", seed=seed))
        out = []
        for _ in range(3):
            m.zero_grad()
            m(x).backward(g)
            out.append(m[0].weight.grad.clone())
        return out

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_eval_mode_does_not_advance_the_step():
    lin = QuantLinear(4, 3, config=QuantConfig(**FP8, grad_mode="sr"))
    lin.eval()
    x = torch.randn(2, 4)
    assert torch.equal(lin(x), lin(x)) and int(lin.lowbit_step) == 0
    lin.train()
    lin(x)
    assert int(lin.lowbit_step) == 1
    assert not hasattr(QuantLinear(4, 3, config=QuantConfig(**FP8)), "lowbit_step")


# ---- Conv2d, MatMul, Embedding ------------------------------------------------------------------
def test_conv2d_backward_by_hand_fp8(gen):
    conv = QuantConv2d(3, 4, 3, padding=1, bias=True, config=QuantConfig(**FP8))
    with torch.no_grad():
        conv.weight.copy_(signed_uniform(gen, (4, 3, 3, 3), 0.125, 1.0))
    x = signed_uniform(gen, (2, 3, 4, 4), 0.125, 2.0).requires_grad_()
    g = dyadic_grad(gen, (2, 4, 4, 4))
    y = conv(x)
    xq = torch.from_numpy(r(x.detach(), "e4m3"))
    wq = torch.from_numpy(r(conv.weight.detach(), "e4m3"))
    want_y = F.conv2d(xq.float(), wq.float(), conv.bias.detach(), padding=1)
    assert bits_equal(y.detach(), want_y)
    y.backward(g)
    G = torch.from_numpy(r(g, "e5m2"))
    dx = torch.nn.grad.conv2d_input(xq.shape, wq, G, padding=1).numpy()
    dw = torch.nn.grad.conv2d_weight(xq, wq.shape, G, padding=1).numpy()
    db = G.sum((0, 2, 3)).numpy()
    assert exact_in_fp32(dx) and exact_in_fp32(dw) and exact_in_fp32(db)
    assert bits_equal(x.grad, torch.from_numpy(r(dx, "e5m2").astype(np.float32)))
    assert bits_equal(conv.weight.grad, torch.from_numpy(r(dw, "e5m2").astype(np.float32)))
    assert bits_equal(conv.bias.grad, torch.from_numpy(r(db, "e5m2").astype(np.float32)))


def test_matmul_forward_and_backward_by_hand(gen):
    mm = QuantMatMul(config=QuantConfig(act="e4m3", grad_act="e5m2", output="bf16"))
    a = signed_uniform(gen, (2, 3, 4), 0.125, 2.0).requires_grad_()
    b = signed_uniform(gen, (2, 4, 5), 0.125, 2.0).requires_grad_()
    g = dyadic_grad(gen, (2, 3, 5))
    y = mm(a, b)
    aq, bq = r(a.detach(), "e4m3"), r(b.detach(), "e4m3")
    assert exact_in_fp32(aq @ bq)
    assert bits_equal(y.detach(), torch.from_numpy(r(aq @ bq, "bf16").astype(np.float32)))
    y.backward(g)
    G = r(g, "e5m2")
    da, db = G @ bq.transpose(0, 2, 1), aq.transpose(0, 2, 1) @ G
    assert exact_in_fp32(da) and exact_in_fp32(db)
    assert bits_equal(a.grad, torch.from_numpy(r(da, "e5m2").astype(np.float32)))
    assert bits_equal(b.grad, torch.from_numpy(r(db, "e5m2").astype(np.float32)))
    assert mm.quantizers().keys() == {"a", "b", "output", "grad_act"}


def test_embedding_forward_and_backward_by_hand(gen):
    emb = QuantEmbedding(10, 4, config=QuantConfig(**FP8))
    with torch.no_grad():
        emb.weight.copy_(signed_uniform(gen, (10, 4), 0.01, 3.0))
    idx = torch.tensor([[1, 3, 3], [9, 1, 1]])
    g = dyadic_grad(gen, (2, 3, 4))
    y = emb(idx)
    wq = r(emb.weight.detach(), "e4m3")
    assert bits_equal(y.detach(), torch.from_numpy(wq[idx.numpy()].astype(np.float32)))
    y.backward(g)
    G = r(g, "e5m2").reshape(-1, 4)
    dw = np.zeros((10, 4))
    np.add.at(dw, idx.reshape(-1).numpy(), G)
    assert bits_equal(emb.weight.grad, torch.from_numpy(r(dw, "e5m2").astype(np.float32)))


# ---- fp64 identity path: exact autograd ----------------------------------------------------------
FP64 = QuantConfig(weight="fp64", act="fp64", grad_act="fp64", grad_weight="fp64", output="fp64")


@pytest.mark.parametrize(
    "make",
    [
        lambda: QuantLinear(4, 3, config=FP64, dtype=torch.float64),
        lambda: QuantConv2d(2, 3, 3, padding=1, config=FP64, dtype=torch.float64),
    ],
)
def test_gradcheck_fp64_config(make, gen):
    layer = make()
    shape = (2, 4) if isinstance(layer, QuantLinear) else (1, 2, 4, 4)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda xx, ww, bb: functional_call(layer, {"weight": ww, "bias": bb}, (xx,)), (x, w, b)
    )


def test_gradcheck_fp64_matmul(gen):
    mm = QuantMatMul(config=FP64)
    a = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mm, (a, b))
    assert isinstance(mm, MatMul)


@pytest.mark.parametrize("output", [None, "bf16"])
def test_inplace_relu_after_a_quantized_layer(gen, output):
    """dL/dy is rounded where y is the layer output, even when ReLU(inplace) then rewrites y
    (no output format: a tensor hook; with one: the output cast's backward)."""
    cfg = QuantConfig(grad_act="e5m2", grad_weight="e5m2", output=output)
    x = torch.randint(-16, 17, (8, 6), generator=gen) / 8  # few bits: exact float32 sums
    g = dyadic_grad(gen, (8, 5))
    w = None
    grads = []
    for inplace in (True, False):
        lin = QuantLinear(6, 5, bias=False, config=cfg)
        if w is None:
            w = lin.weight.detach().clone()
        with torch.no_grad():
            lin.weight.copy_(w)
        y = nn.ReLU(inplace=inplace)(lin(x))
        y.backward(g)
        grads.append(lin.weight.grad)
    assert bits_equal(grads[0], grads[1])
    y = F.linear(x, w)
    if output is not None:
        y = torch.from_numpy(lb.round(y.numpy(), output))
    G = r(g * (y > 0), "e5m2")
    dw = G.T @ x.double().numpy()
    assert exact_in_fp32(dw)
    assert bits_equal(grads[0], torch.from_numpy(r(dw, "e5m2").astype(np.float32)))
