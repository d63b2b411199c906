"""Low-precision optimizers: torch's formulas bit for bit, rounding placement, seeds, resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lowbit as lb
from lowbit.optim import LowPrecisionAdamW, LowPrecisionSGD
from lowbit.optim._base import stream_seed

SHAPES = [(7, 5), (3,), (2, 3, 4)]


def _params(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


def _grads(step: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=g, dtype=dtype) * 0.1 for s in SHAPES]


def _leaves(ps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.clone().requires_grad_() for p in ps]


def _set_grads(ps: list[torch.Tensor], gs: list[torch.Tensor]) -> None:
    for p, g in zip(ps, gs, strict=True):
        p.grad = g.clone()


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and bool(
            (
                a.detach().view(torch.int32 if a.dtype == torch.float32 else torch.int64)
                == b.detach().view(torch.int32 if b.dtype == torch.float32 else torch.int64)
            ).all()
        )
    )


# ---- with every format None the optimizers are torch's, bit for bit ----------------------
@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adamw_fp32_equals_torch_adamw_bitwise(wd: float, dtype: torch.dtype) -> None:
    ps = _params(dtype=dtype)
    a, b = _leaves(ps), _leaves(ps)
    oa = LowPrecisionAdamW(
        a, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd, weight_fmt=None, state_fmt=None
    )
    ob = torch.optim.AdamW(b, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd, foreach=False)
    for step in range(12):
        gs = _grads(step, dtype)
        _set_grads(a, gs)
        _set_grads(b, gs)
        oa.step()
        ob.step()
    for x, y in zip(a, b, strict=True):
        assert _bits_equal(x, y)
    for x, y in zip(a, b, strict=True):
        assert _bits_equal(oa.state[x]["exp_avg"], ob.state[y]["exp_avg"])
        assert _bits_equal(oa.state[x]["exp_avg_sq"], ob.state[y]["exp_avg_sq"])


@pytest.mark.parametrize(
    "kw",
    [
        dict(momentum=0.0),
        dict(momentum=0.9, weight_decay=0.1),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.5, dampening=0.3),
    ],
)
def test_sgd_fp32_equals_torch_sgd_bitwise(kw: dict) -> None:
    ps = _params()
    a, b = _leaves(ps), _leaves(ps)
    oa = LowPrecisionSGD(a, lr=0.05, weight_fmt=None, state_fmt=None, **kw)
    ob = torch.optim.SGD(b, lr=0.05, foreach=False, **kw)
    for step in range(8):
        gs = _grads(step)
        _set_grads(a, gs)
        _set_grads(b, gs)
        oa.step()
        ob.step()
    for x, y in zip(a, b, strict=True):
        assert _bits_equal(x, y)


def test_adamw_fp32_formula_against_float64_closed_form() -> None:
    """One step from zero moments is w(1 - lr wd) - lr g / (|g| + eps') in exact arithmetic;
    the fp32 result is within a few fp32 ulps of it (the formula, independent of torch)."""
    w0 = torch.linspace(-2, 2, 101)
    g = torch.linspace(-1, 1.3, 101)
    p = w0.clone().requires_grad_()
    opt = LowPrecisionAdamW(
        [p], lr=1e-2, weight_decay=0.1, eps=1e-8, weight_fmt=None, state_fmt=None
    )
    p.grad = g.clone()
    opt.step()
    w, gg = w0.double(), g.double()
    # m_hat = g, v_hat = g^2 after bias correction; denom = |g| + eps
    want = w * (1 - 1e-2 * 0.1) - 1e-2 * gg / (gg.abs() + 1e-8)
    ulp = torch.finfo(torch.float32).eps * want.abs().clamp_min(2.0**-20)
    assert ((p.detach().double() - want).abs() <= 4 * ulp).all()


# ---- rounding placement: a hand-written fp32 step, then lb.round, bit for bit ----------------
def _adamw_reference(w, m, v, g, t, lr, b1, b2, eps, wd):
    """torch.optim.AdamW's single-tensor step, written out with fp32 tensor ops."""
    w = w * (1 - lr * wd)
    m = torch.lerp(m, g, 1 - b1)
    v = v * b2 + (1 - b2) * (g * g)  # addcmul: one rounding of the product, one of the sum
    denom = torch.sqrt(v) / (1 - b2**t) ** 0.5 + eps
    w = w - (lr / (1 - b1**t)) * (m / denom)
    return w, m, v


@pytest.mark.parametrize("update_mode", ["rne", "sr"])
@pytest.mark.parametrize("state_mode", ["rne", "sr"])
def test_adamw_two_steps_equal_reference_then_round(update_mode: str, state_mode: str) -> None:
    seed, lr, b1, b2, eps, wd = 1234, 0.02, 0.9, 0.999, 1e-8, 0.01
    ps = _params()
    n_total = sum(p.numel() for p in ps)
    offsets = np.cumsum([0] + [p.numel() for p in ps])[:-1].tolist()
    leaves = _leaves(ps)
    opt = LowPrecisionAdamW(
        leaves,
        lr=lr,
        betas=(b1, b2),
        eps=eps,
        weight_decay=wd,
        weight_fmt="bf16",
        state_fmt="e5m2",
        update_mode=update_mode,
        state_mode=state_mode,
        seed=seed,
    )
    ws = [lb.round(p, "bf16") for p in ps]  # construction puts weights on the grid (RNE)
    for x, w in zip(leaves, ws, strict=True):
        assert torch.equal(x.detach(), w)
    ms = [torch.zeros_like(p) for p in ps]
    vs = [torch.zeros_like(p) for p in ps]
    for step in range(2):
        gs = _grads(step)
        _set_grads(leaves, gs)
        opt.step()
        for i in range(len(ps)):
            off = step * n_total + offsets[i]
            w, m, v = _adamw_reference(ws[i], ms[i], vs[i], gs[i], step + 1, lr, b1, b2, eps, wd)
            # the update rounds the fp32 weight once, with the brief's counter
            # (numel_total * step + param_offset)
            ws[i] = lb.round(w, "bf16", update_mode, seed=seed, offset=off)
            ms[i] = lb.round(m, "e5m2", state_mode, seed=stream_seed(seed, 1), offset=off)
            vs[i] = lb.round(v, "e5m2", state_mode, seed=stream_seed(seed, 2), offset=off)
            st = opt.state[leaves[i]]
            assert _bits_equal(leaves[i].detach(), ws[i])
            assert _bits_equal(st["exp_avg"], ms[i])
            assert _bits_equal(st["exp_avg_sq"], vs[i])
            assert st["step"] == step + 1


def test_sr_draws_are_fresh_each_step_and_seeded() -> None:
    """Same seed: same result; another seed or another step: different draws."""
    w0 = torch.full((4096,), 1.0)
    g = torch.full((4096,), 1.0)

    def run(seed: int, steps: int) -> torch.Tensor:
        p = w0.clone().requires_grad_()
        # each step moves the fp32 weight by 2**-9, a quarter of bf16's spacing at 1
        opt = LowPrecisionSGD([p], lr=2.0**-9, weight_fmt="bf16", update_mode="sr", seed=seed)
        out = []
        for _ in range(steps):
            p.grad = g.clone()
            before = p.detach().clone()
            opt.step()
            out.append(p.detach() != before)
        return torch.stack(out)

    a, b, c = run(7, 2), run(7, 2), run(8, 2)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], c[0])
    # the draws of step 1 and step 2 differ (offsets differ by numel_total)
    assert not torch.equal(a[0], a[1])


