"""Multi-precision training on digits: per-width state, HASB, baselines, BN recalibration."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from _dr_tiny import TinyNet  # noqa: E402

from lowbit.methods import double_rounding as dr  # noqa: E402


def test_convert_keeps_first_and_last_layers_in_full_precision():
    m = dr.convert(TinyNet(), (8, 4))
    assert type(m.stem[0]) is torch.nn.Conv2d and type(m.stem[1]) is torch.nn.BatchNorm2d
    assert type(m.fc) is torch.nn.Linear
    assert isinstance(m.block.conv1, dr.DRConv2d) and isinstance(m.block.conv2, dr.DRConv2d)
    assert m.block.bn1.source == "block.conv1" and m.block.bn2.source == "block.conv2"
    assert m.dr_bits == (8, 4)
    base = TinyNet()
    conv = dr.convert(base, (8, 4)).block.conv1
    assert torch.equal(conv.weight, base.block.conv1.weight)  # a copy, not a re-init
    assert not any(isinstance(x, dr.DRConv2d) for x in base.modules())  # not in place


def test_set_bits_validates_configs():
    m = dr.convert(TinyNet(), (8, 4))
    with pytest.raises(
        ValueError,
        match=r"bits=6 was not trained for this layer; accepted: "
        r"\(8, 4\)",
    ):
        dr.set_bits(m, 6)
    with pytest.raises(ValueError, match=r"missing: \['block.conv2'\]"):
        dr.set_bits(m, {"block.conv1": 4})
    with pytest.raises(ValueError, match=r"unknown: \['nope'\]"):
        dr.set_bits(m, {"block.conv1": 4, "block.conv2": 4, "nope": 8})
    with pytest.raises(TypeError, match="bits must be an int or a dict"):
        dr.set_bits(m, 4.0)
    dr.set_bits(m, {"block.conv1": 4, "block.conv2": 4})
    assert not m.block.bn1.mixed  # all equal: the uniform configuration
    dr.set_bits(m, {"block.conv1": 4, "block.conv2": 8})
    assert m.block.bn1.mixed and m.block.bn1.bits == 4 and m.block.bn2.bits == 8


def test_multi_precision_training_beats_floor_shift_and_stays_near_fp(trained, digits):
    fp, res = trained
    acc = res.accuracy
    assert set(acc) == {8, 6, 4, 2}
    # digits, 1400 training images, a 12-channel net: FP 0.952, DR 8/6/4 bits >= 0.94, 2: 0.887
    assert fp.accuracy["fp"] > 0.85
    for b in (8, 6, 4):
        assert acc[b] >= fp.accuracy["fp"] - 0.02, b
    assert acc[2] >= fp.accuracy["fp"] - 0.08  # w2a2 in a 12-channel net
    table = dr.evaluate_widths(res.model, digits[1])
    assert table["round"] == acc and table["floor"][8] == acc[8]
    for b in (4, 2):  # truncation biases every code downwards: far worse without retraining
        assert table["floor"][b] < acc[b] - 0.3, b
    assert [row["epoch"] for row in res.history] == [1, 2, 3]
    assert res.history[-1]["loss"][2] < 1.0


def test_a_step_at_one_width_leaves_the_other_widths_state_alone(trained, digits):
    _, res = trained
    model = copy.deepcopy(res.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(dr.param_groups(model, 1e-2), lr=1e-2)
    x, y = next(iter(digits[0]))
    dr.set_bits(model, 2)
    model.train()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for k in changed:  # width 2's slots, shared weights/scales, and the full-precision layers
        assert not any(f".{b}" in k or k.endswith(f"_{b}") for b in (8, 6, 4)), k
    assert "block.bn1.running_mean_2" in changed and "block.bn1.weight.2" in changed
    assert "block.conv1.weight_quant.scale" in changed and "block.conv1.weight" in changed
    assert "block.bn1.running_mean_mixed" not in changed


def test_hasb_switches_after_warmup(trained, digits):
    fp, _ = trained
    res = dr.train(
        copy.deepcopy(fp.model),
        digits[0],
        digits[1],
        bits=(8, 4, 2),
        epochs=2,
        hasb=True,
        hasb_warmup=1,
        hasb_probes=2,
        hasb_batches=1,
        progress=False,
    )
    assert set(res.traces) == {"block.conv1", "block.conv2"}
    assert res.history[0]["mixed_steps"] == 0
    n = 3 * len(digits[0])  # steps of epoch 2; switch probability 0.5 * 2 / 2 = 0.5
    assert abs(res.history[1]["mixed_steps"] - n / 2) <= 5 * (n / 4) ** 0.5
    bn = res.model.block.bn1
    assert not torch.equal(bn.running_mean_mixed, bn.running_mean_8)
    assert res.config["hasb"] and res.config["hasb_warmup"] == 1
    assert res.accuracy[8] > 0.8


def test_recalibrate_bn_sets_the_mean_of_the_batch_statistics(trained, digits):
    _, res = trained
    model = copy.deepcopy(res.model)
    dr.set_bits(model, {"block.conv1": 2, "block.conv2": 8})
    seen = []
    hook = model.block.bn2.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    stem_before = model.stem[1].running_mean.clone()
    uniform_before = model.block.bn2.running_mean_8.clone()
    model.eval()
    used = dr.recalibrate_bn(model, digits[0], n_batches=3)
    hook.remove()
    assert used == 3 and len(seen) == 3
    means = torch.stack([t.double().mean((0, 2, 3)) for t in seen])
    vars_ = torch.stack([t.double().var((0, 2, 3), unbiased=True) for t in seen])
    torch.testing.assert_close(
        model.block.bn2.running_mean_mixed.double(), means.mean(0), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        model.block.bn2.running_var_mixed.double(), vars_.mean(0), rtol=1e-5, atol=1e-6
    )
    assert torch.equal(model.stem[1].running_mean, stem_before)
    assert torch.equal(model.block.bn2.running_mean_8, uniform_before)
    assert not any(m.training for m in model.modules())  # the mode is restored everywhere
    dr.set_bits(model, 8)
    assert dr.recalibrate_bn(model, digits[0]) == 0  # uniform: nothing to recalibrate


def test_independent_baseline_trains_one_model_per_width(trained, digits):
    fp, _ = trained
    res = dr.train_independent(
        fp.model, digits[0], digits[1], bits=(8, 2), epochs=1, lr=1e-3, progress=False
    )
    assert set(res.accuracy) == {8, 2} and set(res.models) == {8, 2}
    assert res.models[2].dr_bits == (2,) and res.models[8].dr_bits == (8,)
    assert res.accuracy[8] > 0.8
    assert not dr.dr_layers(fp.model)  # the float model itself is untouched


def test_bad_arguments():
    with pytest.raises(ValueError, match="epochs=0; accepted: an int >= 1"):
        dr.train(TinyNet(), [], epochs=0)
    with pytest.raises(ValueError, match="lr=-1"):
        dr.train_fp(TinyNet(), [], lr=-1)
    m = dr.convert(TinyNet(), (8, 4))
    with pytest.raises(ValueError, match="converted for"):
        dr.train(m, [], bits=(8, 2))
    with pytest.raises(ValueError, match="already converted"):
        dr.convert(m)
    with pytest.raises(ValueError, match="repeats a width"):
        dr.convert(TinyNet(), (8, 8))
    with pytest.raises(ValueError, match="train_fp takes a float model"):
        dr.train_fp(m, [])
