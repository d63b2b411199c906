"""CollageAdamW: the fp32 baselines against torch.optim.AdamW bit for bit, the bf16 variants'
update quality (EDQ, imprecision), the second moment's decay, the memory per parameter."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lowbit.methods.collage import (
    BYTES_PER_PARAM,
    VARIANTS,
    CollageAdamW,
    bytes_per_param,
    collage,
    collage_light,
    collage_plus,
    mcf_value,
    param_dtype,
    split_scalar,
)

BF16 = torch.bfloat16


def tiny_net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    dtype = next(model.parameters()).dtype
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g).to(dtype)
        y = torch.randn(16, 3, generator=g).to(dtype)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("foreach", [False, None])
def test_fp32_variant_equals_torch_adamw_bit_for_bit(foreach):
    kw = dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
    ours, ref = tiny_net(torch.float32), tiny_net(torch.float32)
    opt = collage(ours.parameters(), variant="fp32", **kw)
    ref_opt = torch.optim.AdamW(ref.parameters(), foreach=foreach, **kw)
    train_steps(ours, opt, 25)
    train_steps(ref, ref_opt, 25)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], ref_opt.state[q]["exp_avg"])
        assert torch.equal(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"])


def test_fp32_master_is_torch_adamw_on_an_fp32_copy():
    """The master weights follow torch.optim.AdamW fed the same (bf16) gradients, bit for bit;
    the bf16 parameter is the master rounded to nearest."""
    model = tiny_net(BF16)
    opt = collage(model.parameters(), variant="fp32_master", lr=1e-2, weight_decay=0.1)
    masters = [p.detach().float().clone().requires_grad_(True) for p in model.parameters()]
    ref_opt = torch.optim.AdamW(masters, lr=1e-2, weight_decay=0.1, foreach=False)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        x, y = torch.randn(16, 6, generator=g).to(BF16), torch.randn(16, 3, generator=g)
        opt.zero_grad()
        ((model(x).float() - y) ** 2).mean().backward()
        for p, mp in zip(model.parameters(), masters, strict=True):
            mp.grad = p.grad.float()
        opt.step()
        ref_opt.step()
    for p, mp in zip(model.parameters(), masters, strict=True):
        assert torch.equal(opt.state[p]["master"], mp.detach())
        assert torch.equal(p, mp.detach().to(BF16))
        assert opt.state[p]["exp_avg"].dtype == torch.float32


def constant_update_run(
    variant: str, steps: int, lr: float = 1e-4
) -> tuple[CollageAdamW, torch.Tensor, list]:
    """theta = 1 (64 elements) with a constant gradient -1: Adam's update is about +lr per step,
    far below half an ulp of 1 in bf16 (2^-8)."""
    p = torch.ones(64, dtype=param_dtype(variant), requires_grad=True)
    opt = collage([p], variant=variant, lr=lr, weight_decay=0.0)
    metrics = []
    for _ in range(steps):
        p.grad = torch.full_like(p, -1.0)
        opt.step()
        metrics.append(opt.last_metrics)
    return opt, p, metrics


def test_pure_bf16_loses_every_small_update():
    _, p, metrics = constant_update_run("bf16", 200)
    assert torch.equal(p, torch.ones_like(p))
    for m in metrics:
        assert m.imprecision == 1.0 and m.edq_normalised == 0.0 and m.edq == 0.0
        assert m.weight_unchanged == 1.0 and m.raw_norm > 0


@pytest.mark.parametrize("variant", ["light", "plus"])
def test_collage_keeps_small_updates(variant):
    """Per step, the MCF realises the update up to the rounding of its residual sum, at most
    half an ulp of a number below 2^-8 + |u| (< 2^-7), i.e. 2^-16: |EDQ_norm - 1| <= 2^-16/|u|.
    Over the run the weights move by the sum of the raw updates up to the same bound per
    step."""
    opt, p, metrics = constant_update_run(variant, 400)
    r = opt.state[p]["param_residual"]
    total_u = 0.0
    for m in metrics:
        u = m.raw_norm / math.sqrt(64)  # every element has the same update
        total_u += u
        assert abs(m.edq_normalised - 1) <= 2.0**-16 / u
        assert m.imprecision == 0.0
    moved = mcf_value(p.detach(), r) - 1
    assert float((moved - total_u).abs().max()) <= 400 * 2.0**-16
    assert total_u > 400 * 0.9e-4  # the updates were real: ~lr each
    # the visible bf16 weight moved too (by whole ulps), though it stays put most steps
    assert float(p.detach().min()) > 1.0
    assert sum(m.weight_unchanged for m in metrics) / len(metrics) > 0.5


def test_plus_decays_the_second_moment_light_does_not():
    """g = 0 for 1000 steps from v0: v*0.999 rounds back to v in bf16 (light, bf16), while
    Collage-plus's MultMC reaches v0·(1 + bf16(0.999 - 1))^1000 ≈ 0.368·v0 (bound as in
    test_collage_mcf: 2^-9·(2|a_r| + 2^-8)·(1 + 2^-7) relative per step)."""
    v0 = torch.linspace(0.01, 3.0, 32).to(BF16)
    _, lo = split_scalar(0.999)
    out = {}
    for variant in ("light", "plus", "bf16"):
        p = torch.zeros(32, dtype=BF16, requires_grad=True)
        opt = collage([p], variant=variant, lr=1e-3, weight_decay=0.0, track_metrics=False)
        p.grad = torch.zeros_like(p)
        opt.step()  # creates the state (v stays 0 with g = 0)
        opt.state[p]["exp_avg_sq"].copy_(v0)
        for _ in range(1000):
            opt.step()
        st = opt.state[p]
        out[variant] = (
            mcf_value(st["exp_avg_sq"], st["exp_avg_sq_residual"])
            if variant == "plus"
            else st["exp_avg_sq"].double()
        )
        assert torch.equal(p, torch.zeros_like(p))  # m = 0, u = 0: nothing moves
    assert torch.equal(out["light"], v0.double()) and torch.equal(out["bf16"], v0.double())
    exact = (1 + lo) ** 1000
    per_step = 2.0**-9 * (2 * abs(lo) + 2.0**-8) * (1 + 2.0**-7)
    rel = out["plus"] / v0.double()
    assert float((rel - exact).abs().max()) <= ((1 + per_step) ** 1000 - 1) * exact
    assert abs(exact - 0.999**1000) / 0.999**1000 < 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
def test_bytes_per_parameter(variant):
    """The note's 8/10/12/16/16 bytes, and the tensors the optimizer really holds."""
    assert (
        bytes_per_param(variant)
        == {"bf16": 8, "light": 10, "plus": 12, "fp32_master": 16, "fp32": 16}[variant]
    )
    model = tiny_net(param_dtype(variant))
    opt = collage(model.parameters(), variant=variant)
    train_steps(model, opt, 1)
    n = sum(p.numel() for p in model.parameters())
    assert opt.state_bytes() == BYTES_PER_PARAM[variant] * n == opt.bytes_per_param * n


