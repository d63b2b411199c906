"""Value kernels and autograd functions of lowbit.nn against lb.round / lb.quantize_int / LSQ.

Every forward value is compared bit for bit with the library's reference rounding; gradients
with hand computations (exact dyadic data) and torch.autograd.gradcheck in float64.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.nn import QuantConfig
from lowbit.nn.functional import (
    fake_quantize,
    int_fake_quant,
    lsq_quantize,
    pow2_scale,
    round_grad,
    stream_offset,
)
from lowbit.nn.quantizers import (
    FloatQuantizer,
    IntQuantizer,
    LSQQuantizer,
    MXQuantizer,
    make_quantizer,
)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN payloads and signed zeros included)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    it = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    return torch.equal(a.contiguous().view(it), b.contiguous().view(it))


def spec(role: str = "weight", **kw):
    return QuantConfig(**kw).cast_spec(role)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ---- int fake quantization ---------------------------------------------------------------------
def test_int_fake_quant_equals_quantize_int_on_false_ties():
    """x = fl32((k + 1/2)·s): the float32 quotient x/s is often exactly k + 1/2 while the real
    quotient is not; the result must still be quantize_int's (float64, exact rounding)."""
    rng = np.random.default_rng(0)
    s = np.float32(rng.uniform(0.01, 3.0, 4000)).astype(np.float32)
    k = rng.integers(-128, 127, 4000)
    x = ((k + 0.5) * s.astype(np.float64)).astype(np.float32)
    xt, st = torch.from_numpy(x), torch.from_numpy(s)
    t32 = xt / st
    false_ties = ((t32 - torch.round(t32)).abs() == 0.5) & (
        torch.from_numpy(x.astype(np.float64) / s.astype(np.float64) - k) != 0.5
    )
    assert int(false_ties.sum()) > 100  # the case this test is about does occur
    got = int_fake_quant(xt, st, -128, 127)
    # quantize_int with a per-element scale: one "channel" per element
    want = lb.quantize_int(
        x.reshape(-1, 1), 8, granularity="channel", axis=0, scale=s.astype(np.float64)
    ).reshape(-1)
    assert bits_equal(got, torch.from_numpy(want))
    naive = torch.clamp(torch.round(t32), -128, 127) * st
    assert not torch.equal(naive, got)  # the plain float32 formula gets some of them wrong


@pytest.mark.parametrize(
    "granularity, axis, group",
    [
        ("per_tensor", 0, None),
        ("per_channel", 0, None),
        ("per_channel", 1, None),
        ("per_group", 1, 8),
        ("per_group", 0, 4),
    ],
)
@pytest.mark.parametrize("bits", [8, 4])
def test_int_quantizer_matches_quantize_int(gen, granularity, axis, group, bits):
    w = torch.randn(12, 32, generator=gen) * torch.linspace(0.1, 3, 32)
    w[3] = 0.0  # an all-zero channel/group gets scale 1
    q = IntQuantizer(
        spec(
            weight=f"int{bits}",
            granularity=granularity,
            group_size=group,
            axis=axis if granularity != "per_tensor" else None,
        )
    )
    got = q.round_value(w)
    s = q.scale_of(w)
    assert s.dtype == torch.float32
    qmax = 2 ** (bits - 1) - 1
    lbg = granularity.removeprefix("per_")
    amax, _ = lb.blocks.intquant.int_params(
        w.numpy(), bits, granularity=lbg, axis=axis, group_size=group or 1
    )
    amax = amax * qmax  # int_params reports amax / qmax
    want_s = np.where(amax > 0, np.float32(amax) / np.float32(qmax), np.float32(1))
    if granularity == "per_group":
        sel = [slice(None)] * 2
        sel[axis] = slice(None, None, group)
        s_p = s.expand_as(w)[tuple(sel)]
    elif granularity == "per_channel":
        s_p = s.reshape(-1)
    else:
        s_p = s
    assert bits_equal(s_p, torch.from_numpy(np.asarray(want_s, dtype=np.float32)))
    want = lb.quantize_int(
        w.numpy(),
        bits,
        granularity=lbg,
        axis=axis,
        group_size=group or 1,
        scale=s_p.double().numpy(),
    )
    assert bits_equal(got, torch.from_numpy(want))