def test_sgd_momentum_buffer_rounding_and_update_use_fp32_buffer() -> None:
    p0 = lb.round(torch.linspace(-1, 1, 64), "bf16")
    g1, g2 = torch.linspace(0.3, -0.2, 64), torch.linspace(-0.1, 0.4, 64)
    p = p0.clone().requires_grad_()
    opt = LowPrecisionSGD([p], lr=0.1, momentum=0.9, weight_fmt="bf16", state_fmt="e4m3")
    p.grad = g1.clone()
    opt.step()
    buf = lb.round(g1, "e4m3")
    w1 = lb.round(p0 - 0.1 * g1, "bf16")
    assert _bits_equal(opt.state[p]["momentum_buffer"], buf)
    assert _bits_equal(p.detach(), w1)
    p.grad = g2.clone()
    opt.step()
    b2 = buf * 0.9 + g2  # fp32 buffer of step 2 from the stored (rounded) one
    assert _bits_equal(opt.state[p]["momentum_buffer"], lb.round(b2, "e4m3"))
    assert _bits_equal(p.detach(), lb.round(w1 + b2 * -0.1, "bf16"))


def test_master_weights_follow_fp32_adamw_and_param_is_rounded_master() -> None:
    ps = _params()
    a, b = _leaves(ps), _leaves(ps)
    oa = LowPrecisionAdamW(
        a, lr=1e-3, weight_fmt="e4m3", state_fmt=None, update_mode="sr", master_weights=True, seed=3
    )
    ob = torch.optim.AdamW(b, lr=1e-3, foreach=False)
    n_total = sum(p.numel() for p in ps)
    offsets = np.cumsum([0] + [p.numel() for p in ps])[:-1].tolist()
    for step in range(5):
        gs = _grads(step)
        _set_grads(a, gs)
        _set_grads(b, gs)
        oa.step()
        ob.step()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            master = oa.state[x]["master"]
            assert _bits_equal(master, y.detach())
            want = lb.round(master, "e4m3", "sr", seed=3, offset=step * n_total + offsets[i])
            assert _bits_equal(x.detach(), want)


