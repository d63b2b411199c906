"""The float64 fake-quant operators give exactly the integer operators' codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.methods.ivit import fake, ops

F64 = torch.float64


def test_requant_f64_equals_integer_requant() -> None:
    rng = np.random.default_rng(0)
    # full int32 accumulators (the 16-bit split path) and small ones (the direct path)
    for hi in (2**31, 2**12):
        acc = rng.integers(-hi, hi, size=(64, 6), dtype=np.int64)
        for m in (
            rng.uniform(2.0**-30, 2.0**-20, size=6),
            rng.uniform(0.01, 3, size=6),
            rng.uniform(-(2.0**13), 2.0**13, size=6),
            2.0**-35,
        ):
            b, c = ops.dyadic(m)
            got = fake.requant_f64(torch.from_numpy(acc).to(F64), b, c)
            assert np.array_equal(got.numpy().astype(np.int64), ops.requant(acc, b, c))
    with pytest.raises(ValueError):
        fake.requant_f64(torch.zeros(2, dtype=F64), np.array([5]), np.array([3]))


@pytest.mark.parametrize("bits", [8, 16])
def test_shiftmax_f_equals_integer(bits: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(4, 3, 11))
    mask = np.ones((4, 1, 11), dtype=bool)
    mask[2, :, 7:] = False
    for x0 in (-1, -13, -200):
        for m in (None, mask):
            want = ops.shiftmax(x, x0, n=15, bits=bits, mask=m)
            got = fake.shiftmax_f(
                torch.from_numpy(x).to(F64),
                x0,
                15,
                bits,
                None if m is None else torch.from_numpy(m),
            )
            assert np.array_equal(got.numpy().astype(np.int64), want)


@pytest.mark.parametrize("symmetric", [False, True])
def test_shiftgelu_f_equals_integer(symmetric: bool) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, size=(6, 19))
    x[1] = -np.abs(x[1]) - 1
    for x0, n in ((-1, 23), (-7, 23), (-40, 15)):
        want = ops.shiftgelu(x, x0, n=n, bits=8, symmetric=symmetric)
        got = fake.shiftgelu_f(torch.from_numpy(x).to(F64), x0, n, 8, symmetric)
        assert np.array_equal(got.numpy().astype(np.int64), want)


@pytest.mark.parametrize("iters", [10, None])
def test_qlayernorm_forward_equals_integer(iters: int | None) -> None:
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(24)
    with torch.no_grad():
        ln.weight.uniform_(0.2, 2.0)
        ln.bias.uniform_(-1, 1)
        ln.weight[3] = 1e-3  # |β/γ| up to 1000 > √24: needs the headroom shift
        ln.bias[3] = 1.0
    q = fake.QLayerNorm(ln, iters)
    x = torch.randint(-(2**15), 2**15, (5, 24))
    s = torch.tensor(0.01, dtype=F64)
    with torch.no_grad():
        val, scale = q(x.to(F64) * s, s)
    assert q.shift > 0
    codes = torch.round(val / scale)
    want = ops.i_layernorm(x, q.bias_int, iters=iters, shift=q.shift)
    assert torch.equal(codes.long(), want)
    # the normalised value approximates the float LayerNorm
    assert torch.allclose(val.float(), ln(x.float() * 0.01), atol=0.05)


def test_straight_through_gradients_match_float_functions() -> None:
    x = torch.randn(3, 10, dtype=F64) * 2
    s = torch.tensor(float(x.abs().max()) / 127, dtype=F64)
    xq = (torch.round(x / s) * s).requires_grad_(True)
    p, _ = fake.QShiftmax(16)(xq, s)
    g = torch.randn_like(p)
    (p * g).sum().backward()
    pd = p.detach()
    assert torch.allclose(xq.grad, pd * (g - (g * pd).sum(-1, keepdim=True)))
    xq.grad = None
    y, _ = fake.QShiftGELU(8)(xq, s)
    y.sum().backward()
    sg = torch.sigmoid(1.702 * xq.detach())
    assert torch.allclose(xq.grad, sg + 1.702 * xq.detach() * sg * (1 - sg))
