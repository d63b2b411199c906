"""quantize_: which modules are swapped, parameters kept, overrides/skip/filter_fn, summary."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

import lowbit as lb
from lowbit.nn import (
    MatMul,
    QuantConfig,
    QuantConv1d,
    QuantConv2d,
    QuantEmbedding,
    QuantLinear,
    QuantMatMul,
    dequantize_,
    is_quantized,
    quantize_,
    register_handler,
    summary,
)
from lowbit.nn.quantize import handlers


class MyLinear(nn.Linear):
    """A subclass (its forward could differ): never swapped."""


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.conv1 = nn.Conv1d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.score = MatMul()
        self.blocks = nn.Sequential(
            OrderedDict(fc1=nn.Linear(8, 8), act=nn.ReLU(), fc2=nn.Linear(8, 8))
        )
        self.sub = MyLinear(8, 8)
        self.head = nn.Linear(8 + 4, 3)

    def forward(self, tok: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        e = self.emb(tok)  # (B, T, 8)
        e = self.conv1(e.transpose(1, 2)).transpose(1, 2)
        e = self.attn(e, e, e, need_weights=False)[0]
        s = self.score(e, e.transpose(1, 2)).softmax(-1)
        e = self.blocks(s @ e)
        e = self.sub(e).mean(1)
        i = self.bn(self.conv2(img)).mean((2, 3))
        return self.head(torch.cat([e, i], 1))


def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 11, (3, 5), generator=g), torch.randn(3, 1, 6, 6, generator=g)


def make_net() -> Net:
    torch.manual_seed(0)
    return Net()


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_swaps_exactly_the_supported_types():
    net = quantize_(make_net(), QuantConfig.from_recipe("w8a8"))
    assert type(net.emb) is QuantEmbedding
    assert type(net.conv1) is QuantConv1d
    assert type(net.conv2) is QuantConv2d
    assert type(net.score) is QuantMatMul
    assert type(net.blocks.fc1) is QuantLinear and type(net.blocks.fc2) is QuantLinear
    assert type(net.head) is QuantLinear
    assert type(net.sub) is MyLinear  # subclass: not swapped
    assert type(net.attn) is nn.MultiheadAttention  # fused matmuls: left alone
    assert type(net.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert type(net.bn) is nn.BatchNorm2d
    assert net.lowbit_config == QuantConfig.from_recipe("w8a8")
    assert is_quantized(net) and not is_quantized(make_net())
    net(*inputs()).sum().backward()  # runs end to end


def test_fp32_config_is_bit_identical_forward_and_backward():
    ref, net = make_net(), make_net()
    quantize_(net, QuantConfig())
    assert type(net.head) is QuantLinear
    tok, img = inputs()
    y0, y1 = ref(tok, img), net(tok, img)
    assert torch.equal(y0, y1)
    y0.square().sum().backward()
    y1.square().sum().backward()
    g0, g1 = grads(ref), grads(net)
    assert g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0)


def test_parameters_and_state_dict_keys_are_kept():
    net = make_net()
    params = dict(net.named_parameters())
    sd = net.state_dict()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    quantize_(
        net, QuantConfig(weight="int8", act="int8", scaling="lsq", grad_mode="sr", grad_act="bf16")
    )
    new_params = dict(net.named_parameters())
    for k, p in params.items():
        assert new_params[k] is p  # the same Parameter objects
    new_sd = net.state_dict()
    for k, v in sd.items():
        assert torch.equal(new_sd[k], v)
    added = set(new_sd) - set(sd)
    assert "head.act_quant.scale" in added and "head.weight_quant.scale" in added
    assert "head.lowbit_step" in added and "score.a_quant.scale" in added
    assert all(k.split(".")[-1] in ("scale", "initialized", "lowbit_step") for k in added)
    # the optimizer built before quantize_ still updates the layer's weight
    before = net.head.weight.detach().clone()
    net(*inputs()).sum().backward()
    opt.step()
    assert not torch.equal(before, net.head.weight.detach())


def test_overrides_skip_and_filter_fn():
    cfg = QuantConfig(
        weight="int8",
        act="int8",
        skip=("conv*",),
        overrides=(
            ("blocks.*", {"weight": "int4"}),
            ("blocks.fc2", {"act": None, "weight_mode": "rtz"}),
        ),
    )
    net = quantize_(make_net(), cfg, filter_fn=lambda m, name: name != "emb")
    assert type(net.conv1) is nn.Conv1d and type(net.conv2) is nn.Conv2d
    assert type(net.emb) is nn.Embedding
    fc1, fc2 = net.blocks.fc1, net.blocks.fc2
    assert fc1.weight_quant.spec.fmt == "int4" and fc1.act_quant.spec.fmt == "int8"
    assert fc2.weight_quant.spec.fmt == "int4" and fc2.act_quant is None
    assert fc2.weight_quant.spec.mode == "rtz"
    assert net.head.weight_quant.spec.fmt == "int8"
    rows = {r["layer"]: r for r in summary(net).rows}
    assert rows["conv1"]["note"] == "skipped (config.skip)"
    assert rows["emb"]["note"] == "skipped (filter_fn)"
    # the override really changes the value: int4 per-tensor weight of fc1
    w = fc1.weight.detach()
    want = lb.quantize_int(w.numpy(), 4, scale=np.float32(w.abs().max()) / np.float32(7))
    assert torch.equal(fc1.weight_quant.round_value(w), torch.from_numpy(want))


def test_summary_lists_every_layer():
    net = quantize_(make_net(), QuantConfig.from_recipe("fp8"))
    s = summary(net)
    names = [r["layer"] for r in s.rows]
    leaves = [
        n
        for n, m in make_net().named_modules()
        if not m._modules or any(True for _ in m.parameters(recurse=False))
    ]
    assert sorted(names) == sorted(set(leaves) - {""})
    row = {r["layer"]: r for r in s.rows}
    assert row["head"]["weight"] == "e4m3 rne sat"
    assert row["head"]["grad_act"] == "e5m2 sr"
    assert row["score"]["act"] == "a: e4m3 rne sat; b: e4m3 rne sat"
    assert row["score"]["weight"] == "-"
    assert row["emb"]["act"] == "-"
    assert row["bn"]["weight"] == "fp32" and row["bn"]["note"] == "not quantized"
    assert row["blocks.act"]["weight"] == "-" and row["blocks.act"]["note"] == ""
    assert "MatMul" in row["attn"]["note"] and row["attn.out_proj"]["weight"] == "fp32"
    md = str(s)
    assert md.count("\n") == len(s.rows) + 1 and "| head | QuantLinear |" in md
    console = Console(record=True, width=200)
    console.print(s)
    assert "QuantConv2d" in console.export_text()


def test_requantize_raises_and_dequantize_restores():
    net = make_net()
    tok, img = inputs()
    y = net(tok, img)
    head_w = net.head.weight
    quantize_(net, QuantConfig.from_recipe("w8a8"))
    with pytest.raises(ValueError, match=r"already quantized.*dequantize_"):
        quantize_(net, QuantConfig())
    dequantize_(net)
    assert type(net.head) is nn.Linear and net.head.weight is head_w
    assert not is_quantized(net) and not hasattr(net, "lowbit_config")
    assert set(net.state_dict()) == set(make_net().state_dict())
    assert torch.equal(net(tok, img), y)
    quantize_(net, QuantConfig(weight="bf16"))
    assert type(net.head) is QuantLinear


def test_bare_layer_and_shared_module():
    lin = nn.Linear(3, 2)
    q = quantize_(lin, QuantConfig(weight="bf16"))
    assert type(q) is QuantLinear and q.weight is lin.weight and q.lowbit_config.weight == "bf16"
    shared = nn.Linear(4, 4)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    quantize_(seq, QuantConfig(weight="int8"))
    assert type(seq[0]) is QuantLinear and seq[0] is seq[2]


def test_layer_errors_name_the_layer():
    cfg = QuantConfig(weight="int8", granularity="per_channel", axis=2)
    with pytest.raises(ValueError, match=r"layer 'blocks.fc1': axis=2 is out of range"):
        quantize_(
            nn.Sequential(OrderedDict(blocks=nn.Sequential(OrderedDict(fc1=nn.Linear(4, 4))))), cfg
        )
    cfg = QuantConfig(weight="int8", granularity="per_group", group_size=3)
    with pytest.raises(ValueError, match=r"layer 'fc': group_size=3 does not divide the 8"):
        quantize_(nn.Sequential(OrderedDict(fc=nn.Linear(8, 4))), cfg)
    # axis 2 is fine for a conv weight (out, in, kh, kw)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3))
    quantize_(conv, QuantConfig(weight="int8", granularity="per_channel", axis=2))
    assert conv[0].weight_quant.scale_of(conv[0].weight).shape == (1, 1, 3, 1)
    with pytest.raises(TypeError, match="QuantConfig"):
        quantize_(nn.Linear(2, 2), {"weight": "int8"})


def test_embedding_with_max_norm_is_left_in_fp32():
    m = nn.Sequential(nn.Embedding(5, 3, max_norm=1.0))
    quantize_(m, QuantConfig(weight="int8"))
    assert type(m[0]) is nn.Embedding
    assert "max_norm" in summary(m).rows[0]["note"]


def test_register_handler():
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    class QScale(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg

        def forward(self, x):
            return 3 * x

    register_handler(Scale, lambda m, cfg, name: QScale(cfg))
    try:
        m = quantize_(nn.Sequential(Scale()), QuantConfig(weight="int8"))
        assert type(m[0]) is QScale and torch.equal(m(torch.ones(2)), torch.full((2,), 3.0))
    finally:
        from lowbit.nn import quantize as qmod

        del qmod._HANDLERS[Scale]
    assert Scale not in handlers()
    with pytest.raises(TypeError):
        register_handler(int, lambda *a: None)