def test_construction_puts_weights_on_grid_and_master_keeps_original() -> None:
    ps = _params()
    leaves = _leaves(ps)
    opt = LowPrecisionAdamW(leaves, weight_fmt="e4m3", master_weights=True)
    for x, p in zip(leaves, ps, strict=True):
        assert torch.equal(x.detach(), lb.round(p, "e4m3"))
        assert _bits_equal(opt.state[x]["master"], p)


def test_param_group_override_keeps_fp32_group_exact() -> None:
    ps = _params()
    a, b = _leaves(ps), _leaves(ps)
    oa = LowPrecisionAdamW(
        [{"params": a[:1]}, {"params": a[1:], "weight_fmt": None, "state_fmt": None}],
        lr=1e-2,
        weight_fmt="bf16",
    )
    ob = torch.optim.AdamW(b[1:], lr=1e-2, foreach=False)
    for step in range(4):
        gs = _grads(step)
        _set_grads(a, gs)
        _set_grads(b[1:], gs[1:])
        oa.step()
        ob.step()
    for x, y in zip(a[1:], b[1:], strict=True):
        assert _bits_equal(x, y)
    assert torch.equal(a[0].detach(), lb.round(a[0].detach(), "bf16"))


# ---- checkpoints ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LowPrecisionAdamW, LowPrecisionSGD])
@pytest.mark.parametrize("master", [False, True])
@pytest.mark.parametrize("pdtype", [torch.float32, torch.bfloat16])
def test_state_dict_resume_is_bit_identical(cls, master: bool, pdtype: torch.dtype) -> None:
    extra = {"momentum": 0.9} if cls is LowPrecisionSGD else {}
    kw = dict(
        lr=1e-2,
        weight_fmt="bf16",
        state_fmt="bf16",
        update_mode="sr",
        state_mode="sr",
        master_weights=master,
        seed=11,
        **extra,
    )
    ps = [p.to(pdtype) for p in _params()]

    def steps(params, opt, rng) -> None:
        for step in rng:
            _set_grads(params, [g.to(pdtype) for g in _grads(step)])
            opt.step()

    full = _leaves(ps)
    o_full = cls(full, **kw)
    steps(full, o_full, range(6))

    half = _leaves(ps)
    o_half = cls(half, **kw)
    steps(half, o_half, range(3))
    saved = copy.deepcopy(o_half.state_dict())
    resumed = _leaves([p.detach() for p in half])
    o_res = cls(resumed, **{**kw, "seed": 99, "lr": 5.0})  # hyper-params come from the file
    o_res.load_state_dict(saved)
    steps(resumed, o_res, range(3, 6))
    for x, y in zip(full, resumed, strict=True):
        assert (
            torch.equal(x.detach().view(torch.int16), y.detach().view(torch.int16))
            if pdtype == torch.bfloat16
            else _bits_equal(x, y)
        )
        sx, sy = o_full.state[x], o_res.state[y]
        assert sx.keys() == sy.keys() and sx["step"] == sy["step"] == 6
        for k in sx:
            if torch.is_tensor(sx[k]):
                assert sy[k].dtype == sx[k].dtype == torch.float32  # not cast to bf16
                assert _bits_equal(sx[k], sy[k])


# ---- bad options ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(weight_fmt="bf17"), "weight_fmt='bf17'"),
        (dict(state_fmt="mxfp8_e4m3"), "block format"),
        (dict(update_mode="nearest-odd"), "update_mode='nearest-odd'.*accepted"),
        (dict(state_mode=3), "state_mode=3"),
        (dict(lr=-1.0), "lr=-1.0"),
        (dict(betas=(0.9, 1.0)), r"betas\[1\]=1.0"),
        (dict(eps=float("nan")), "eps=nan"),
        (dict(seed=-1), "seed"),
        (dict(master_weights="yes"), "master_weights"),
    ],
)
def test_adamw_bad_options_raise(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LowPrecisionAdamW([torch.zeros(2, requires_grad=True)], **kw)


def test_sgd_bad_options_and_group_override_raise() -> None:
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="nesterov"):
        LowPrecisionSGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        LowPrecisionSGD([p], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="weight_fmt='nope'"):
        LowPrecisionSGD([{"params": [p], "weight_fmt": "nope"}], lr=0.1)
