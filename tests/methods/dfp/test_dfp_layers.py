"""DFP-16 training layers: DFPLinear / DFPConv2d forward, backward-data and weight gradients.

Oracles: ``lowbit.arith.dfp.matmul_reference`` (Python ints) on operands built here
independently from the definitions (im2col and the transposed convolution written from the
index formulas), and float64 torch GEMMs/convolutions of the DFP-dequantized operands, held
within the error bound proven from the head-room shifts and the fp32 combination.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit.nn as lbnn
from lowbit.arith import dfp
from lowbit.methods.dfp import (
    DFPConv2d,
    DFPLinear,
    DFPSettings,
    dfp16_training,
    overflow_report,
    reset_stats,
    total_overflows,
)

GEN = torch.Generator().manual_seed(1802)


def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN) * scale


def q(x: torch.Tensor) -> dfp.DFPTensor:
    t = dfp.quantize(x.detach().numpy())
    return dfp.DFPTensor(t.ints.astype(np.int64), t.exp)


def T(t: dfp.DFPTensor) -> dfp.DFPTensor:
    return dfp.DFPTensor(np.ascontiguousarray(t.ints.T), t.exp)


def ref_gemm(a: dfp.DFPTensor, b: dfp.DFPTensor, **kw: object) -> tuple[np.ndarray, object]:
    return dfp.matmul_reference(a, b, **kw)


# ---- Linear -----------------------------------------------------------------------------------
def test_linear_forward_and_gradients_equal_reference() -> None:
    lin = nn.Linear(23, 5)
    layer = lbnn.quantize_(lin, dfp16_training())
    assert isinstance(layer, DFPLinear) and layer.weight is lin.weight
    x = randn(2, 3, 23).requires_grad_()
    g = randn(2, 3, 5, scale=1e-3)
    y = layer(x)
    y.backward(g)
    xq, wq, gq = q(x.reshape(6, 23)), q(lin.weight), q(g.reshape(6, 5))
    y_ref, _ = ref_gemm(xq, T(wq))
    y_ref = y_ref + lin.bias.detach().numpy()
    assert torch.equal(y.detach().reshape(6, 5), torch.from_numpy(y_ref))
    dx_ref, _ = ref_gemm(gq, wq)
    assert torch.equal(x.grad.reshape(6, 23), torch.from_numpy(dx_ref))
    dw_ref, _ = ref_gemm(T(gq), xq)
    assert torch.equal(lin.weight.grad, torch.from_numpy(dw_ref))
    assert torch.equal(lin.bias.grad, g.reshape(6, 5).sum(0))  # fp32, not a GEMM
    st = layer.dfp_stats
    assert st.calls == {"forward": 1, "grad_input": 1, "grad_weight": 1}
    assert st.total_overflows == 0 and all(st.last[r].safe for r in st.calls)


def _bound(a: np.ndarray, ea: int, b: np.ndarray, eb: int, st: dfp.DFPGemmStats) -> np.ndarray:
    """Proven bound on |DFP GEMM - exact GEMM of the DFP operands| (elementwise): the head-room
    shifts move each operand by at most half its new unit; the fp32 path (chunk sums rounded,
    then nc - 1 fp32 additions) adds at most gamma_{nc+1} * sum |a'||b'|."""
    da = 2.0 ** (ea + st.shift_a - 1) if st.shift_a else 0.0
    db = 2.0 ** (eb + st.shift_b - 1) if st.shift_b else 0.0
    aa = np.abs(a.astype(np.float64)) * 2.0**ea
    bb = np.abs(b.astype(np.float64)) * 2.0**eb
    ones_a, ones_b = np.ones_like(aa), np.ones_like(bb)
    shift = da * (ones_a @ bb) + db * (aa @ ones_b) + da * db * (ones_a @ ones_b)
    u = 2.0**-24
    n = st.n_chunks + 1
    gamma = n * u / (1 - n * u)
    return (shift + gamma * ((aa + da) @ (bb + db))) * (1 + 1e-12)


def test_linear_close_to_float64_of_dfp_operands_within_proven_bound() -> None:
    lin = nn.Linear(300, 7, bias=False)
    layer = lbnn.quantize_(lin, dfp16_training())
    x = randn(9, 300, scale=3.0).requires_grad_()
    g = randn(9, 7, scale=1e-4)
    layer(x).backward(g)
    xq, wq, gq = q(x), q(lin.weight), q(g)
    last = layer.dfp_stats.last
    for got, (a, b), role in [
        (layer(x).detach(), (xq, T(wq)), "forward"),
        (x.grad, (gq, wq), "grad_input"),
        (lin.weight.grad, (T(gq), xq), "grad_weight"),
    ]:
        exact = (a.ints.astype(np.float64) * 2.0**a.exp) @ (b.ints.astype(np.float64) * 2.0**b.exp)
        err = np.abs(got.numpy().astype(np.float64) - exact)
        bound = _bound(a.ints, a.exp, b.ints, b.exp, last[role])
        assert np.all(err <= bound), role
        assert err.max() > 0  # the shifts are real: this is not a tautology


# ---- Conv2d -------------------------------------------------------------------------------------
def im2col_ref(x: np.ndarray, kh: int, kw: int, s: int, p: int, d: int) -> np.ndarray:
    """U[(b, oh, ow), (i, j, c)] = x[b, c, oh*s - p + i*d, ow*s - p + j*d] (0 outside)."""
    bsz, c, h, w = x.shape
    ho = (h + 2 * p - d * (kh - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (kw - 1) - 1) // s + 1
    u = np.zeros((bsz, ho, wo, kh, kw, c), dtype=x.dtype)
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    hh, ww = oh * s - p + i * d, ow * s - p + j * d
                    if 0 <= hh < h and 0 <= ww < w:
                        u[:, oh, ow, i, j, :] = x[:, :, hh, ww]
    return u.reshape(bsz * ho * wo, kh * kw * c)


def transposed_cols_ref(
    g: np.ndarray, h: int, w: int, kh: int, kw: int, s: int, p: int, d: int
) -> np.ndarray:
    """V[(b, y, x), (i, j, o)] = g[b, o, ho, wo] with ho*s - p + (kh-1-i)*d = y (and the same
    for columns), 0 when no such in-range output position exists."""
    bsz, cout, ho_n, wo_n = g.shape
    v = np.zeros((bsz, h, w, kh, kw, cout), dtype=g.dtype)
    for y in range(h):
        for x in range(w):
            for i in range(kh):
                for j in range(kw):
                    nh, nw = y + p - (kh - 1 - i) * d, x + p - (kw - 1 - j) * d
                    if nh % s or nw % s:
                        continue
                    oh, ow = nh // s, nw // s
                    if 0 <= oh < ho_n and 0 <= ow < wo_n:
                        v[:, y, x, i, j, :] = g[:, :, oh, ow]
    return v.reshape(bsz * h * w, kh * kw * cout)


GEOMETRIES = [  # (cin, cout, k, stride, padding, dilation, h)
    (3, 4, 3, 1, 1, 1, 6),
    (3, 4, 3, 2, 1, 1, 7),
    (4, 5, 1, 2, 0, 1, 6),
    (2, 3, 3, 1, 2, 2, 7),
    (2, 3, 3, 1, 3, 1, 5),  # padding > dilation*(k-1): the transposed conv crops
    (1, 4, 3, 1, 1, 1, 5),
]


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_forward_and_gradients_equal_reference(geom: tuple[int, ...]) -> None:
    cin, cout, k, s, p, d, h = geom
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, bias=True)
    layer = lbnn.quantize_(conv, dfp16_training())
    assert isinstance(layer, DFPConv2d)
    x = randn(2, cin, h, h).requires_grad_()
    y = layer(x)
    ho = y.shape[2]
    g = randn(*y.shape, scale=1e-2)
    y.backward(g)
    xq, wq, gq = q(x), q(conv.weight), q(g)
    w_np = wq.ints  # (o, c, i, j)
    u = dfp.DFPTensor(im2col_ref(xq.ints, k, k, s, p, d), xq.exp)
    w2 = dfp.DFPTensor(w_np.transpose(0, 2, 3, 1).reshape(cout, -1), wq.exp)
    y_ref, fst = ref_gemm(u, T(w2))
    y_ref = y_ref.reshape(2, ho, ho, cout).transpose(
        0, 3, 1, 2
    ) + conv.bias.detach().numpy().reshape(1, -1, 1, 1)
    assert torch.equal(y.detach(), torch.from_numpy(np.ascontiguousarray(y_ref)))
    v = dfp.DFPTensor(transposed_cols_ref(gq.ints, h, h, k, k, s, p, d), gq.exp)
    wt = dfp.DFPTensor(w_np[:, :, ::-1, ::-1].transpose(1, 2, 3, 0).reshape(cin, -1), wq.exp)
    dx_ref, _ = ref_gemm(v, T(wt))
    dx_ref = dx_ref.reshape(2, h, h, cin).transpose(0, 3, 1, 2)
    assert torch.equal(x.grad, torch.from_numpy(np.ascontiguousarray(dx_ref)))
    g2 = dfp.DFPTensor(gq.ints.transpose(1, 0, 2, 3).reshape(cout, -1), gq.exp)
    dw_ref, _ = ref_gemm(g2, u, headroom=("auto", fst.shift_a))  # x keeps its forward shift
    dw_ref = dw_ref.reshape(cout, k, k, cin).transpose(0, 3, 1, 2)
    assert torch.equal(conv.weight.grad, torch.from_numpy(np.ascontiguousarray(dw_ref)))
    assert torch.equal(conv.bias.grad, g.sum((0, 2, 3)))
    assert layer.dfp_stats.total_overflows == 0


def test_conv_close_to_float64_convolution_within_proven_bound() -> None:
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=False)
    layer = lbnn.quantize_(conv, dfp16_training())
    x = randn(2, 6, 9, 9).requires_grad_()
    y = layer(x)
    g = randn(*y.shape, scale=1e-3)
    y.backward(g)
    xq, wq, gq = q(x), q(conv.weight), q(g)
    x64 = torch.from_numpy(xq.ints.astype(np.float64) * 2.0**xq.exp).requires_grad_()
    w64 = torch.from_numpy(wq.ints.astype(np.float64) * 2.0**wq.exp).requires_grad_()
    y64 = F.conv2d(x64, w64, padding=1)
    y64.backward(torch.from_numpy(gq.ints.astype(np.float64) * 2.0**gq.exp))
    last = layer.dfp_stats.last
    u = im2col_ref(xq.ints, 3, 3, 1, 1, 1)
    w2 = wq.ints.transpose(0, 2, 3, 1).reshape(8, -1)
    bound_y = _bound(u, xq.exp, w2.T, wq.exp, last["forward"]).reshape(2, 9, 9, 8)
    err_y = np.abs(y.detach().numpy() - y64.detach().numpy()).transpose(0, 2, 3, 1)
    assert np.all(err_y <= bound_y)
    v = transposed_cols_ref(gq.ints, 9, 9, 3, 3, 1, 1, 1)
    wt = wq.ints[:, :, ::-1, ::-1].transpose(1, 2, 3, 0).reshape(6, -1)
    bound_dx = _bound(v, gq.exp, wt.T, wq.exp, last["grad_input"]).reshape(2, 9, 9, 6)
    err_dx = np.abs(x.grad.numpy() - x64.grad.numpy()).transpose(0, 2, 3, 1)
    assert np.all(err_dx <= bound_dx)
    g2 = gq.ints.transpose(1, 0, 2, 3).reshape(8, -1)
    bound_dw = _bound(g2, gq.exp, u, xq.exp, last["grad_weight"]).reshape(8, 3, 3, 6)
    err_dw = np.abs(conv.weight.grad.numpy() - w64.grad.numpy()).transpose(0, 2, 3, 1)
    assert np.all(err_dw <= bound_dw)


# ---- quantize_, training, counters ------------------------------------------------------------
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def test_quantize_swaps_layers_and_dequantize_restores() -> None:
    model = small_model()
    keys = list(model.state_dict())
    params = list(model.parameters())
    cfg = dfp16_training()
    assert cfg.method == "dfp16" and lbnn.QuantConfig.from_json(cfg.to_json()) == cfg
    lbnn.quantize_(model, cfg)
    assert isinstance(model[0], DFPConv2d) and isinstance(model[5], DFPLinear)
    assert type(model[3]) is nn.Conv2d  # groups=2: left in fp32, with the reason
    assert "groups=2" in model.lowbit_notes["3"]
    assert list(model.state_dict()) == keys and list(model.parameters()) == params
    rows = {r["layer"]: r for r in lbnn.summary(model).rows}
    assert rows["0"]["weight"] == "dfp16 rne" and rows["5"]["grad_act"] == "dfp16 rne"
    lbnn.dequantize_(model)
    assert type(model[0]) is nn.Conv2d and type(model[5]) is nn.Linear
    assert not hasattr(model[0], "dfp_stats") and list(model.parameters()) == params


def test_training_steps_update_fp32_master_weights_without_overflow() -> None:
    model = small_model()
    ref = copy.deepcopy(model)
    lbnn.quantize_(model, dfp16_training())
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 1, 8, 8, generator=gen)
    y = torch.randint(0, 3, (16,), generator=gen)
    losses = {}
    for name, m in (("dfp", model), ("fp32", ref)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        out = []
        for _ in range(8):
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            out.append(float(loss.detach()))
        losses[name] = out
    assert losses["dfp"][-1] < 0.8 * losses["dfp"][0]
    assert model[0].weight.dtype == torch.float32
    assert not torch.equal(model[0].weight, small_model()[0].weight)  # the optimizer moved it
    rep = overflow_report(model)
    assert set(rep) == {"0", "5"} and total_overflows(model) == 0
    assert rep["0"]["calls"] == {"forward": 8, "grad_input": 0, "grad_weight": 8}  # input
    assert rep["5"]["calls"]["grad_input"] == 8  # has no grad for the first layer
    assert 0 < rep["5"]["max_abs_chunk_sum"]["forward"] <= rep["5"]["max_bound"]["forward"]
    assert rep["5"]["max_bound"]["forward"] <= 2**31 - 1
    reset_stats(model)
    assert overflow_report(model)["0"]["calls"]["forward"] == 0


def test_stochastic_gradient_rounding_is_seeded() -> None:
    def grads(seed: int, mode: str) -> torch.Tensor:
        lin = nn.Linear(40, 3)
        torch.nn.init.constant_(lin.weight, 0.01)
        layer = lbnn.quantize_(lin, dfp16_training(grad_mode=mode, seed=seed))
        x = torch.linspace(-1, 1, 200).reshape(5, 40)
        g = torch.linspace(-1e-3, 1.3e-3, 15).reshape(5, 3) / 3
        for _ in range(2):  # the step counter advances: step 1 differs from step 0
            lin.weight.grad = None
            layer(x).backward(g)
        assert int(layer.lowbit_step) == 2 if mode == "sr" else not hasattr(layer, "lowbit_step")
        return lin.weight.grad.clone()

    a, b = grads(0, "sr"), grads(0, "sr")
    assert torch.equal(a, b)
    assert not torch.equal(a, grads(1, "sr"))
    assert not torch.equal(a, grads(0, "rne"))


def test_unchunked_layer_overflows_chunked_does_not() -> None:
    for chunk, headroom, overflows in (
        (None, 0, True),
        ("auto", 0, False),
        ("auto", "auto", False),
    ):
        lin = nn.Linear(16, 2, bias=False)
        torch.nn.init.constant_(lin.weight, 1.0)
        layer = lbnn.quantize_(lin, dfp16_training(chunk=chunk, headroom=headroom))
        y = layer(torch.ones(3, 16))  # every I is 2**14: products 2**28, 16 of them
        st = layer.dfp_stats
        assert (st.overflow_count["forward"] > 0) == overflows
        assert torch.equal(y, torch.full((3, 2), 16.0)) != overflows


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="chunk=0"):
        dfp16_training(chunk=0)
    with pytest.raises(ValueError, match="mode='rtz'"):
        dfp16_training(grad_mode="rtz")
    with pytest.raises(ValueError, match="acc_bits=70"):
        dfp16_training(acc_bits=70)
    with pytest.raises(ValueError, match="unknown dfp16 method_args"):
        lbnn.quantize_(nn.Linear(2, 2), lbnn.QuantConfig(method="dfp16", method_args={"bitz": 16}))
    s = DFPSettings.from_args(dfp16_training(headroom=(1, 2)).method_args)
    assert s.headroom == (1, 2)
    layer = lbnn.quantize_(nn.Conv2d(1, 1, 3), dfp16_training())
    with pytest.raises(ValueError, match="batch, C, H, W"):
        layer(torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match="NaN/inf"):
        layer(torch.full((1, 1, 5, 5), float("nan")))


def test_audit_counts_what_an_unchunked_accumulator_would_do() -> None:
    from lowbit.arith.intgemm import int_matmul
    from lowbit.methods.dfp import audit_unchunked

    lin = nn.Linear(16, 2, bias=False)
    torch.nn.init.constant_(lin.weight, 1.0)
    model = nn.Sequential(lin)
    lbnn.quantize_(model, dfp16_training())
    audit_unchunked(model)
    x = torch.ones(3, 16)
    y = model(x)
    assert torch.equal(y, torch.full((3, 2), 16.0))  # outputs unchanged by the audit
    st = model[0].dfp_stats
    raw = int_matmul(q(x).ints, T(q(lin.weight)).ints, acc_bits=32, overflow="wrap")
    assert st.unchunked_overflow_count["forward"] == raw.overflow_count > 0
    assert st.unchunked_max_abs_sum["forward"] == 16 * 2**28
    assert st.overflow_count["forward"] == 0
    conv = lbnn.quantize_(nn.Conv2d(2, 3, 3, stride=2, padding=1), dfp16_training())
    conv.dfp_stats.audit = True
    xc = randn(2, 2, 6, 6).requires_grad_()
    conv(xc).backward(randn(2, 3, 3, 3))
    assert conv.dfp_stats.audit_calls == {"forward": 1, "grad_input": 1, "grad_weight": 1}
    assert all(v > 0 for v in conv.dfp_stats.unchunked_max_abs_sum.values())
