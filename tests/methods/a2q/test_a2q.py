"""A2Q: the ℓ1 bound holds for the integers produced, on worst-case and exhaustive inputs, after
every optimizer step; round-to-nearest breaks it; the data-type bound equals brute force.

Oracles: exhaustive enumeration of small integer vectors (numpy int64), int_matmul with
``overflow="raise"`` (itself held against a Python-int oracle in tests/arith/test_intgemm.py)
and float64 matmuls of integer codes (exact: every sum is an integer far below 2**53).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import lowbit.nn as lbnn  # noqa: E402
from lowbit.arith import int_matmul  # noqa: E402
from lowbit.methods import a2q  # noqa: E402


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _all_vectors(k: int, lo: int, hi: int) -> np.ndarray:
    return np.array(list(itertools.product(range(lo, hi + 1), repeat=k)), dtype=np.int64)


def _min_acc_bits(sums: np.ndarray, symmetric: bool) -> int:
    """Smallest signed P holding every value of ``sums`` (symmetric: |sum| <= 2**(P-1) - 1)."""
    lo, hi = int(sums.min()), int(sums.max())
    if symmetric:
        hi = max(hi, -lo)
    p = 2
    while not (-(1 << (p - 1)) <= lo and hi <= (1 << (p - 1)) - 1):
        p += 1
    return p


# ---- bounds -------------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [True, False])
def test_datatype_bound_against_brute_force(signed):
    """Every K-vector of M-bit weights against every K-vector of N-bit inputs (K = 1..3).

    Signed inputs: the formula is the smallest accumulator that holds every dot product.
    Unsigned inputs: the formula bounds |x| by 2**N and |sum| symmetrically by 2**(P-1) - 1,
    so it is the brute force of that condition over inputs in [0, 2**N] and an upper bound of
    the true minimum (the extreme sum of unsigned inputs is negative, and -2**(P-1) fits).
    """
    for k, m, n in itertools.product((1, 2, 3), (2, 3), (1, 2, 3)):
        if signed and n == 1:
            continue
        qs = _all_vectors(k, *_range(m, True))
        lo_x, hi_x = _range(n, signed)

        def brute(hi_in: int, symmetric: bool, k=k, qs=qs, lo_x=lo_x) -> int:
            # K is the longest prefix: shorter prefixes are the K' < K cases
            return _min_acc_bits(qs @ _all_vectors(k, lo_x, hi_in).T, symmetric)

        want = a2q.datatype_acc_bits(k, n, m, signed)
        assert want == math.ceil(a2q.datatype_bound(k, n, m, signed))
        if signed:
            assert brute(hi_x, False) == want, (k, m, n)
        else:
            assert brute(hi_x + 1, True) == want, (k, m, n)
            assert brute(hi_x, False) <= want, (k, m, n)


def test_datatype_acc_bits_equals_ceiling_of_formula():
    for k, n, m, s in itertools.product(
        (1, 3, 9, 144, 576, 1568, 4096), (4, 8), (4, 8), (True, False)
    ):
        assert a2q.datatype_acc_bits(k, n, m, s) == math.ceil(a2q.datatype_bound(k, n, m, s))


@pytest.mark.parametrize("signed", [True, False])
def test_l1_budget_is_sufficient_and_tight(signed):
    """All q with ‖q‖₁ <= floor(T), all inputs: no partial sum leaves P bits. For signed
    inputs one more unit of ‖q‖₁ overflows (x = -2**(N-1) meets q = -(budget + 1))."""
    n, k = 3, 2
    lo_x, hi_x = _range(n, signed)
    xs = _all_vectors(k, lo_x, hi_x)
    for p in (4, 5, 6, 7):
        budget = a2q.l1_budget(p, n, signed)
        assert budget == math.floor(a2q.l1_bound(p, n, signed))
        assert a2q.acc_bits_for_l1(budget, n, signed) <= p
        qs = _all_vectors(k, -budget - 1, budget + 1)
        ok = qs[np.abs(qs).sum(1) <= budget]
        r = int_matmul(xs, ok.T.copy(), acc_bits=p, overflow="raise")
        assert r.max_abs <= (1 << (p - 1)) - 1
        if signed:
            bad = np.array([[-(budget + 1), 0]])
            with pytest.raises(OverflowError):
                int_matmul(xs, bad.T.copy(), acc_bits=p, overflow="raise")
            assert a2q.acc_bits_for_l1(budget + 1, n, signed) == p + 1


def test_worst_case_inputs_are_the_extremes():
    rng = np.random.default_rng(0)
    for signed in (True, False):
        q = rng.integers(-4, 4, size=(6, 3))
        xs = _all_vectors(3, *_range(3, signed))
        dots = q @ xs.T  # (6, all inputs)
        wc = a2q.worst_case_inputs(q, 3, signed)
        wdots = np.einsum("ck,ck->c", np.repeat(q, 2, axis=0), wc)
        assert np.array_equal(wdots[0::2], dots.max(1))
        assert np.array_equal(wdots[1::2], dots.min(1))


# ---- tiny models ------------------------------------------------------------------------------
class Tiny(nn.Module):
    """conv (signed inputs) -> ReLU -> linear (unsigned inputs)."""

    def __init__(self, k: int = 3, c: int = 4, side: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, c, k, padding=1)
        self.fc = nn.Linear(c * side * side, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _data(n: int = 64, seed: int = 0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) * 3 + x[:, 0, 0, 0]).gt(0).long() + 2 * (x[:, 0, 3, 3] > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _check_layer_bound(name, layer, p):
    q = layer.int_weight().numpy()
    n = layer.a2q_args.act_bits
    signed = layer.act_signed
    budget = a2q.l1_budget(p, n, signed)
    assert np.abs(q).sum(1).max() <= budget, name
    wc = a2q.worst_case_inputs(q, n, signed)
    r = int_matmul(wc, q.T.copy(), acc_bits=p, overflow="raise")  # raises on any overflow
    assert r.max_abs <= (1 << (p - 1)) - 1


@pytest.mark.parametrize("p", [9, 12, 16])
def test_bound_holds_after_every_optimizer_step(p):
    torch.manual_seed(p)
    model = lbnn.quantize_(Tiny(), a2q.a2q(acc_bits=p, weight_bits=4, act_bits=6))
    data = _data()
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=0.05)
    for step in range(12):
        x, y = data[step % len(data)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        a2q.clamp_(model)
        for name, layer in a2q.a2q_layers(model):
            wq = layer.weight_quant
            cap = wq.log_s.double() + math.log(a2q.l1_bound(p, 6, layer.act_signed))
            assert bool((wq.log_g.double() <= cap).all())
            _check_layer_bound(name, layer, p)
    assert model.conv.act_signed and not model.fc.act_signed  # raw input / after ReLU
    # the integer model on the data never overflows either
    for _, rep in [a2q.accuracy(model, data, integer=True)]:
        assert rep.total.overflow_steps == 0 and rep.total.wrong_outputs == 0
        assert rep.total.max_abs <= (1 << (p - 1)) - 1


def test_bound_without_clamp_and_exhaustive_inputs():
    """A 3-input layer, 2-bit unsigned inputs, P = 5 (budget 3): large steps with no clamp_
    (the forward pass enforces the bound), then every one of the 4**3 inputs."""
    torch.manual_seed(1)
    lin = lbnn.quantize_(
        nn.Linear(3, 8), a2q.a2q(acc_bits=5, weight_bits=3, act_bits=2, act_signed=False)
    )
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    xs = _all_vectors(3, 0, 3)
    for _ in range(10):
        opt.zero_grad()
        (-lin(torch.rand(32, 3) * 3).abs().sum()).backward()  # pushes |w| up
        opt.step()
        q = lin.int_weight().numpy()
        assert np.abs(q).sum(1).max() <= a2q.l1_budget(5, 2, False) == 3
        r = int_matmul(xs, q.T.copy(), acc_bits=5, overflow="raise")
        assert r.max_abs <= 15
    assert np.abs(q).sum(1).max() == 3  # the budget is used, not avoided


def test_round_to_nearest_violates_the_bound():
    """The classic bug: ‖w/s‖₁ <= T but rounding to nearest can round every 0.99 up to 1.
    16 weights of -1, 4-bit signed inputs, P = 8: T = 127/8, each |x_i| = T/16 ≈ 0.99."""
    for rounding, violates in (("trunc", False), ("nearest", True)):
        lin = nn.Linear(16, 1, bias=False)
        with torch.no_grad():
            lin.weight.fill_(-1.0)
        lin = lbnn.quantize_(
            lin, a2q.a2q(acc_bits=8, weight_bits=4, act_bits=4, act_signed=True, rounding=rounding)
        )
        q = lin.int_weight().numpy()
        l1 = int(np.abs(q).sum())
        assert (l1 > a2q.l1_budget(8, 4, True)) == violates, (rounding, l1)
        wc = a2q.worst_case_inputs(q, 4, True)
        r = int_matmul(wc, q.T.copy(), acc_bits=8, overflow="wrap")
        assert (r.overflow_count > 0) == violates
        if violates:  # 16 · (-1) · (-8) = 128 wraps to -128
            assert r.values.min() == -128 and r.max_abs == 128
    # random weights: nearest rounding breaks the budget in many channels, trunc in none
    torch.manual_seed(0)
    w = torch.randn(64, 48)
    counts = {}
    for rounding in ("trunc", "nearest"):
        lin = nn.Linear(48, 64)
        with torch.no_grad():
            lin.weight.copy_(w)
        lin = lbnn.quantize_(
            lin,
            a2q.a2q(acc_bits=12, weight_bits=4, act_bits=4, act_signed=False, rounding=rounding),
        )
        l1 = lin.int_weight().abs().sum(1)
        counts[rounding] = int((l1 > a2q.l1_budget(12, 4, False)).sum())
    assert counts["trunc"] == 0 and counts["nearest"] > 0


def test_integer_inference_equals_fake_quant_and_plain_qat_overflows():
    torch.manual_seed(0)
    data = _data(scale=4.0)
    results = {}
    for name, cfg in (
        ("a2q", a2q.a2q(acc_bits=12, weight_bits=8, act_bits=8)),
        ("qat", a2q.qat_int(weight_bits=8, act_bits=8)),
    ):
        torch.manual_seed(0)
        model = lbnn.quantize_(Tiny(), cfg)
        a2q.train(model, data, epochs=2, lr=1e-2)
        model = model.double()
        model.eval()
        x = data[0][0].double()
        with torch.no_grad():
            y_float = model(x)
            with a2q.integer_inference(model, acc_bits=40) as rep40:
                y_int = model(x)
        assert rep40.total.overflow_steps == 0
        torch.testing.assert_close(y_int, y_float, rtol=1e-12, atol=1e-12)
        with a2q.integer_inference(model, acc_bits=12) as rep12:
            for xb, _ in data:
                model(xb.double())
        results[name] = rep12.total
    assert results["a2q"].overflow_steps == 0 and results["a2q"].wrong_outputs == 0
    assert results["qat"].overflow_steps > 0 and results["qat"].wrong_outputs > 0
    assert results["qat"].max_abs > 2047 >= results["a2q"].max_abs


def test_conv_integer_path_any_stride_padding_dilation():
    """The unfold GEMM equals an exact float64 convolution of the integer codes."""
    torch.manual_seed(3)
    for kw in (dict(stride=2, padding=1), dict(padding="same", dilation=2), dict(padding=0)):
        conv = nn.Conv2d(2, 3, 3, bias=True, **kw)
        m = lbnn.quantize_(conv, a2q.a2q(acc_bits=14, weight_bits=5, act_bits=6))
        x = torch.randn(2, 2, 9, 9)
        m(x)  # decide signedness / scale
        codes, sx = m.act_quant.int_codes(x)
        q = m.int_weight().double().reshape(m.weight.shape)
        pad = "same" if kw.get("padding") == "same" else kw.get("padding", 0)
        exact = nn.functional.conv2d(
            codes.double(), q, None, kw.get("stride", 1), pad, kw.get("dilation", 1)
        )
        with a2q.integer_inference(m) as rep:
            y = m(x)
        sw = m.weight_quant.scale().reshape(1, -1, 1, 1)
        want = (exact * sx * sw).float() + m.bias.detach().reshape(1, -1, 1, 1)
        assert torch.equal(y, want)
        assert rep.total.outputs == exact.numel() and rep.total.wrong_outputs == 0


def test_sparsity_grows_as_p_shrinks_and_reports():
    torch.manual_seed(0)
    w = Tiny().state_dict()
    sp = {}
    for p in (24, 14, 10):
        model = Tiny()
        model.load_state_dict(w)
        lbnn.quantize_(model, a2q.a2q(acc_bits=p, weight_bits=6, act_bits=8))
        model(_data()[0][0])
        sp[p] = a2q.sparsity(model)
        for row in a2q.l1_report(model):
            assert row.max_l1 <= row.budget and row.min_acc_bits <= p
    assert sp[24] < sp[14] < sp[10]


def test_config_round_trip_and_errors():
    cfg = a2q.a2q(acc_bits=14, weight_bits=4, act_bits=8)
    assert cfg.method == "a2q" and "a2q" in lbnn.methods() and "qat_int" in lbnn.methods()
    assert lbnn.QuantConfig.from_json(cfg.to_json()) == cfg
    assert lbnn.QuantConfig.from_toml(cfg.to_toml()) == cfg
    base = a2q.qat_int(4, 8)
    assert lbnn.QuantConfig.from_json(base.to_json()) == base
    assert a2q.A2QArgs.from_config(base).acc_bits is None
    with pytest.raises(ValueError, match="acc_bits"):
        a2q.a2q(acc_bits=1)
    with pytest.raises(ValueError, match="rounding"):
        a2q.a2q(rounding="rne")
    with pytest.raises(ValueError, match="act_signed"):
        a2q.a2q(act_signed="yes")
    with pytest.raises(ValueError, match="unknown a2q method_args"):
        lbnn.quantize_(nn.Linear(2, 2), lbnn.QuantConfig(method="a2q", method_args={"bits": 4}))
    with pytest.raises(ValueError, match="no accumulator target"):
        m = lbnn.quantize_(nn.Linear(2, 2), base)
        with a2q.integer_inference(m):
            pass


def test_dequantize_restores_float_layers_with_effective_weight():
    torch.manual_seed(0)
    model = lbnn.quantize_(Tiny(), a2q.a2q(acc_bits=12, weight_bits=4, act_bits=8))
    model(_data()[0][0])
    w = model.fc.weight_quant.effective_weight(model.fc.weight, model.fc.act_signed)
    l1 = w.abs().sum(1)
    assert bool((l1 <= model.fc.weight_quant.scale() * a2q.l1_bound(12, 8, False)).all())
    lbnn.dequantize_(model)
    assert type(model.fc) is nn.Linear and type(model.conv) is nn.Conv2d
    assert torch.equal(model.fc.weight, w)


def test_l1_projection_against_bisection():
    """Soft thresholding at the θ found by bisection on Σ max(|y| - θ, 0) = z."""
    from lowbit.methods.a2q.quantizers import _project_l1

    g = torch.Generator().manual_seed(5)
    y = torch.randn(20, 37, generator=g, dtype=torch.float64) * 3
    for z in (0.5, 4.0, 30.0, 1e6):
        x = _project_l1(y, z)
        for row, xr in zip(y, x, strict=True):
            if row.abs().sum() <= z:
                assert torch.equal(xr, row)
                continue
            lo, hi = 0.0, float(row.abs().max())
            for _ in range(200):
                mid = (lo + hi) / 2
                if float((row.abs() - mid).clamp_min(0).sum()) > z:
                    lo = mid
                else:
                    hi = mid
            want = torch.sign(row) * (row.abs() - hi).clamp_min(0)
            torch.testing.assert_close(xr, want, rtol=0, atol=1e-12)
            assert abs(float(xr.abs().sum()) - z) < 1e-9 * z


def test_ep_init_keeps_weights_where_norm_init_erases_them():
    torch.manual_seed(0)
    w = torch.randn(8, 256) * 0.05
    out = {}
    for init in ("norm", "ep"):
        lin = nn.Linear(256, 8)
        with torch.no_grad():
            lin.weight.copy_(w)
        lin = lbnn.quantize_(
            lin, a2q.a2q(acc_bits=14, weight_bits=8, act_bits=8, act_signed=False, init=init)
        )
        lin(torch.rand(4, 256))  # first forward: the ep projection happens here
        q = lin.int_weight()
        assert int(q.abs().sum(1).max()) <= a2q.l1_budget(14, 8, False) == 31
        out[init] = q
        if init == "ep":
            assert not bool(lin.weight_quant.pending_init)
            eff = lin.weight_quant.effective_weight(lin.weight, False)
            torch.testing.assert_close(eff, lin.weight.detach(), rtol=1e-6, atol=0)
            # the largest weight of each channel keeps its sign
            top = w.abs().argmax(1)
            kept = q[torch.arange(8), top]
            assert bool((torch.sign(kept) == torch.sign(w[torch.arange(8), top])).all())
    assert int(out["norm"].abs().sum()) == 0  # uniform scaling + truncation erased all
    assert bool((out["ep"].abs().sum(1) > 0).all())