def test_int_fake_quant_stochastic_matches_quantize_int(gen):
    x = torch.randn(5, 40, generator=gen)
    s = torch.tensor(0.037, dtype=torch.float32)
    for mode in ("sr", "rtz", "rna"):
        got = int_fake_quant(x, s, -8, 7, mode, seed=11)
        want = lb.quantize_int(x.numpy(), 4, scale=float(s), mode=mode, seed=11)
        assert bits_equal(got, torch.from_numpy(want)), mode
    a = int_fake_quant(x, s, -8, 7, "sr", seed=11, offset=stream_offset(1))
    assert not torch.equal(a, int_fake_quant(x, s, -8, 7, "sr", seed=11))


def test_int_fake_quant_float64_and_nan(gen):
    x = torch.randn(64, generator=gen, dtype=torch.float64)
    x[5] = float("nan")
    got = int_fake_quant(x, torch.tensor(0.01, dtype=torch.float64), -128, 127)
    want = lb.quantize_int(x.numpy(), 8, scale=0.01)
    assert bits_equal(got, torch.from_numpy(want))


# ---- float formats -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt, mode",
    [
        ("e4m3", "rne"),
        ("e5m2", "rne"),
        ("bf16", "rne"),
        ("e5m2", "sr"),
        ("fp16", "rtz"),
        ("q3.12", "rne"),
        ("e3m2", "rna"),
    ],
)
def test_float_quantizer_equals_lb_round(gen, fmt, mode):
    x = torch.randn(7, 33, generator=gen) * 300
    q = FloatQuantizer(spec(weight=fmt, weight_mode=mode), seed=5)
    s = q.spec
    for step, stream in ((0, 0), (3, 1)):
        got = q.round_value(x, step=step, stream=stream)
        off = stream_offset(step, stream) if mode == "sr" else 0
        want = lb.round(x.numpy(), fmt, mode, overflow=s.overflow, seed=5, offset=off)
        assert bits_equal(got, torch.from_numpy(want))
    # fp8 formats saturate by default: 300·randn overflows e4m3 (max 448) somewhere
    if fmt == "e4m3":
        assert s.overflow == "saturate" and float(got.abs().max()) == 448.0


def test_float_quantizer_non_contiguous_input(gen):
    x = torch.randn(16, 9, generator=gen).t()
    q = FloatQuantizer(spec(weight="e4m3"))
    assert bits_equal(
        q.round_value(x),
        torch.from_numpy(lb.round(x.contiguous().numpy(), "e4m3", overflow="saturate")),
    )


def _pow2_oracle(amax: float, fmax: float) -> float:
    """Smallest power of two p with amax / p <= fmax, by exact rational arithmetic."""
    if amax == 0:
        return 1.0
    r = Fraction(amax) / Fraction(fmax)
    e = math.floor(math.log2(r)) - 2
    while Fraction(2) ** e < r:
        e += 1
    return 2.0**e


def test_pow2_scale_exact_at_powers_of_two():
    amax = torch.tensor([448.0, 448.0 * 2, 449.0, 447.0, 0.0, 1e-3, 3e5])
    got = pow2_scale(amax, 448.0)
    want = torch.tensor([_pow2_oracle(float(a), 448.0) for a in amax])
    assert bits_equal(got, want)


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_float_absmax_scaling_equals_scaled_lb_round(gen, granularity):
    w = torch.randn(6, 20, generator=gen) * torch.logspace(-4, 4, 6).reshape(6, 1)
    q = FloatQuantizer(spec(weight="e4m3", granularity=granularity, scaling="absmax"))
    got = q.round_value(w)
    w64 = w.double().numpy()
    rows = [w64] if granularity == "per_tensor" else list(w64)
    outs = []
    for r in rows:
        p = _pow2_oracle(float(np.abs(r).max()), 448.0)
        outs.append(lb.round(r / p, "e4m3", overflow="saturate") * p)
    want = np.concatenate([o.reshape(-1) for o in outs]).reshape(w.shape).astype(np.float32)
    assert bits_equal(got, torch.from_numpy(want))
    assert float((got.abs().amax(1) / pow2_scale(w.abs().amax(1), 448)).max()) <= 448