def test_collage_tracks_fp32_master_closer_than_pure_bf16():
    """A decaying learning rate on a tiny regression: pure bf16 drifts from the fp32-master
    trajectory (its late updates are lost); Collage's MCF value stays several times closer."""
    finals = {}
    for variant in ("fp32_master", "bf16", "light", "plus"):
        model = tiny_net(BF16)
        opt = collage(model.parameters(), variant=variant, lr=3e-3, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.99**k)
        g = torch.Generator().manual_seed(3)
        x, y = torch.randn(64, 6, generator=g).to(BF16), torch.randn(64, 3, generator=g)
        for _ in range(150):
            opt.zero_grad()
            ((model(x).float() - y.float()) ** 2).mean().backward()
            opt.step()
            sched.step()
        vals = []
        for p in model.parameters():
            st = opt.state[p]
            if variant == "fp32_master":
                vals.append(st["master"].double().flatten())
            elif "param_residual" in st:
                vals.append(mcf_value(p.detach(), st["param_residual"]).flatten())
            else:
                vals.append(p.detach().double().flatten())
        finals[variant] = torch.cat(vals)
    ref = finals["fp32_master"]
    d = {k: float((v - ref).norm()) for k, v in finals.items()}
    assert d["light"] * 3 < d["bf16"] and d["plus"] * 3 < d["bf16"]


def test_recipes_and_state_dict_round_trip():
    model = tiny_net(BF16)
    assert collage_light(model.parameters()).variant == "light"
    assert collage_plus(model.parameters()).variant == "plus"
    opt = collage(model.parameters(), variant="fp32_master")
    train_steps(model, opt, 2)
    model2 = copy.deepcopy(model)
    opt2 = collage(model2.parameters(), variant="fp32_master")
    opt2.load_state_dict(opt.state_dict())
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        for k in ("master", "exp_avg", "exp_avg_sq"):
            assert opt2.state[q][k].dtype == torch.float32
            assert torch.equal(opt2.state[q][k], opt.state[p][k])
    train_steps(model, opt, 2)
    train_steps(model2, opt2, 2)
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bad_arguments():
    p32 = [torch.zeros(3, requires_grad=True)]
    pbf = [torch.zeros(3, dtype=BF16, requires_grad=True)]
    with pytest.raises(ValueError, match=r"'double'.*accepted: bf16, light, plus"):
        collage(pbf, variant="double")
    with pytest.raises(ValueError, match=r"needs torch\.bfloat16 parameters"):
        collage(p32, variant="light")
    with pytest.raises(ValueError, match=r"needs torch\.float32 parameters"):
        collage(pbf, variant="fp32")
    with pytest.raises(ValueError, match="lr"):
        collage(pbf, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        collage(pbf, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="per group"):
        CollageAdamW([{"params": pbf, "variant": "plus"}])
