"""PTQ on a small CNN trained on sklearn digits: int8 loses <= 1 pp; layers bit-exact."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import lowbit as lb
from lowbit.ptq import PTQConfig, PTQConv2d, PTQLayer, PTQLinear, calibrate, fold_bn, report
from lowbit.ptq.fake_quant import fake_quant_int


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def _cnn() -> nn.Module:
    """Stem Sequential, a residual block (attribute pairs), a strided conv, a linear head."""

    def cbr(i: int, o: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()
        )

    return nn.Sequential(
        cbr(1, 16),
        _Block(16),
        cbr(16, 32, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def digits() -> dict:
    """A CNN trained for ~1-2 s on 80 % of digits; the rest is the test set."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    tr, te = perm[:1437], perm[1437:]
    x = (x - x[tr].mean()) / x[tr].std()
    torch.manual_seed(0)
    model = _cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        model.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    torch.set_num_threads(n_threads)
    calib = [(x[tr[i : i + 128]], y[tr[i : i + 128]]) for i in range(0, 512, 128)]
    return dict(model=model, calib=calib, x_test=x[te], y_test=y[te])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def test_float_model_is_trained(digits: dict) -> None:
    assert _accuracy(digits["model"], digits["x_test"], digits["y_test"]) >= 0.95


@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_int8_weight_and_activation_per_channel_loses_at_most_1pp(
    digits: dict, method: str
) -> None:
    model, xt, yt = digits["model"], digits["x_test"], digits["y_test"]
    q = calibrate(
        model, digits["calib"], weight="int8", act="int8", method=method, granularity="per_channel"
    )
    acc_fp, acc_q = _accuracy(model, xt, yt), _accuracy(q, xt, yt)
    assert acc_q >= acc_fp - 0.01
    layers = [m for m in q.modules() if isinstance(m, PTQLayer)]
    assert len(layers) == 5 and all(m.act_scale is not None for m in layers)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    # the report agrees with an independent count
    r = report(model, q, [(xt, yt)])
    assert r.samples == len(yt)
    assert r.accuracy_fp == acc_fp and r.accuracy_q == acc_q
    with torch.no_grad():
        agree = float((model(xt).argmax(1) == q(xt).argmax(1)).double().mean())
    assert r.agreement == agree
    assert set(r.sqnr_db) == {n for n, m in q.named_modules() if isinstance(m, PTQLayer)}
    assert all(20 < v < math.inf for v in r.sqnr_db.values())  # int8: tens of dB
    assert "| agreement |" in r.to_markdown()


def test_minmax_calibration_scales_and_layers_are_bit_exact(digits: dict) -> None:
    model, calib = digits["model"], digits["calib"]
    q = calibrate(model, calib, method="minmax", num_batches=3)
    ref = fold_bn(copy.deepcopy(model).eval())
    # independent activation statistics: the folded float model's layer inputs
    amax: dict[str, float] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda _m, a, n=n: amax.__setitem__(n, max(amax.get(n, 0.0), float(a[0].abs().max())))
        )
        for n, m in ref.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        for xb, _ in calib[:3]:
            ref(xb)
    for h in hooks:
        h.remove()
    qmods = dict(q.named_modules())
    for name, m in ref.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        qm = qmods[name]
        assert isinstance(qm, PTQConv2d if isinstance(m, nn.Conv2d) else PTQLinear)
        assert float(qm.act_scale) == float(np.float32(amax[name] / 127))
        w2 = m.weight.detach().reshape(m.weight.shape[0], -1)
        s = (w2.abs().amax(1).double() / 127).float()
        want_w = lb.quantize_int(w2, 8, granularity="channel", axis=0, scale=s.double().numpy())
        assert torch.equal(qm.weight.detach().reshape(w2.shape), want_w)
        assert torch.equal(qm.weight_scale, s)
        assert torch.equal(qm.bias, m.bias)
        # the layer's forward: quantized input, then the float op with the quantized weight
        xin = torch.randn(
            2, *((m.in_features,) if isinstance(m, nn.Linear) else (m.in_channels, 5, 5))
        )
        xq = lb.quantize_int(xin, 8, scale=float(qm.act_scale))
        want = (
            F.linear(xq, qm.weight, qm.bias)
            if isinstance(m, nn.Linear)
            else F.conv2d(xq, qm.weight, qm.bias, m.stride, m.padding)
        )
        with torch.no_grad():
            assert torch.equal(qm(xin), want)


def test_num_batches_limits_the_passes(digits: dict) -> None:
    seen = []

    class Loader:
        def __iter__(self):
            for b in digits["calib"]:
                seen.append(1)
                yield b

    calibrate(digits["model"], Loader(), method="minmax", num_batches=2)
    assert len(seen) == 2
    seen.clear()
    calibrate(digits["model"], Loader(), method="percentile", num_batches=2)
    assert len(seen) == 4  # two passes


@pytest.mark.parametrize("method", ["percentile", "kl"])
def test_histogram_methods_quantize_every_layer_and_keep_accuracy(
    digits: dict, method: str
) -> None:
    model, xt, yt = digits["model"], digits["x_test"], digits["y_test"]
    q = calibrate(model, digits["calib"], method=method, percentile=99.9, num_batches=2)
    assert _accuracy(q, xt, yt) >= _accuracy(model, xt, yt) - 0.02
    mm = calibrate(model, digits["calib"], method="minmax", num_batches=2)
    for (_, a), (_, b) in zip(q.named_modules(), mm.named_modules(), strict=True):
        if isinstance(a, PTQLayer):
            assert 0 < float(a.act_scale) <= float(b.act_scale)  # clipping, never widening


