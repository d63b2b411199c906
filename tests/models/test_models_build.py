"""build_model: names, output shapes, parameter counts from the architectures' formulas."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from lowbit.models import BasicBlock, build_model, list_models

NAMES = ["resnet-small", "cnn-small", "mlp", "vit-tiny"]  # any image size >= 8


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_list_models():
    assert list_models() == [*NAMES, "lenet5"]  # LeNet-5 needs images of at least 12x12


def test_unknown_name_lists_models():
    with pytest.raises(ValueError, match=r"'resnet50'.*resnet-small, cnn-small, mlp, vit-tiny"):
        build_model("resnet50", in_channels=1, num_classes=10, image_size=28)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("cin", "size"), [(1, 28), (1, 8), (3, 8)])
def test_output_shape(name, cin, size):
    torch.manual_seed(0)
    m = build_model(name, in_channels=cin, num_classes=7, image_size=size).eval()
    with torch.no_grad():
        out = m(torch.randn(3, cin, size, size))
    assert out.shape == (3, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_init_follows_manual_seed(name):
    def build(seed):
        torch.manual_seed(seed)
        return build_model(name, in_channels=1, num_classes=10, image_size=8).state_dict()

    a, b, c = build(1), build(1), build(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def resnet_count(cin, nc, widths, blocks):
    def conv_bn(i, o, k):
        return k * k * i * o + 2 * o  # conv without bias, BN weight + bias

    total = conv_bn(cin, widths[0], 3)
    prev = widths[0]
    for stage, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(n):
            i = prev if j == 0 else w
            total += conv_bn(i, w, 3) + conv_bn(w, w, 3)
            strided = stage > 0 and j == 0
            if i != w or strided:  # 1x1 conv + BN shortcut
                total += conv_bn(i, w, 1)
        prev = w
    return total + prev * nc + nc


@pytest.mark.parametrize(
    ("kw", "cin", "nc", "widths", "blocks"),
    [
        ({}, 1, 10, (16, 32, 64), (1, 1, 1)),
        ({"widths": (8, 16, 24), "blocks_per_stage": (2, 1, 3)}, 3, 5, (8, 16, 24), (2, 1, 3)),
        ({"blocks_per_stage": 2}, 1, 10, (16, 32, 64), (2, 2, 2)),
        ({"widths": (8, 8, 8, 8)}, 1, 10, (8, 8, 8, 8), (1, 1, 1, 1)),
    ],
)
def test_resnet_param_count(kw, cin, nc, widths, blocks):
    m = build_model("resnet-small", in_channels=cin, num_classes=nc, image_size=28, **kw)
    assert n_params(m) == resnet_count(cin, nc, widths, blocks)


def test_resnet_structure():
    m = build_model("resnet-small", in_channels=1, num_classes=10, image_size=28)
    assert isinstance(m.stem[0], nn.Conv2d) and m.stem[0].kernel_size == (3, 3)
    assert isinstance(m.stem[1], nn.BatchNorm2d) and isinstance(m.fc, nn.Linear)
    assert len(m.stages) == 3
    first, second = m.stages[0][0], m.stages[1][0]
    assert isinstance(first, BasicBlock) and isinstance(first.shortcut, nn.Identity)
    sc = second.shortcut
    assert isinstance(sc[0], nn.Conv2d) and sc[0].kernel_size == (1, 1) and sc[0].stride == (2, 2)
    assert isinstance(sc[1], nn.BatchNorm2d)
    # BasicBlock computes relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)) (eval: fixed BN)
    second.eval()
    x = torch.randn(2, 16, 14, 14)
    f = torch.relu
    want = f(second.bn2(second.conv2(f(second.bn1(second.conv1(x))))) + sc[1](sc[0](x)))
    assert torch.equal(second(x), want)


@pytest.mark.parametrize(("cin", "size", "nc"), [(1, 28, 10), (1, 8, 10), (3, 13, 4)])
def test_cnn_param_count(cin, size, nc):
    m = build_model("cnn-small", in_channels=cin, num_classes=nc, image_size=size)
    side = size // 4
    want = (9 * cin * 16 + 2 * 16) + (9 * 16 * 32 + 2 * 32) + (32 * side * side * nc + nc)
    assert n_params(m) == want
    if (cin, size, nc) == (1, 28, 10):
        assert 18_000 <= want <= 22_000  # the agreed "~20k"


@pytest.mark.parametrize("hidden", [(256, 128), (50,), ()])
def test_mlp_param_count(hidden):
    m = build_model("mlp", in_channels=1, num_classes=10, image_size=8, hidden=hidden)
    sizes = [64, *hidden, 10]
    assert n_params(m) == sum(a * b + b for a, b in itertools.pairwise(sizes))


def vit_count(cin, nc, size, patch, dim=64, depth=2, mlp=128):
    n_patches = (size // patch) ** 2
    block = (
        2 * (2 * dim)
        + (dim * 3 * dim + 3 * dim)
        + (dim * dim + dim)
        + (dim * mlp + mlp + mlp * dim + dim)
    )
    return (
        (cin * patch * patch * dim + dim)
        + n_patches * dim
        + depth * block
        + 2 * dim
        + (dim * nc + nc)
    )


@pytest.mark.parametrize(
    ("cin", "size", "kw", "patch", "dims"),
    [
        (1, 28, {}, 4, {}),
        (1, 8, {}, 2, {}),
        (3, 8, {"patch_size": 4}, 4, {}),
        (
            1,
            28,
            {"patch_size": 7, "dim": 32, "depth": 3, "heads": 2, "mlp_ratio": 4},
            7,
            {"dim": 32, "depth": 3, "mlp": 128},
        ),
    ],
)
def test_vit_param_count(cin, size, kw, patch, dims):
    m = build_model("vit-tiny", in_channels=cin, num_classes=10, image_size=size, **kw)
    assert m.patch_size == patch
    assert n_params(m) == vit_count(cin, 10, size, patch, **dims)


@pytest.mark.parametrize(
    ("name", "kw", "exc", "msg"),
    [
        ("vit-tiny", {"image_size": 28, "patch_size": 3}, ValueError, "multiple of patch_size"),
        ("vit-tiny", {"image_size": 8, "dim": 30}, ValueError, "divisible by heads"),
        ("cnn-small", {"image_size": 3}, ValueError, "at least 4"),
        ("resnet-small", {"image_size": 8, "widths": (8, 0, 8)}, ValueError, "widths"),
        ("resnet-small", {"image_size": 8, "blocks_per_stage": (1, 1)}, ValueError, "3 entries"),
        ("mlp", {"image_size": 0}, ValueError, "image_size=0"),
        ("mlp", {"image_size": 8, "depth": 2}, TypeError, "depth"),
    ],
)
def test_bad_options(name, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        build_model(name, in_channels=1, num_classes=10, **kw)