def test_fixed_scale_float_and_int(gen):
    x = torch.randn(50, generator=gen)
    qf = make_quantizer(spec(act="e2m1", scale=0.25, scaling="fixed", role="act"), role="act")
    assert isinstance(qf, FloatQuantizer)
    want = (lb.round(x.double().numpy() / 0.25, "e2m1") * 0.25).astype(np.float32)
    assert bits_equal(qf.round_value(x), torch.from_numpy(want))
    qi = make_quantizer(spec(act="int4", scale=0.25, role="act"), role="act")
    assert isinstance(qi, IntQuantizer)
    assert bits_equal(
        qi.round_value(x), torch.from_numpy(lb.quantize_int(x.numpy(), 4, scale=0.25))
    )


def test_mx_quantizer_blocks_along_the_reduction_axis(gen):
    w = torch.randn(4, 64, 3, 3, generator=gen)  # conv weight: blocks along in-channels
    q = MXQuantizer(spec(weight="mxfp8_e4m3"), block_axis=1)
    got = q.round_value(w)
    want = lb.quantize_mx(w.numpy(), "mxfp8_e4m3", axis=1)
    assert bits_equal(got, torch.from_numpy(want))


# ---- autograd: fake_quantize -------------------------------------------------------------------
def test_fake_quantize_forward_rounds_backward_ste_then_rounds(gen):
    x = torch.randn(40, generator=gen, requires_grad=True)
    g = torch.randn(40, generator=gen)
    fwd = FloatQuantizer(spec(weight="e4m3")).rounder()
    bwd = FloatQuantizer(spec(weight="e5m2")).rounder()
    y = fake_quantize(x, fwd, bwd)
    assert bits_equal(
        y.detach(), torch.from_numpy(lb.round(x.detach().numpy(), "e4m3", overflow="saturate"))
    )
    y.backward(g)
    want = lb.round(g.numpy(), "e5m2", overflow="saturate")
    assert bits_equal(x.grad, torch.from_numpy(want))
    assert not torch.equal(x.grad, g)  # the gradient really is rounded, not passed through


def test_round_grad_is_identity_forward(gen):
    x = torch.randn(10, generator=gen, requires_grad=True)
    y = round_grad(x, FloatQuantizer(spec(weight="bf16")).rounder())
    assert torch.equal(y, x)
    g = torch.randn(10, generator=gen)
    y.backward(g)
    assert bits_equal(x.grad, torch.from_numpy(lb.round(g.numpy(), "bf16")))
    assert fake_quantize(x) is x


def test_gradcheck_identity_format_fp64(gen):
    q = FloatQuantizer(spec(weight="fp64"))
    x = torch.randn(6, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: fake_quantize(t * t, q.rounder(), q.rounder()).sin(), (x,)
    )


# ---- LSQ ---------------------------------------------------------------------------------------
def test_lsq_forward_equals_quantize_int(gen):
    x = torch.randn(300, generator=gen)
    s = torch.tensor(0.0371)
    got = lsq_quantize(x, s, 8, 7)
    assert bits_equal(got.detach(), torch.from_numpy(lb.quantize_int(x.numpy(), 4, scale=float(s))))


def test_lsq_gradients_by_hand():
    """Esser et al. 2020, eq. 3: dv̂/ds = -v/s + round(v/s) inside (-Q_N, Q_P), -Q_N below,
    Q_P above; dv̂/dv = 1 inside, 0 outside. 3-bit signed: Q_N = 4, Q_P = 3, s = 1/4."""
    v = [-2.0, -1.0, -0.8125, -0.3125, 0.0, 0.0625, 0.125, 0.1875, 0.375, 0.7, 0.75, 3.0]
    up = [0.5, -1.0, 2.0, 0.25, 1.0, -0.5, 1.5, 1.0, -2.0, 0.125, 1.0, 0.75]
    s = Fraction(1, 4)
    qn, qp = 4, 3
    x = torch.tensor(v, requires_grad=True)
    scale = torch.tensor(0.25, requires_grad=True)
    y = lsq_quantize(x, scale, qn, qp, grad_scale=1.0)
    y.backward(torch.tensor(up))
    ds = Fraction(0)
    dx = []
    vals = []
    for vi, gi in zip(v, up, strict=True):
        t = Fraction(vi) / s
        r = round(t)  # Python rounds halves to even, like torch.round
        if t <= -qn:
            ds += Fraction(gi) * -qn
            dx.append(0.0)
            vals.append(float(-qn * s))
        elif t >= qp:
            ds += Fraction(gi) * qp
            dx.append(0.0)
            vals.append(float(qp * s))
        else:
            ds += Fraction(gi) * (r - t)
            dx.append(gi)
            vals.append(float(r * s))
    assert y.detach().tolist() == vals
    assert x.grad.tolist() == dx
    # 0.7 is not dyadic: its quotient is the float32 one, so compare to float32 precision
    assert float(scale.grad) == pytest.approx(float(ds), rel=2**-22, abs=0)


