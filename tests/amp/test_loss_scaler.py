"""LossScaler: torch GradScaler's schedule, exact unscaling, overflow in low-precision grads."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import lowbit as lb
from lowbit.amp import LossScaler
from lowbit.optim import LowPrecisionAdamW

INF_PATTERN = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def _param_and_opt() -> tuple[torch.Tensor, torch.optim.Optimizer]:
    p = torch.zeros(3, requires_grad=True)
    return p, torch.optim.SGD([p], lr=0.1)


def _grad(bad: int, scale: float) -> torch.Tensor:
    g = torch.tensor([1.0, -2.0, 0.5]) * scale
    if bad:
        g[1] = math.inf if bad == 1 else math.nan
    return g


@pytest.mark.parametrize("factors", [(2.0, 0.5), (1.7, 0.3)])
def test_scale_trajectory_equals_torch_gradscaler(factors: tuple[float, float]) -> None:
    growth, backoff = factors
    opts = dict(init_scale=1024.0, growth_factor=growth, backoff_factor=backoff, growth_interval=3)
    ref = torch.amp.GradScaler("cpu", **opts)
    ours = LossScaler(**opts, min_scale=2.0**-20, max_scale=2.0**40)
    p_ref, o_ref = _param_and_opt()
    p_our, o_our = _param_and_opt()
    traj_ref, traj_our, stepped_ref, stepped_our = [], [], [], []
    for bad in INF_PATTERN:
        ref.scale(torch.tensor(1.0))  # torch creates its scale tensor lazily here
        before = p_ref.detach().clone()
        p_ref.grad = _grad(bad, ref.get_scale())
        ref.step(o_ref)
        ref.update()
        stepped_ref.append(not torch.equal(before, p_ref.detach()))
        traj_ref.append(ref.get_scale())
        p_our.grad = _grad(bad, ours.get_scale())
        stepped_our.append(ours.step(o_our))
        ours.update()
        traj_our.append(ours.loss_scale)
    assert traj_our == traj_ref  # float32 products, as torch's scale tensor
    assert stepped_our == stepped_ref == [not b for b in INF_PATTERN]
    assert torch.equal(p_our, p_ref)


def test_hand_written_schedule_with_min_and_max_clamps() -> None:
    s = LossScaler(8.0, growth_interval=2, min_scale=2.0, max_scale=32.0)
    p, opt = _param_and_opt()
    want, got = [], []
    scale, tracker = 8.0, 0
    for bad in [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1]:
        p.grad = _grad(bad, s.get_scale())
        assert s.step(opt) == (not bad)
        assert s.found_inf == bool(bad)
        s.update()
        if bad:
            scale, tracker = max(scale / 2, 2.0), 0
        else:
            tracker += 1
            if tracker == 2:
                scale, tracker = min(scale * 2, 32.0), 0
        want.append(scale)
        got.append(s.get_scale())
    assert got == want
    assert want == [8, 16, 16, 32, 32, 32, 16, 8, 4, 4, 2]


def test_static_scale_never_changes_but_skips() -> None:
    s = LossScaler(2.0**7, dynamic=False, growth_interval=1)
    p, opt = _param_and_opt()
    for bad in [0, 1, 0, 0, 2]:
        before = p.detach().clone()
        p.grad = _grad(bad, s.get_scale())
        assert s.step(opt) == (not bad)
        s.update()
        assert s.get_scale() == 2.0**7
        assert torch.equal(before, p.detach()) == bool(bad)


def test_skipped_step_leaves_params_and_optimizer_state_bit_identical() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = LowPrecisionAdamW(model.parameters(), lr=1e-2, update_mode="sr")
    s = LossScaler(2.0**10, grad_fmt="fp16")
    x = torch.randn(16, 4)
    s.scale(model(x).pow(2).mean()).backward()
    assert s.step(opt)
    s.update()
    params = [q.detach().clone() for q in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    big = model(x).pow(2).mean() * 1e4
    s.scale(big).backward()
    assert max(float(q.grad.abs().max()) for q in model.parameters()) > 65504  # fp16 overflow
    assert not s.step(opt)
    assert s.found_inf
    s.update()
    for a, b in zip(params, model.parameters(), strict=True):
        assert torch.equal(a.view(torch.int32), b.detach().view(torch.int32))
    after = opt.state_dict()
    for k, st in state["state"].items():
        assert st["step"] == after["state"][k]["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[key], after["state"][k][key])
    assert s.get_scale() == 2.0**9


@pytest.mark.parametrize("log2_scale", [0, 7, 16])
def test_unscaled_gradients_are_exact_for_power_of_two_scales(log2_scale: int) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    x = torch.randn(32, 5)
    model(x).square().mean().backward()
    want = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    s = LossScaler(2.0**log2_scale, max_scale=2.0**30)
    s.scale(model(x).square().mean()).backward()
    s.unscale_(opt)
    assert not s.found_inf
    for w, q in zip(want, model.parameters(), strict=True):
        assert torch.equal(w.view(torch.int32), q.grad.view(torch.int32))


def test_fp16_gradient_overflow_threshold_matches_torch_half() -> None:
    """RNE to fp16: 65519 rounds to 65504 (the largest finite), 65520 overflows to inf."""
    for v in (65504.0, 65519.0, 65520.0, 1e5, -65520.0):
        p, opt = _param_and_opt()
        p.grad = torch.tensor([v, 1.0, -1.0])
        s = LossScaler(1.0, grad_fmt="fp16")
        stepped = s.step(opt)
        overflow = bool(torch.isinf(torch.tensor(v).half()))
        assert s.found_inf == overflow and stepped == (not overflow)
        if not overflow:
            assert p.grad[0] == torch.tensor(v).half().float()


def test_scaled_gradient_overflows_in_fp16_only_after_scaling() -> None:
    p, opt = _param_and_opt()
    g = torch.tensor([3000.0, 1.0, -2.0])
    s = LossScaler(16.0, grad_fmt="fp16", growth_interval=1)
    p.grad = s.scale(g)  # 3000 * 16 = 48000 <= 65504
    assert s.step(opt)
    s.update()
    assert s.get_scale() == 32.0
    p.grad = s.scale(g)  # 3000 * 32 = 96000 > 65504: the same gradient overflows now
    assert not s.step(opt)
    s.update()
    assert s.get_scale() == 16.0


def test_e5m2_and_e4m3_overflow_rules() -> None:
    # e5m2 is IEEE-style: above the midpoint to 2**16 it rounds to inf (torch's cast agrees)
    for v in (57344.0, 61439.0, 61440.0):
        p, opt = _param_and_opt()
        p.grad = torch.tensor([v, 0.0, 0.0])
        s = LossScaler(1.0, grad_fmt="e5m2")
        s.step(opt)
        assert s.found_inf == bool(torch.isinf(torch.tensor(v).to(torch.float8_e5m2).float()))
    # e4m3 (fn) has no inf: lowbit's default overflow gives NaN, which is found as well
    p, opt = _param_and_opt()
    p.grad = torch.tensor([500.0, 0.0, 0.0])
    assert math.isnan(float(lb.round(torch.tensor(500.0), "e4m3")))
    s = LossScaler(1.0, grad_fmt="e4m3")
    assert not s.step(opt) and s.found_inf


def test_state_dict_round_trip_continues_the_same_schedule() -> None:
    a = LossScaler(64.0, growth_interval=3, growth_factor=1.5)
    p, opt = _param_and_opt()
    for bad in [0, 0, 1, 0, 0]:
        p.grad = _grad(bad, 1.0)
        a.step(opt)
        a.update()
    b = LossScaler()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for bad in [0, 0, 0, 1, 0, 0, 0]:
        for s in (a, b):
            p.grad = _grad(bad, 1.0)
            s.step(opt)
            s.update()
        assert a.get_scale() == b.get_scale()
    assert b.state_dict() == a.state_dict()


def test_misuse_and_bad_options_raise() -> None:
    p, opt = _param_and_opt()
    s = LossScaler()
    with pytest.raises(RuntimeError, match="update"):
        s.update()
    p.grad = _grad(0, 1.0)
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already"):
        s.unscale_(opt)
    s.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        s.unscale_(opt)
    with pytest.raises(TypeError, match="tensor"):
        s.scale(3.0)
    for kw, match in [
        (dict(init_scale=0.0), "init_scale"),
        (dict(growth_factor=1.0), "growth_factor"),
        (dict(backoff_factor=1.5), "backoff_factor"),
        (dict(growth_interval=0), "growth_interval"),
        (dict(min_scale=4.0, max_scale=2.0), "max_scale"),
        (dict(init_scale=2.0**30), "outside"),
        (dict(grad_fmt="fp17"), "grad_fmt='fp17'"),
        (dict(grad_fmt="mxfp8_e4m3"), "block format"),
        (dict(dynamic="yes"), "dynamic"),
    ]:
        with pytest.raises(ValueError, match=match):
            LossScaler(**kw)
