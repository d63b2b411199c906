"""Tensor groups, schemes, the memory metric r and the QuantConfig of an assignment, checked
against sizes summed by hand from the architectures."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lowbit.methods.assign import (  # noqa: E402
    HIGH,
    LOW,
    LOW_GRAD,
    assign,
    group_order,
    lee_assignment,
    tensor_groups,
)
from lowbit.models import build_model  # noqa: E402

H_, L_, G_ = HIGH.name, LOW.name, LOW_GRAD.name


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> flatten -> fc on 1x6x6 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.relu(self.bn(self.conv(x))), 1))


B = 10  # training batch size; the trace runs on 3 examples
TINY = {  # tensor -> (size at batch 10, group), summed by hand
    "input.Y": (B * 36, "input"),
    "conv.Y": (B * 4 * 36, "conv"),
    "conv.GY": (B * 4 * 36, "conv"),
    "conv.P": (36 + 4, "input"),
    "conv.GP": (36 + 4, "input"),
    "bn.Y": (B * 4 * 36, "conv"),
    "bn.GY": (B * 4 * 36, "conv"),
    "bn.P": (8, "conv"),
    "bn.GP": (8, "conv"),
    "relu.Y": (B * 4 * 36, "conv"),
    "relu.GY": (B * 4 * 36, "conv"),
    "fc.Y": (B * 5, "fc"),
    "fc.GY": (B * 5, "fc"),
    "fc.P": (144 * 5 + 5, "conv"),
    "fc.GP": (144 * 5 + 5, "conv"),
}


@pytest.fixture(scope="module")
def tiny_graph():
    torch.manual_seed(0)
    return tensor_groups(Tiny(), torch.randn(3, 1, 6, 6), batch_size=B)


def test_tiny_tensors_and_groups_match_the_hand_count(tiny_graph) -> None:
    got = {t.name: (t.size, tiny_graph.groups[t.group].name) for t in tiny_graph.tensors}
    assert got == TINY
    sizes = {g.name: g.size for g in tiny_graph.groups}
    hand = {}
    for name, (size, group) in TINY.items():
        if not name.endswith(".GP"):
            hand[group] = hand.get(group, 0) + size
    assert sizes == hand
    assert [o.name for o in tiny_graph.ops] == ["input", "conv", "bn", "relu", "fc"]


@pytest.mark.parametrize(
    ("r", "demoted"),
    [(0.0, []), (0.5, ["conv"]), (0.9, ["conv", "input"]), (1.0, ["conv", "input", "fc"])],
)
def test_ratio_is_the_low_share_of_hand_summed_sizes(tiny_graph, r, demoted) -> None:
    a = assign(tiny_graph, r, "ours")
    assert list(a.demoted) == demoted
    total = sum(s for s, _ in TINY.values())
    low = sum(s for n, (s, g) in TINY.items() if g in demoted and not n.endswith(".GP"))
    assert a.graph.total_size == total and a.low_size == low
    assert a.ratio == low / total
    assert a.ratio >= r or r == 1.0  # r = 1 demotes every group; GP stays high
    # the repository's formula: (bits_all_high - bits_now) / bits_all_high * 2
    bits_now = 16 * (total - low) + 8 * low
    assert a.total_bits == bits_now and a.memory_bits == 8 * low
    assert a.ratio == pytest.approx((16 * total - bits_now) / (16 * total) * 2, rel=0, abs=0)
    for n, (_, g) in TINY.items():
        kind = n.rsplit(".", 1)[1]
        want = {"Y": L_, "P": L_, "GY": G_, "GP": H_}[kind] if g in demoted else H_
        assert a.formats[n] == want, n


def test_config_of_the_conv_group(tiny_graph) -> None:
    a = assign(tiny_graph, 0.5, "ours")  # the conv group: conv's Y/GY, fc's input and weight
    assert dict(a.config.overrides) == {
        "conv": {"output": L_, "grad_act": G_},
        "fc": {"weight": L_, "act": L_},
    }
    assert {
        getattr(a.config, r) for r in ("weight", "act", "output", "grad_act", "grad_weight")
    } == {H_}
    model = a.apply(Tiny())
    assert model.conv.lowbit_layer_config.output == L_
    assert model.fc.lowbit_layer_config.act == L_
    assert model.fc.lowbit_layer_config.grad_weight == H_
    rows = a.table()
    assert {r["tensor"]: (r["size"], r["group"]) for r in rows} == TINY
    assert {r["tensor"]: r["format"] for r in rows} == a.formats


def test_trace_leaves_the_model_alone_and_sees_quantized_models_alike() -> None:
    torch.manual_seed(0)
    m = build_model("resnet-small", in_channels=1, num_classes=10, image_size=8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(4, 1, 8, 8)
    g = tensor_groups(m, x, batch_size=32)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    a = assign(g, 0.5)
    a.apply(m)
    g2 = tensor_groups(m, x, batch_size=32)
    assert [(t.name, t.size, t.group) for t in g2.tensors] == [
        (t.name, t.size, t.group) for t in g.tensors
    ]


# ---- ResNet ordering --------------------------------------------------------------------------
def resnet_small_groups(bs: int, hw: int) -> dict[str, int]:
    """Group sizes of resnet-small (widths 16/32/64, one block per stage) by hand: Y and GY of
    every op in the group, plus the parameters of the ops its output feeds."""
    s0, s1, s2 = 16 * hw * hw, 32 * (hw // 2) ** 2, 64 * (hw // 4) ** 2

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k

    def bn(c: int) -> int:
        return 2 * c

    return {
        "input": bs * hw * hw + conv(1, 16, 3),  # the batch (no gradient), the stem's weight
        "stem.0": 2 * 3 * bs * s0 + bn(16) + conv(16, 16, 3),  # conv, bn, relu
        "stages.0.0.conv1": 2 * 3 * bs * s0 + bn(16) + conv(16, 16, 3),
        "stages.0.0.conv2": 2 * 4 * bs * s0 + bn(16) + conv(16, 32, 3) + conv(16, 32, 1),
        "stages.1.0.conv1": 2 * 3 * bs * s1 + bn(32) + conv(32, 32, 3),
        "stages.1.0.conv2": 2 * 2 * bs * s1 + bn(32),  # conv, bn (the add runs later)
        "stages.1.0.shortcut.0": 2 * 4 * bs * s1 + bn(32) + conv(32, 64, 3) + conv(32, 64, 1),
        "stages.2.0.conv1": 2 * 3 * bs * s2 + bn(64) + conv(64, 64, 3),
        "stages.2.0.conv2": 2 * 2 * bs * s2 + bn(64),
        "stages.2.0.shortcut.0": 2 * 4 * bs * s2 + bn(64) + 2 * bs * 64 + 64 * 10 + 10,
        "fc": 2 * bs * 10,
    }


@pytest.fixture(scope="module")
def resnet_graph():
    torch.manual_seed(0)
    m = build_model("resnet-small", in_channels=1, num_classes=10, image_size=28)
    return tensor_groups(m, torch.randn(2, 1, 28, 28), batch_size=128)


def test_resnet_group_sizes_and_order(resnet_graph) -> None:
    hand = resnet_small_groups(128, 28)
    assert {g.name: g.size for g in resnet_graph.groups} == hand
    names = [g.name for g in resnet_graph.groups]
    expect_dec = sorted(names, key=lambda n: (-hand[n], names.index(n)))
    assert [names[i] for i in group_order(resnet_graph, "ours")] == expect_dec
    expect_inc = sorted(names, key=lambda n: (hand[n], names.index(n)))
    assert [names[i] for i in group_order(resnet_graph, "smallest_first")] == expect_inc
    # the first groups demoted are the early 28x28 maps
    assert expect_dec[:3] == ["stages.0.0.conv2", "stem.0", "stages.0.0.conv1"]


def test_small_r_demotes_one_or_two_groups(resnet_graph) -> None:
    hand = resnet_small_groups(128, 28)
    a = assign(resnet_graph, 0.1, "ours")
    assert list(a.demoted) == ["stages.0.0.conv2"]
    a2 = assign(resnet_graph, 0.25, "ours")
    assert list(a2.demoted) == ["stages.0.0.conv2", "stem.0"]
    # r of one demoted group: its Y/GY/P over every tensor of the step; every parameter is
    # counted once in some group (P) and once more as its gradient (GP, never in a group)
    params = sum(
        p.numel()
        for p in build_model(
            "resnet-small", in_channels=1, num_classes=10, image_size=28
        ).parameters()
    )
    total = sum(hand.values()) + params
    assert resnet_graph.total_size == total
    assert a.ratio == hand["stages.0.0.conv2"] / total


def test_smallest_first_and_random_need_more_groups(resnet_graph) -> None:
    ours = assign(resnet_graph, 0.1, "ours")
    inc = assign(resnet_graph, 0.1, "smallest_first")
    assert len(inc.demoted) > len(ours.demoted) and inc.ratio >= 0.1
    order = list(range(len(resnet_graph.groups)))
    random.Random(7).shuffle(order)
    assert group_order(resnet_graph, "random", seed=7) == order
    r1, r2 = assign(resnet_graph, 0.5, "random", seed=7), assign(resnet_graph, 0.5, "random", 7)
    assert r1.formats == r2.formats and r1.ratio >= 0.5
    every = assign(resnet_graph, 1.0, "ours")
    assert len(every.demoted) == len(resnet_graph.groups)
    assert all(
        every.formats[t.name] == (H_ if t.kind == "GP" else G_ if t.kind == "GY" else L_)
        for t in resnet_graph.tensors
    )


def test_pi_op_is_hfp8_without_first_and_last_layer(resnet_graph) -> None:
    a = assign(resnet_graph, None, "pi_op")
    layers = resnet_graph.gemm_modules()
    assert layers[0] == "stem.0" and layers[-1] == "fc"
    for name in layers:
        f = a.layer_formats(name)
        if name in ("stem.0", "fc"):
            assert set(f.values()) == {H_}, name
        else:
            assert f == {
                "weight": L_,
                "act": L_,
                "output": H_,
                "grad_act": G_,
                "grad_weight": H_,
            }, name
    bs, s0, s1, s2 = 128, 16 * 784, 32 * 196, 64 * 49
    p_mid = (
        2 * 16 * 16 * 9 + 32 * 16 * 9 + 32 * 32 * 9 + 32 * 16 + 64 * 32 * 9 + 64 * 64 * 9 + 64 * 32
    )
    gy_mid = bs * (2 * s0 + 3 * s1 + 3 * s2)
    x_mid = bs * (3 * s0 + 2 * s1 + s2)  # the ReLU outputs that feed the middle GEMMs
    assert a.low_size == p_mid + gy_mid + x_mid


def test_lee_assignment_and_bad_arguments() -> None:
    torch.manual_seed(0)
    a = lee_assignment(Tiny(), torch.randn(2, 1, 6, 6), r=0.5, batch_size=B)
    assert list(a.demoted) == ["conv"] and a.graph.batch_size == B
    g = a.graph
    with pytest.raises(ValueError, match="accepted: ours"):
        assign(g, 0.5, "largest")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        assign(g, 1.5)
    with pytest.raises(ValueError, match="needs r"):
        assign(g, None, "ours")
    with pytest.raises(ValueError, match="fixed assignment"):
        assign(g, 0.5, "pi_op")
    assert assign(g, 0.5, "topr_dec").formats == a.formats  # the repository's name
    with pytest.raises(ValueError, match="batch_size"):
        tensor_groups(Tiny(), torch.randn(2, 1, 6, 6), batch_size=0)
    with pytest.raises(ValueError, match="no Conv/Linear"):
        tensor_groups(nn.Sequential(nn.ReLU()), torch.randn(2, 3))