def test_lsq_gradient_scale_default():
    x = torch.randn(4, 10, 3)
    scale = torch.tensor(0.5, requires_grad=True)
    lsq_quantize(x, scale, 128, 127).sum().backward()
    s1 = scale.grad.clone()
    scale.grad = None
    lsq_quantize(x, scale, 128, 127, grad_scale=1.0).sum().backward()
    g = 1 / math.sqrt(x.numel() * 127)
    assert float(s1) == pytest.approx(float(scale.grad) * g, rel=1e-6)


def test_lsq_quantizer_init_and_grad_scale(gen):
    w = torch.randn(5, 8, generator=gen)
    q = LSQQuantizer(
        spec(weight="int4", scaling="lsq", granularity="per_channel"), role="weight", init=w
    )
    want = 2 * w.abs().mean(1) / math.sqrt(7)
    assert torch.equal(q.scale.detach(), want)
    assert q.grad_scale(w) == 1 / math.sqrt(8 * 7)  # N = weights per scale
    a = LSQQuantizer(spec(act="uint4", scaling="lsq", role="act"), role="act")
    x = torch.rand(3, 6, 2, generator=gen)
    assert not bool(a.initialized)
    y = a(x)
    assert bool(a.initialized)
    assert float(a.scale.detach()) == float(2 * x.abs().mean() / math.sqrt(15))
    assert a.grad_scale(x) == 1 / math.sqrt(12 * 15)  # N = features per example
    assert float(y.detach().min()) >= 0  # unsigned: Q_N = 0


def test_lsq_gradcheck_in_clipped_region():
    """Where every |v/s| is beyond the clip, v̂ = ±Q·s: LSQ's scale gradient is then the true
    derivative and the input gradient is zero, so finite differences must agree."""
    x = torch.tensor([2.0, -3.0, 5.0, 1.75, -2.5], dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda xx, ss: lsq_quantize(xx, ss, 4, 3, grad_scale=1.0), (x, s)
    )
    sc = torch.tensor([0.25, 0.125], dtype=torch.float64, requires_grad=True)
    x2 = torch.tensor(
        [[2.0, -3.0, 5.0], [1.0, -0.75, 0.5]], dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(
        lambda xx, ss: lsq_quantize(xx, ss.view(2, 1), 4, 3, grad_scale=1.0), (x2, sc)
    )


def test_lsq_backward_rounds_input_gradient(gen):
    x = torch.randn(30, generator=gen, requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    bwd = FloatQuantizer(spec(weight="e5m2")).rounder()
    g = torch.randn(30, generator=gen)
    lsq_quantize(x, s, 8, 7, bwd=bwd).backward(g)
    inside = (x.detach() / 0.5 > -8) & (x.detach() / 0.5 < 7)
    want = lb.round((g * inside).numpy(), "e5m2", overflow="saturate")
    assert bits_equal(x.grad, torch.from_numpy(want))


@pytest.mark.parametrize("n", [1000, 300_000])  # serial and parallel kernel paths
def test_int_kernel_equals_torch_path_and_quantize_int(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * 3
    x[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    x[4:8] = torch.tensor([0.003, -0.003, 1e-30, -1e-30])  # codes 0: no -0 in the result
    s = torch.tensor(0.0173)
    fast = int_fake_quant(x, s, -128, 127)
    slow = int_fake_quant(x, s, -128, 127, impl="torch")
    assert bits_equal(fast, slow)
    want = lb.quantize_int(x.numpy(), 8, scale=float(s))
    assert bits_equal(fast, torch.from_numpy(want))
    assert (fast[4:8].view(torch.int32) == 0).all()
    with pytest.raises(ValueError, match="impl="):
        int_fake_quant(x, s, -128, 127, impl="numba")
