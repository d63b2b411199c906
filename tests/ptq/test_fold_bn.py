"""BatchNorm folding: eval outputs kept up to rounding, with error bounds derived per layer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.ptq import fold_bn
from lowbit.ptq.bn_folding import find_bn_pairs


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            if m.weight is not None:
                m.weight.data.copy_(torch.randn(n, generator=g))
                m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_single_conv_bn_within_derived_rounding_bound(dtype: torch.dtype, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
    model = _randomize_bn(nn.Sequential(conv, nn.BatchNorm2d(8))).to(dtype)
    bn = model[1]
    x = torch.randn(4, 3, 6, 6, dtype=dtype)
    with torch.no_grad():
        want = model(x)
        folded = fold_bn(copy.deepcopy(model))
        got = folded(x)
    assert isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    # Both sides approximate inv * (sum w x + b - mean) + beta. Each is a K-term dot product
    # plus a few operations, each rounding with relative error <= u; so each differs from the
    # exact value by at most (K + 4) u * M with M the same expression in absolute values.
    u = torch.finfo(dtype).eps / 2
    k = 3 * 3 * 3
    inv = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double().reshape(1, -1, 1, 1)
    b = conv.bias.double().abs() if bias else torch.zeros(8, dtype=torch.float64)
    mag = F.conv2d(x.double().abs(), conv.weight.double().abs(), padding=1)
    mag = inv.abs() * (
        mag + (b + bn.running_mean.double().abs()).reshape(1, -1, 1, 1)
    ) + bn.bias.double().abs().reshape(1, -1, 1, 1)
    bound = 2 * (k + 4) * u * mag
    err = (got.double() - want.double()).abs()
    assert (err <= bound).all()
    assert err.max() > 0 or dtype == torch.float64  # float32 folding does round


class _Block(nn.Module):
    """Post-activation residual block with attribute pairs conv1/bn1, conv2/bn2 and a
    shortcut Sequential(conv, bn)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _net() -> nn.Module:
    torch.manual_seed(1)
    return _randomize_bn(
        nn.Sequential(
            nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
            _Block(8, 16),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Sequential(nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU()),
            nn.Linear(12, 5),
        )
    )


def test_network_folds_sequential_and_attribute_pairs_exactly_in_float64() -> None:
    model = _net().double()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        folded = fold_bn(copy.deepcopy(model))
        got = folded(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert len(find_bn_pairs(model)) == 5
    # a layer's dot products of K terms round with relative error <= (K + 4) u on either side;
    # summed over the layers (the network's gains are about 1 here) that bounds the difference
    # relative to the output scale
    ks = [m.weight[0].numel() + 4 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    u64, u32 = 2.0**-53, 2.0**-24
    assert (got - want).abs().max() <= sum(ks) * u64 * want.abs().max()
    # a float32 model folds to float32 accuracy (its own rounding and the fold's)
    m32 = copy.deepcopy(model).float()
    with torch.no_grad():
        got32 = fold_bn(m32)(x.float()).double()
    assert (got32 - want).abs().max() <= sum(ks) * u32 * want.abs().max()


def test_attr_pairs_off_and_unfoldable_bns_are_left_alone() -> None:
    model = _net()
    fold_bn(model, attr_pairs=False)
    block = model[1]
    assert isinstance(block.bn1, nn.BatchNorm2d) and isinstance(block.bn2, nn.BatchNorm2d)
    assert isinstance(block.shortcut[1], nn.Identity)
    no_stats = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    fold_bn(no_stats)
    assert isinstance(no_stats[1], nn.BatchNorm2d)
    mismatch = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm1d(2))  # wrong dimension
    fold_bn(mismatch)
    assert isinstance(mismatch[1], nn.BatchNorm1d)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        fold_bn("model")


def test_lowbit_resnet_small_folds_every_batchnorm() -> None:
    models = pytest.importorskip("lowbit.models")
    model = models.build_model("resnet-small", in_channels=1, num_classes=10, image_size=8)
    model = _randomize_bn(model, seed=3).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        folded = fold_bn(copy.deepcopy(model))
        got = folded(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    ks = [m.weight[0].numel() + 4 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert (got - want).abs().max() <= sum(ks) * 2.0**-53 * want.abs().max()
