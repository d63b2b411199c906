"""The S2FP8 recipe: config fields, the quantized layer's forward/backward against direct
``s2fp8_round`` computations, the loss-scale invariance that lets S2FP8 train without loss
scaling (and plain e5m2 lose the same gradients), and a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lnn
from lowbit.blocks.s2fp8 import s2fp8_round
from lowbit.methods.s2fp8 import PAPER_RESULTS, fp8_training_no_scaling, s2fp8_training
from lowbit.nn.quantizers import S2FP8Quantizer


def test_recipe_fields_and_round_trip():
    cfg = s2fp8_training()
    for role in ("weight", "act", "grad_act"):
        spec = cfg.cast_spec(role)
        assert (spec.fmt, spec.mode, spec.scaling, spec.granularity) == (
            "e5m2",
            "rne",
            "s2fp8",
            "per_tensor",
        )
    assert cfg.grad_weight is None and cfg.output is None and cfg.skip == ()
    assert lnn.QuantConfig.from_json(cfg.to_json()) == cfg
    assert lnn.QuantConfig.from_toml(cfg.to_toml()) == cfg
    base = fp8_training_no_scaling()
    assert base.cast_spec("grad_act").scaling == "none" and base.grad_weight is None
    assert PAPER_RESULTS["cifar10_resnet20"]["s2fp8"] is not None
    with pytest.raises(ValueError, match="s2fp8"):
        s2fp8_training(fmt="int8")
    with pytest.raises(ValueError, match="nearest even"):
        lnn.QuantLinear(2, 2, config=s2fp8_training(grad_mode="sr"))
    with pytest.raises(ValueError, match="per tensor"):
        lnn.QuantLinear(2, 2, config=s2fp8_training(granularity="per_channel"))


def test_linear_forward_and_backward_equal_direct_s2fp8_rounding():
    gen = torch.Generator().manual_seed(0)
    lin = lnn.QuantLinear(6, 4, config=s2fp8_training())
    assert all(
        isinstance(q, S2FP8Quantizer) for q in (lin.weight_quant, lin.act_quant, lin.grad_act_quant)
    )
    assert lin.grad_weight_quant is None
    x = (torch.randn(5, 6, generator=gen) * 3).requires_grad_(True)
    y = lin(x)
    xq, wq = s2fp8_round(x.detach()), s2fp8_round(lin.weight.detach())
    assert torch.equal(y.detach(), F.linear(xq, wq, lin.bias.detach()))
    dy = torch.randn(5, 4, generator=gen) * 1e-3
    y.backward(dy)
    g = s2fp8_round(dy)
    assert torch.equal(x.grad, s2fp8_round(g @ wq))
    assert torch.equal(lin.weight.grad, g.t() @ xq)  # fp32 weight gradient (no rounding)
    assert torch.equal(lin.bias.grad, g.sum(0))


def _grads(cfg: lnn.QuantConfig, scale: float) -> list[torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    lnn.quantize_(model, cfg)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    t = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(3))
    (F.cross_entropy(model(x), t) * scale).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_tiny_loss_scale_is_absorbed_by_s2fp8_but_flushes_plain_e5m2():
    """The paper's point: S2FP8 needs no loss scaling. Its casts are exactly equivariant under
    powers of two, so scaling the loss by 2**-24 scales every gradient by exactly 2**-24;
    plain e5m2 (no scaling) flushes those gradients to zero."""
    k = 2.0**-24
    g1, gk = _grads(s2fp8_training(), 1.0), _grads(s2fp8_training(), k)
    for a, b in zip(g1, gk, strict=True):
        assert torch.equal(b, a * k)
        assert bool((a != 0).any())
    p1, pk = _grads(fp8_training_no_scaling(), 1.0), _grads(fp8_training_no_scaling(), k)
    assert bool((p1[0] != 0).any())
    assert all(not bool((g != 0).any()) for g in pk[:2])  # first layer: every gradient lost


def test_short_training_run_learns():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.data / 16.0).astype(np.float32))
    t = torch.from_numpy(d.target.astype(np.int64))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    lnn.quantize_(model, s2fp8_training())
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def loss_all() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(x), t))

    before = loss_all()
    for _ in range(60):
        idx = torch.randint(0, len(t), (64,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), t[idx]).backward()
        opt.step()
    after = loss_all()
    assert after < 0.3 * before
    with torch.no_grad():
        acc = float((model(x).argmax(1) == t).float().mean())
    assert acc > 0.85
