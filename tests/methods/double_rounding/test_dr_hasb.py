"""HASB: Hutchinson traces against exact Hessians, and the bit-switching schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from lowbit.methods import double_rounding as dr  # noqa: E402
from lowbit.methods.double_rounding.hasb import all_sign_vectors  # noqa: E402


def _tiny_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2, bias=False)).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    return model, x, y


def _exact_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = theta[i : i + s.numel()].reshape(s)
            i += s.numel()
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_all_sign_vectors_give_the_exact_block_traces():
    model, x, y = _tiny_mlp()
    H = _exact_hessian(model, x, y)  # parameter order: 0.weight (4), 0.bias (2), 2.weight (4)
    groups = {"first": [model[0].weight, model[0].bias], "second": [model[2].weight]}
    loss = nn.functional.cross_entropy(model(x), y)
    got = dr.hutchinson_trace(loss, groups, probes=all_sign_vectors(10), chunk=256)
    d = torch.diagonal(H)
    assert got["first"] == pytest.approx(float(d[:6].sum()), rel=1e-12, abs=1e-14)
    assert got["second"] == pytest.approx(float(d[6:].sum()), rel=1e-12, abs=1e-14)
    assert abs(float(d[:6].sum())) > 1e-3  # a non-trivial Hessian


def test_random_probes_within_five_sigma_of_the_exact_trace():
    model, x, y = _tiny_mlp()
    H = _exact_hessian(model, x, y)
    groups = {"first": [model[0].weight, model[0].bias], "second": [model[2].weight]}
    loss = nn.functional.cross_entropy(model(x), y)
    P = 4000
    samples = dr.hutchinson_samples(loss, groups, n_probes=P, seed=7, chunk=1000)
    for name, idx in (("first", range(0, 6)), ("second", range(6, 10))):
        idx = list(idx)
        rest = [j for j in range(10) if j not in idx]
        # Var of Σ_{i∈l} v_i (Hv)_i: 4·H_ij² per pair inside the block, H_ij² per pair across
        var = sum(4 * float(H[i, j]) ** 2 for a, i in enumerate(idx) for j in idx[a + 1 :])
        var += sum(float(H[i, j]) ** 2 for i in idx for j in rest)
        exact = float(torch.diagonal(H)[idx].sum())
        assert abs(float(samples[name].mean()) - exact) <= 5 * math.sqrt(var / P) + 1e-12
        # the sample variance agrees with the formula (within sampling error of a variance)
        assert float(samples[name].var()) == pytest.approx(var, rel=0.15)


@pytest.mark.parametrize("bits", [8, 4])
def test_trace_through_the_quantizer_is_the_masked_hessian_of_the_quantized_weight(bits):
    torch.manual_seed(1)
    float_model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Tanh(), nn.Linear(2, 3)
    )
    model = dr.convert(float_model, (8, 4)).double().eval()
    mid = model[2]
    assert isinstance(mid, dr.DRLinear)
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    dr.set_bits(model, bits)
    model(x)  # decide the activation sign and initialise the scale
    loss = nn.functional.cross_entropy(model(x), y)
    got = dr.hutchinson_trace(loss, {"mid": [mid.weight]}, probes=all_sign_vectors(8), chunk=256)[
        "mid"
    ]

    with torch.no_grad():
        xq = mid.act_quant(torch.tanh(model[0](x)), bits)
        w_hat = mid.quantized_weight().detach()
        s = mid.weight_quant.step_scale().reshape(-1, 1)
        k = 8 - bits
        v = mid.weight.detach() / s
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        mask = (v >= -128) & (v <= 127) & (v / 2**k >= lo) & (v / 2**k <= hi)

    def f(w):
        return nn.functional.cross_entropy(
            model[4](torch.tanh(nn.functional.linear(xq, w, mid.bias.detach()))), y
        )

    H = torch.autograd.functional.hessian(f, w_hat)
    exact = float((torch.diagonal(H.reshape(8, 8)) * mask.reshape(-1).double()).sum())
    assert got == pytest.approx(exact, rel=1e-10, abs=1e-14)
    assert abs(exact) > 1e-4


def test_layer_traces_cover_every_layer_and_restore_state(trained, digits):
    _, res = trained
    model = res.model
    dr.set_bits(model, 4)
    model.train()
    t = dr.layer_traces(model, digits[1], n_batches=1, n_probes=4, seed=0)
    assert set(t) == set(dr.dr_layers(model))
    assert all(math.isfinite(v) for v in t.values())
    assert dr.get_bits(model) == dict.fromkeys(t, 4) and model.training
    again = dr.layer_traces(model, digits[1], n_batches=1, n_probes=4, seed=0)
    assert again == t  # the probes come from the seed


def test_switch_probability_schedule():
    s = dr.HASBSchedule({"a": 1.0, "b": 3.0}, (8, 6, 4, 2), epochs=20, warmup=10)
    assert [s.switch_probability(e) for e in (0, 9)] == [0.0, 0.0]
    assert s.switch_probability(10) == pytest.approx(0.5 * 11 / 20)
    assert s.switch_probability(19) == pytest.approx(0.5)


def test_sensitive_layers_draw_widths_in_proportion_to_b():
    traces = {"a": 0.1, "b": 5.0, "c": 0.2, "d": 4.0}  # mean 2.325: b and d are sensitive
    s = dr.HASBSchedule(traces, (8, 6, 4, 2), epochs=2, warmup=0, seed=3)
    assert set(s.sensitive) == {"b", "d"}
    n = 20000
    draws = [s.sample_config() for _ in range(n)]
    for layer in traces:
        counts = np.array([sum(d[layer] == b for d in draws) for b in (8, 6, 4, 2)])
        p = np.array([8, 6, 4, 2]) / 20 if layer in ("b", "d") else np.full(4, 0.25)
        want = dict(zip((8, 6, 4, 2), p, strict=True))
        assert s.width_probabilities(layer) == pytest.approx(want)
        sigma = np.sqrt(n * p * (1 - p))
        assert np.all(np.abs(counts - n * p) <= 5 * sigma), (layer, counts)


def test_step_bits_switches_with_the_scheduled_frequency():
    s = dr.HASBSchedule({"a": 1.0, "b": 2.0}, (8, 4), epochs=4, warmup=2, seed=0)
    assert all(s.step_bits(1, 8) == 8 for _ in range(200))  # warm-up: never
    n = 4000
    mixed = sum(isinstance(s.step_bits(3, 8), dict) for _ in range(n))
    p = 0.5 * 4 / 4
    assert abs(mixed - n * p) <= 5 * math.sqrt(n * p * (1 - p))