def test_weight_only_int4_per_group(digits: dict) -> None:
    model, xt, yt = digits["model"], digits["x_test"], digits["y_test"]
    q = calibrate(
        model, None, weight="int4", weight_only=True, granularity="per_group", group_size=16
    )
    ref = fold_bn(copy.deepcopy(model).eval())
    qmods = dict(q.named_modules())
    for name, m in ref.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            qm = qmods[name]
            assert qm.act_scale is None and qm.weight_bits == 4
            w2 = m.weight.detach().reshape(m.weight.shape[0], -1)
            ng = -(-w2.shape[1] // 16)
            assert qm.weight_scale.shape == (w2.shape[0], ng)
            want = lb.quantize_int(
                w2,
                4,
                granularity="group",
                axis=1,
                group_size=16,
                scale=qm.weight_scale.double().numpy(),
            )
            assert torch.equal(qm.weight.detach().reshape(w2.shape), want)
            s = qm.weight_scale.double().repeat_interleave(16, 1)[:, : w2.shape[1]]
            codes = (want.double() / s).round()
            assert codes.min() >= -8 and codes.max() <= 7
    # 4-bit weights in groups of 16 keep this small model within 2 pp
    assert _accuracy(q, xt, yt) >= _accuracy(model, xt, yt) - 0.02


def test_original_model_untouched_and_inplace_converts_it(digits: dict) -> None:
    model = digits["model"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = calibrate(model, digits["calib"], num_batches=1)
    assert q is not model
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert q.lowbit_ptq_config == PTQConfig(num_batches=1)
    m2 = copy.deepcopy(model)
    assert calibrate(m2, digits["calib"], num_batches=1, inplace=True) is m2
    assert isinstance(m2[-1], PTQLinear)


def test_fake_quant_in_the_model_matches_activation_quantizer(digits: dict) -> None:
    """The first layer's input is the image: its quantized value is fake_quant_int's."""
    q = calibrate(digits["model"], digits["calib"], num_batches=1)
    first = q[0][0]
    x = digits["x_test"][:4]
    assert torch.equal(first.quantize_input(x), fake_quant_int(x, first.act_scale, 8))
    assert torch.equal(first.quantize_input(x), lb.quantize_int(x, 8, scale=float(first.act_scale)))


def test_config_round_trips_json() -> None:
    cfg = PTQConfig(
        weight="int4",
        act=None,
        method="kl",
        granularity="per_group",
        group_size=32,
        percentile=99.0,
        num_batches=3,
        fold_bn=False,
    )
    assert PTQConfig.from_json(cfg.to_json()) == cfg
    assert PTQConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown PTQConfig keys"):
        PTQConfig.from_dict({"bits": 8})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="entropy"), "method='entropy'.*accepted"),
        (dict(weight="int99"), "weight='int99'"),
        (dict(weight="e4m3"), "weight='e4m3' is not supported.*int2"),
        (dict(act="fp17"), "act='fp17'"),
        (dict(granularity="per_row"), "granularity='per_row'.*per_channel"),
        (dict(group_size=16), "group_size=16 needs granularity='per_group'"),
        (dict(granularity="per_group", group_size=0), "group_size"),
        (dict(num_batches=0), "num_batches"),
        (dict(num_batches=-2), "num_batches"),
        (dict(method="percentile", percentile=0.0), r"percentile=0.0.*\(0, 100\]"),
        (dict(method="percentile", percentile=100.5), "percentile=100.5"),
    ],
)
def test_bad_inputs_raise_clear_errors(digits: dict, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calibrate(digits["model"], digits["calib"], **kw)


def test_bad_models_and_loaders_raise(digits: dict) -> None:
    with pytest.raises(ValueError, match="no batches"):
        calibrate(digits["model"], [])
    with pytest.raises(ValueError, match="loader is needed"):
        calibrate(digits["model"], None)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        calibrate(nn.Sequential(nn.ReLU()), digits["calib"])
    with pytest.raises(TypeError, match="batches must be tensors"):
        calibrate(digits["model"], [("a", "b")])
    with pytest.raises(ValueError, match="num_batches"):
        report(digits["model"], digits["model"], digits["calib"], num_batches=0)


def test_lowbit_cnn_small_int8(digits: dict) -> None:
    """The same PTQ on lowbit.models' cnn-small (random weights, BN statistics from data)."""
    models = pytest.importorskip("lowbit.models")
    torch.manual_seed(0)
    model = models.build_model("cnn-small", in_channels=1, num_classes=10, image_size=8)
    model.train()
    with torch.no_grad():
        for xb, _ in digits["calib"]:
            model(xb)  # running statistics
    model.eval()
    q = calibrate(model, digits["calib"], method="minmax")
    r = report(model, q, digits["calib"])
    assert sum(isinstance(m, PTQLayer) for m in q.modules()) == 3
    assert r.agreement >= 0.9 and all(v > 20 for v in r.sqnr_db.values())
