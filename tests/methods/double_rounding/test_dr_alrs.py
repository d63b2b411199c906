"""ALRS: the per-width learning-rate factors of the note, and what they do to an Adam step."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from _dr_tiny import TinyNet  # noqa: E402

from lowbit.methods import double_rounding as dr  # noqa: E402

NOTE_TABLE = {8: 1.0, 7: 0.5, 6: 0.1, 5: 0.05, 4: 0.01, 3: 0.005, 2: 0.001}


def test_factors_match_the_note_table():
    for bits, want in NOTE_TABLE.items():
        assert dr.alrs_factor(bits) == pytest.approx(want, rel=1e-15), bits
    # relative to h, not to 8: h = 6 gives 6 -> 1, 5 -> 0.5, 4 -> 0.1
    assert [dr.alrs_factor(b, h=6) for b in (6, 5, 4)] == pytest.approx([1, 0.5, 0.1])
    with pytest.raises(ValueError, match="bits=1 is out of range"):
        dr.alrs_factor(1)


def test_param_groups_partition_and_weight_decay():
    model = dr.convert(TinyNet(), (8, 4))
    groups = dr.param_groups(model, lr=1e-3, weight_decay=5e-5)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each exactly once
    kinds = {g["kind"] for g in groups}
    assert kinds == {"weights", "scale", "other"}
    scales = {g["layer"]: g for g in groups if g["kind"] == "scale"}
    assert set(scales) == {"block.conv1", "block.conv2"}
    for g in groups:
        assert g["weight_decay"] == (5e-5 if g["kind"] == "weights" else 0.0)
    weights = {id(p) for g in groups if g["kind"] == "weights" for p in g["params"]}
    assert id(model.stem[0].weight) in weights and id(model.fc.bias) in weights
    assert id(model.block.conv1.weight) in weights
    assert id(model.block.bn1.weight["8"]) not in weights
    assert id(model.block.conv1.act_quant.scales["4"]) not in weights


def _one_step(config, alrs, lr=1e-3):
    torch.manual_seed(0)
    model = dr.convert(TinyNet(), (8, 6, 4, 2)).double()
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    for b in (8, 6, 4, 2):  # initialise every activation scale
        dr.set_bits(model, b)
        model(x)
    # eps far below |g|: the first Adam update is then lr * sign(g) to ~1e-9 relative
    opt = torch.optim.Adam(dr.param_groups(model, lr), lr=lr, eps=1e-18)
    before = {n: m.weight_quant.scale.detach().clone() for n, m in dr.dr_layers(model).items()}
    act_before = model.block.conv1.act_quant.scales["2"].detach().clone()
    dr.set_bits(model, config)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    dr.set_learning_rates(opt, 1.0, config, alrs=alrs)
    opt.step()
    steps = {
        n: (m.weight_quant.scale.detach() - before[n]).abs() for n, m in dr.dr_layers(model).items()
    }
    return steps, (model.block.conv1.act_quant.scales["2"].detach() - act_before).abs()


@pytest.mark.parametrize("bits", [8, 6, 4, 2])
def test_first_adam_step_of_the_scales_is_lr_times_factor(bits):
    # Adam's first update is lr * g / (|g| + eps): the step size is the learning rate.
    lr = 1e-3
    steps, _ = _one_step(bits, alrs=True, lr=lr)
    for n, d in steps.items():
        moved = d[d > 0]
        assert moved.numel() > 0, n
        torch.testing.assert_close(
            moved, torch.full_like(moved, lr * NOTE_TABLE[bits]), rtol=1e-7, atol=0
        )
    steps, _ = _one_step(bits, alrs=False, lr=lr)
    for d in steps.values():
        moved = d[d > 0]
        torch.testing.assert_close(moved, torch.full_like(moved, lr), rtol=1e-7, atol=0)


def test_alrs_leaves_activation_scales_alone_and_follows_a_mixed_config():
    lr = 1e-3
    config = {"block.conv1": 2, "block.conv2": 6}
    steps, act = _one_step(config, alrs=True, lr=lr)
    assert float(act) == pytest.approx(lr, rel=1e-7)  # width 2's activation scale, unscaled
    for n, d in steps.items():
        moved = d[d > 0]
        want = lr * NOTE_TABLE[config[n]]
        torch.testing.assert_close(moved, torch.full_like(moved, want), rtol=1e-7, atol=0)


def test_schedule_factor_multiplies_every_group():
    model = dr.convert(TinyNet(), (8, 4))
    opt = torch.optim.Adam(dr.param_groups(model, 2e-3), lr=2e-3)
    dr.set_learning_rates(opt, 0.25, 4, alrs=True)
    for g in opt.param_groups:
        want = 2e-3 * 0.25 * (0.01 if g["kind"] == "scale" else 1.0)
        assert g["lr"] == pytest.approx(want, rel=1e-15)
