"""``QuantConfig.attention_mult``: the multiplier of ``lowbit.nn.MatMul`` layers only.

Float formats: operands rounded (RNE) to the format, exact products, float32 accumulation —
checked against float64 products of ``lb.round``-ed operands on data whose float32 sums are
exact (asserted). ``"lmulN"``: against direct ``lowbit.arith.approx.lmul_matmul`` calls and
the paper's ``lmul(1, 1) = 1 + 2**-l(m)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit as lb
from lowbit.nn import MatMul, QuantConfig, QuantLinear, QuantMatMul, dequantize_, quantize_


def r(x, fmt) -> np.ndarray:
    return lb.round(np.asarray(x, dtype=np.float64), fmt, "rne", overflow="saturate")


def exact_fp32_sums(terms: np.ndarray) -> bool:
    """Every partial sum of ``terms`` is exact in float32: multiples of 2**q, |sum| < 2**(q+24)."""
    t = [abs(float(v)) for v in np.asarray(terms).reshape(-1) if v != 0]
    if not t:
        return True

    def lsb_exp(v: float) -> int:
        m, e = math.frexp(v)
        mi = int(m * 2.0**53)
        return e - 53 + (mi & -mi).bit_length() - 1

    return math.fsum(t) < 2.0 ** (min(lsb_exp(v) for v in t) + 24)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(3)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "bf16"])
def test_float_attention_mult_rounds_operands_exact_products_fp32_sums(gen, fmt):
    mm = QuantMatMul(config=QuantConfig(attention_mult=fmt))
    a = (torch.randn(2, 3, 4, generator=gen) * 2).requires_grad_(True)
    b = (torch.randn(2, 4, 5, generator=gen) * 2).requires_grad_(True)
    y = mm(a, b)
    ar, br = r(a.detach(), fmt), r(b.detach(), fmt)
    terms = ar[..., :, :, None] * br[..., None, :, :]  # exact float64 products (i, m, k, n)
    assert all(
        exact_fp32_sums(terms[i, m, :, n]) for i in range(2) for m in range(3) for n in range(5)
    )
    assert torch.equal(y.detach(), torch.from_numpy((ar @ br).astype(np.float32)))
    # the products really are of the rounded operands
    assert not torch.equal(y.detach(), a.detach() @ b.detach())
    g = torch.randint(-8, 9, (2, 3, 5), generator=gen).float() / 4
    y.backward(g)
    gn = g.numpy().astype(np.float64)
    assert torch.equal(a.grad, torch.from_numpy((gn @ br.transpose(0, 2, 1)).astype(np.float32)))
    assert torch.equal(b.grad, torch.from_numpy((ar.transpose(0, 2, 1) @ gn).astype(np.float32)))


def test_fp8_attention_mult_saturates():
    mm = QuantMatMul(config=QuantConfig(attention_mult="e5m2"))
    y = mm(torch.tensor([[1e6, -1e6]]), torch.tensor([[1.0], [0.5]]))
    assert float(y) == lb.get_format("e5m2").max * 0.5


def test_act_roles_apply_before_the_multiplier(gen):
    mm = QuantMatMul(config=QuantConfig(act="e4m3", attention_mult="bf16"))
    a, b = torch.randn(3, 4, generator=gen) * 3, torch.randn(4, 2, generator=gen) * 3
    want = r(r(a, "e4m3"), "bf16") @ r(r(b, "e4m3"), "bf16")
    assert torch.equal(mm(a, b), torch.from_numpy(want.astype(np.float32)))


def test_lmul_attention_mult_equals_direct_lmul_matmul(gen):
    from lowbit.arith.approx import lmul_matmul

    mm = QuantMatMul(config=QuantConfig(attention_mult="lmul3"))
    # the paper: lmul(1, 1) = 1 + 2**-l(3) = 1.125, summed 4 times in fp32
    assert float(mm(torch.ones(1, 4), torch.ones(4, 1))) == 4 * (1 + 2.0**-3)
    a = torch.randn(2, 3, 6, generator=gen).requires_grad_(True)
    b = torch.randn(6, 4, generator=gen).requires_grad_(True)
    y = mm(a, b)
    a2 = a.detach().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True)
    want = lmul_matmul(a2, b2, man_bits=3)
    assert torch.equal(y, want)
    assert not torch.equal(y, a.detach() @ b.detach())
    g = torch.randn(2, 3, 4, generator=gen)
    y.backward(g)
    want.backward(g)
    assert torch.equal(a.grad, a2.grad) and torch.equal(b.grad, b2.grad)


def test_linear_layers_ignore_attention_mult_and_mult_replaces_gemm(gen):
    model = nn.Sequential(nn.Linear(4, 4), MatMul())
    cfg = QuantConfig(attention_mult="e4m3", gemm="fp16-acc")
    x = torch.randn(3, 4, generator=gen) * 3
    want_lin = lb.matmul(x, model[0].weight.detach().T, preset="fp16-acc") + model[0].bias
    q = quantize_(model, cfg)
    assert q[1].lowbit_gemm is None and q[0].lowbit_gemm is not None
    assert torch.equal(q[0](x), want_lin.detach())
    a, b = torch.randn(2, 5, generator=gen), torch.randn(5, 3, generator=gen)
    assert torch.equal(
        q[1](a, b), torch.from_numpy((r(a, "e4m3") @ r(b, "e4m3")).astype(np.float32))
    )
    # attention_mult alone: a Linear computes exactly the float layer
    lin = QuantLinear(4, 2, config=QuantConfig(attention_mult="e4m3"))
    assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))
    back = dequantize_(q)
    assert type(back[1]) is MatMul and not hasattr(back[1], "mult_quant")
