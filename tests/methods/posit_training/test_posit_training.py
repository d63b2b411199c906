"""PositNN posit training: posit8 codec, quire dot products, recipe wiring, LeNet-5 steps.

Oracles: a posit decoder and a posit rounding of exact rationals written here with
``fractions`` (bit strings parsed by hand, rounding by comparing with the posit<n+1, es>
midpoint codes, as the 2022 standard's rounding of the infinite bit string does); plain
float64 torch ops (exact for posit<8,0> operands: every posit<8,0> value is a multiple of
2**-6 of magnitude at most 64, so products are multiples of 2**-12 below 2**12 and any sum of
fewer than 2**29 of them is a float64 number).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import lowbit as lb  # noqa: E402
from lowbit.methods import posit_training as pt  # noqa: E402


# ---- independent posit oracles ------------------------------------------------------------
def frac_decode(code: int, n: int, es: int) -> Fraction | None:
    """Exact value of an n-bit posit code (None for NaR), from its bit string."""
    if code == 0:
        return Fraction(0)
    if code == 1 << (n - 1):
        return None
    neg = code >> (n - 1) == 1
    if neg:
        code = (1 << n) - code
    s = format(code, f"0{n}b")[1:]  # the n-1 bits after the sign
    run = len(s) - len(s.lstrip(s[0]))
    k = run - 1 if s[0] == "1" else -run
    rest = s[run + 1 :]
    e_str = rest[:es].ljust(es, "0")
    e = int(e_str, 2) if es else 0
    f_str = rest[es:]
    frac = Fraction(int(f_str, 2), 2 ** len(f_str)) if f_str else Fraction(0)
    v = Fraction(2) ** (k * 2**es + e) * (1 + frac)
    return -v if neg else v


def frac_round_posit(x: Fraction, n: int, es: int) -> Fraction:
    """Round an exact rational to posit<n, es>: nearest bit string, ties to the even code."""
    if x == 0:
        return Fraction(0)
    if x < 0:
        return -frac_round_posit(-x, n, es)
    pos = [frac_decode(c, n, es) for c in range(1, 1 << (n - 1))]  # ascending, minpos..maxpos
    if x <= pos[0]:
        return pos[0]
    if x >= pos[-1]:
        return pos[-1]
    c = max(i for i, v in enumerate(pos, start=1) if v <= x)  # code of the value below x
    lo, hi = frac_decode(c, n, es), frac_decode(c + 1, n, es)
    if x == lo:
        return lo
    mid = frac_decode(2 * c + 1, n + 1, es)  # the bit string c followed by 1
    assert lo < mid < hi
    if x < mid:
        return lo
    if x > mid:
        return hi
    return lo if c % 2 == 0 else hi


def on_grid(t: torch.Tensor, fmt: str) -> bool:
    return bool(torch.equal(lb.round(t.detach().contiguous(), fmt), t.detach()))


# ---- posit codec ----------------------------------------------------------------------------
@pytest.mark.parametrize("es", [0, 1, 2])
def test_posit8_codec_exhaustive(es):
    fmt = lb.get_format(f"posit<8,{es}>")
    assert (fmt.n, fmt.es) == (8, es)
    codes = np.arange(256, dtype=np.uint8)
    vals = lb.decode(codes, fmt, dtype=np.float64)
    ref = [frac_decode(c, 8, es) for c in range(256)]
    assert [c for c in range(256) if ref[c] is None] == [0x80]
    assert [c for c in range(256) if math.isnan(vals[c])] == [0x80]  # single NaR
    for c in range(256):
        if ref[c] is not None:
            assert Fraction(float(vals[c])) == ref[c], hex(c)
    # decode -> encode is the identity (NaR too)
    assert np.array_equal(lb.encode(vals, fmt), codes)
    # ordered as two's complement integers
    signed = codes.view(np.int8).astype(int)
    order = np.argsort(signed)
    finite = [vals[i] for i in order if i != 0x80]
    assert all(a < b for a, b in itertools.pairwise(finite))
    useed = Fraction(2) ** (2**es)
    assert max(finite) == useed**6 == vals[0x7F] == fmt.max
    assert min(v for v in finite if v > 0) == 1 / useed**6 == vals[0x01]


def test_posit_names():
    for name, n, es in (
        ("posit8", 8, 2),
        ("posit8_0", 8, 0),
        ("posit16_1", 16, 1),
        ("posit16", 16, 2),
        ("posit<8,2>", 8, 2),
    ):
        f = lb.get_format(name)
        assert isinstance(f, lb.PositFormat) and (f.n, f.es) == (n, es)


def test_frac_round_posit_agrees_with_lowbit_round():
    """The oracle rounding and lb.round agree on random float64 values (both directions)."""
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.standard_normal(300) * 4.0 ** rng.integers(-12, 12, 300),
            [0.0, 1e-30, -1e30, 2.0**-24 * 0.75],
        ]
    )
    for es in (0, 2):
        got = lb.round(x, f"posit<8,{es}>")
        for xi, gi in zip(x, got, strict=True):
            assert Fraction(float(gi)) == frac_round_posit(Fraction(float(xi)), 8, es)


# ---- quire ------------------------------------------------------------------------------------
def _posit_vector(rng, n, fmt):
    return lb.round(rng.standard_normal(n) * 2.0 ** rng.integers(-3, 3, n), fmt)


@pytest.mark.parametrize("fmt", ["posit8", "posit<8,0>"])
def test_quire_dot_is_exactly_rounded(fmt):
    f = lb.get_format(fmt)
    rng = np.random.default_rng(11)
    naive_differs = 0
    for _ in range(3):
        a, b = _posit_vector(rng, 1000, fmt), _posit_vector(rng, 1000, fmt)
        exact = sum(
            (Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b, strict=True)),
            Fraction(0),
        )
        want = frac_round_posit(exact, f.n, f.es)
        got = lb.dot(a, b, acc="quire", out=fmt)
        assert Fraction(float(got)) == want
        # per-step posit arithmetic: every product and every partial sum rounded (the
        # float64 products and two-term sums of these posits are exact)
        c = float(lb.round(a[0] * b[0], fmt))
        for x, y in zip(a[1:], b[1:], strict=True):
            c = float(lb.round(c + float(lb.round(x * y, fmt)), fmt))
        naive_differs += Fraction(c) != want
    assert naive_differs >= 2


def test_quire_matmul_posit8_0_equals_float64():
    """posit<8,0>: float64 sums are exact, so the quire GEMM equals numpy's matmul rounded."""
    rng = np.random.default_rng(3)
    A = _posit_vector(rng, 40 * 300, "posit<8,0>").reshape(40, 300)
    B = _posit_vector(rng, 300 * 7, "posit<8,0>").reshape(300, 7)
    got = lb.matmul(A, B, acc="quire", out="posit<8,0>")
    assert np.array_equal(got, lb.round(A @ B, "posit<8,0>"))


# ---- loss -------------------------------------------------------------------------------------
def _scalar_ce(z: list[float], t: int, fmt: str | None) -> tuple[float, list[float]]:
    """PositNN's cross-entropy for one sample with scalar ops (loss, gradient)."""

    def r(v: float) -> float:
        return v if fmt is None else float(lb.round(v, fmt))

    z = [r(v) for v in z]
    m = max(z)
    d = [r(v - m) for v in z]
    e = [r(math.exp(v)) for v in d]
    s = r(math.fsum(e))
    loss = -r(d[t] - r(math.log(s)))
    g = [r(v / s) for v in e]
    g[t] = r((e[t] - s) * r(1.0 / s))
    return loss, g


@pytest.mark.parametrize("fmt", [None, "posit16", "posit<8,0>"])
def test_posit_cross_entropy_matches_scalar_reference(fmt):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 10, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (6,), generator=gen)
    zr = z.clone().requires_grad_(True)
    loss = pt.posit_cross_entropy(zr, y, fmt)
    loss.backward()
    refs = [_scalar_ce(z[i].tolist(), int(y[i]), fmt) for i in range(6)]
    want_loss = math.fsum(r[0] for r in refs)
    want_grad = torch.tensor([r[1] for r in refs], dtype=torch.float64)
    per = pt.per_sample_losses(z, y, fmt)
    if fmt is None:  # torch.exp and math.exp may differ in the last bit
        torch.testing.assert_close(loss.detach(), torch.tensor(want_loss, dtype=torch.float64))
        torch.testing.assert_close(zr.grad, want_grad)
        return
    # posit roundings: bit-exact, on the loss posit's grid
    assert float(loss.detach()) == want_loss
    assert torch.equal(zr.grad, want_grad)
    assert per.tolist() == [r[0] for r in refs]
    assert on_grid(per, fmt) and on_grid(zr.grad, fmt)


def test_cross_entropy_float_is_torch_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,), generator=gen)
    loss_fn = pt.PositCrossEntropy(None, reduction="mean")
    loss = loss_fn(z, y)
    (g,) = torch.autograd.grad(loss, z)
    z2 = z.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(z2, y)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, z2.grad)
    with pytest.raises(ValueError, match="accepted: sum, mean"):
        pt.PositCrossEntropy("posit8", reduction="none")


# ---- recipe -----------------------------------------------------------------------------------
def test_presets_and_defaults():
    assert pt.presets() == ["float", "posit8_0", "posit16_1", "mixed8"]
    m = pt.posit_training("mixed8")
    assert (m.forward, m.backward, m.gradient, m.update, m.loss, m.quire) == (
        "posit8",
        "posit8",
        "posit8",
        "posit16",
        "posit16",
        True,
    )
    u = pt.posit_training("posit8_0")
    assert {getattr(u, s) for s in pt.STAGES} == {"posit<8,0>"} and u.quire
    assert pt.posit_training(forward="posit8_0") == u == pt.PositRecipe()
    upd = pt.posit_training("posit16_1").formats()["update"]
    assert (upd.n, upd.es) == (16, 1)
    f = pt.posit_training("float")
    assert f.is_float and f.quant_config().is_fp32 and f.gemm_config() is None
    c = pt.posit_training("posit<8,2>", update="posit16_2", quire=False)
    assert (c.forward, c.backward, c.gradient, c.update, c.loss, c.quire) == (
        "posit8",
        "posit8",
        "posit8",
        "posit16",
        "posit8",
        False,
    )
    assert pt.posit_training("mixed8", loss=None).loss is None


def test_bad_names():
    with pytest.raises(ValueError, match="float, posit8_0, posit16_1, mixed8"):
        pt.posit_training("mixed4")
    with pytest.raises(ValueError, match="not a posit"):
        pt.posit_training("posit8_0", update="bf16")
    with pytest.raises(ValueError, match="accepted: forward, backward"):
        pt.PositRecipe.from_dict({"fwd": "posit8"})
    with pytest.raises(TypeError):
        pt.PositRecipe(quire="yes")


@pytest.mark.parametrize("name", ["float", "posit8_0", "posit16_1", "mixed8"])
def test_recipe_round_trips(name):
    r = pt.posit_training(name)
    assert pt.PositRecipe.from_dict(r.to_dict()) == r
    assert pt.PositRecipe.from_json(r.to_json()) == r
    assert json.loads(r.to_json())["quire"] is r.quire
    cfg = r.quant_config()
    assert lb.nn.QuantConfig.from_json(cfg.to_json()) == cfg


def test_quant_config_wiring():
    r = pt.posit_training(
        "posit8_2", backward="posit<8,1>", gradient="posit<8,0>", update="posit16"
    )
    cfg = r.quant_config()
    assert (cfg.weight, cfg.act, cfg.output) == ("posit8",) * 3
    assert (cfg.grad_act, cfg.grad_weight) == ("posit<8,1>", "posit<8,0>")
    assert cfg.weight_mode == cfg.act_mode == cfg.grad_mode == "rne"
    assert lb.GemmConfig.from_dict(dict(cfg.gemm)) == r.gemm_config()
    assert r.gemm_config().acc == "quire"
    assert pt.posit_training("posit8_0", quire=False).quant_config().gemm is None


def test_optimizer_stores_update_posit():
    r = pt.posit_training("mixed8")
    gen = torch.Generator().manual_seed(2)
    w0 = torch.randn(50, generator=gen) * 0.3
    p = nn.Parameter(w0.clone())
    opt = r.optimizer([p], lr=1 / 16, momentum=0.5, batch_size=8)
    assert on_grid(p, "posit16")  # put on the update grid at construction
    w = p.detach().clone()
    grads = [torch.randn(50, generator=gen) * 4 for _ in range(2)]
    stored = None
    for g in grads:
        p.grad = lb.round(g, "posit8")  # what a layer's grad_weight cast delivers
        opt.step()
        d = lb.round(p.grad.double() / 8, "posit8").float()  # mean gradient, gradient posit
        buf = d if stored is None else stored * 0.5 + d  # float32; lr, momentum powers of 2
        stored = lb.round(buf, "posit16")
        w = lb.round(w - buf / 16, "posit16")  # the update uses this step's float32 buffer
        assert torch.equal(p.detach(), w)
        assert torch.equal(opt.state[p]["momentum_buffer"], stored)
    assert on_grid(p, "posit16") and not on_grid(p, "posit8")


# ---- models -----------------------------------------------------------------------------------
def test_lenet5_shape_and_parameters():
    torch.manual_seed(0)
    m = lb.models.build_model("lenet5", in_channels=1, num_classes=10, image_size=28)
    assert sum(p.numel() for p in m.parameters()) == (
        6 * 25 + 6 + 16 * 6 * 25 + 16 + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    )
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    t = lb.models.build_model(
        "lenet5", in_channels=3, num_classes=4, image_size=12, activation="tanh"
    )
    assert t(torch.randn(2, 3, 12, 12)).shape == (2, 4)
    assert any(isinstance(x, nn.Tanh) for x in t.modules())
    with pytest.raises(ValueError, match="at least 12"):
        lb.models.build_model("lenet5", in_channels=1, num_classes=10, image_size=8)
    with pytest.raises(ValueError, match="relu, tanh"):
        lb.models.build_model(
            "lenet5", in_channels=1, num_classes=10, image_size=28, activation="gelu"
        )


# ---- a LeNet-5 step with quires against a float64 reference -----------------------------------
class _Round(torch.autograd.Function):
    """Forward: round to ``fwd``; backward: round the gradient to ``bwd`` (None: identity)."""

    @staticmethod
    def forward(ctx, x, fwd, bwd):
        ctx.bwd = bwd
        return x if fwd is None else lb.round(x.contiguous(), fwd)

    @staticmethod
    def backward(ctx, g):
        return (g if ctx.bwd is None else lb.round(g.contiguous(), ctx.bwd)), None, None


def _reference_forward(model: nn.Module, x: torch.Tensor, r: pt.PositRecipe) -> torch.Tensor:
    """LeNet-5 in float64 torch ops with the recipe's roundings placed as QuantLayer does."""
    P = _Round.apply
    fw, bw, gr = r.forward, r.backward, r.gradient
    f, c = model.features, model.classifier

    def layer(mod, h, op):
        xh = P(h, fw, bw)  # input: act cast, dL/dx rounded to grad_act
        wh = P(mod.weight, fw, gr)  # weight: forward cast, dL/dW to grad_weight
        bh = P(mod.bias, None, gr)  # bias: dL/db to grad_weight
        y = op(xh, wh, bh)
        return P(y, fw, bw)  # output cast, dL/dy rounded to grad_act

    h = layer(f[0], x, lambda a, w, b: F.conv2d(a, w, b, padding=2))
    h = F.relu(F.max_pool2d(h, 2))
    h = layer(f[3], h, F.conv2d)
    h = torch.flatten(F.relu(F.max_pool2d(h, 2)), 1)
    h = F.relu(layer(c[0], h, F.linear))
    h = F.relu(layer(c[2], h, F.linear))
    return layer(c[4], h, F.linear)


def test_lenet_step_with_quires_matches_float64_reference():
    r = pt.posit_training("posit8_0")
    torch.manual_seed(0)
    model = lb.models.build_model("lenet5", in_channels=1, num_classes=10, image_size=12).double()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 1, 12, 12, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=gen)
    ref_model = copy.deepcopy(model)
    qmodel = lb.nn.quantize_(model, r.quant_config())
    opt = r.optimizer(qmodel.parameters(), lr=1 / 16, momentum=0.5)
    ref_opt = r.optimizer(ref_model.parameters(), lr=1 / 16, momentum=0.5)
    assert all(on_grid(p, "posit<8,0>") for p in qmodel.parameters())
    layers = [m for m in qmodel.modules() if isinstance(m, lb.nn.QuantLayer)]
    assert len(layers) == 5 and all(m.lowbit_gemm.acc == "quire" for m in layers)
    loss_fn = r.loss_fn()
    for _ in range(2):
        loss, _ = pt.train_step(qmodel, x, y, opt, loss_fn)
        ref_loss = loss_fn(_reference_forward(ref_model, x, r), y)
        ref_opt.zero_grad()
        ref_loss.backward()
        grads = [p.grad for p in qmodel.parameters()]
        ref_grads = [p.grad for p in ref_model.parameters()]
        for g, rg in zip(grads, ref_grads, strict=True):
            assert on_grid(g, "posit<8,0>")
            assert torch.equal(g, rg)
        assert loss == float(ref_loss.detach()) / 4
        ref_opt.set_batch_size(4)
        ref_opt.step()
        for p, rp in zip(qmodel.parameters(), ref_model.parameters(), strict=True):
            assert torch.equal(p, rp) and on_grid(p, "posit<8,0>")
    assert any(not torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_posit_sgd_options():
    p = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="grad_divisor"):
        pt.PositSGD([p], grad_divisor=0)
    with pytest.raises(ValueError, match="grad_fmt"):
        pt.PositSGD([p], grad_fmt="nonsense")
    opt = pt.PositSGD([p], lr=0.5, grad_fmt="posit<8,0>", weight_fmt="posit16")
    with pytest.raises(ValueError, match="batch size"):
        opt.set_batch_size(0)
    opt.set_batch_size(4)
    p.grad = torch.tensor([1.0, 3.0, 0.2])  # /4 -> 0.25, 0.75, 0.05 -> posit<8,0>
    opt.step()
    g = lb.round(torch.tensor([0.25, 0.75, 0.05]), "posit<8,0>")
    assert torch.equal(p.detach(), lb.round(1 - 0.5 * g, "posit16"))


# ---- the experiment script: per-seed cache and claims over seeds --------------------------
def _experiment():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "experiments" / "posit_training.py"
    spec = importlib.util.spec_from_file_location("posit_training_experiment", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_importing_the_experiment_leaves_numba_settings_alone():
    import os

    before = os.environ.get("NUMBA_NUM_THREADS")
    _experiment()
    assert os.environ.get("NUMBA_NUM_THREADS") == before


def test_experiment_seed_cache_and_claims(tmp_path, monkeypatch):
    exp = _experiment()
    calls = []

    def fake_run_seed(st, data_dir, progress):  # no training: accuracies set per seed
        calls.append(st.seed)
        acc = {"float": 0.85 + 0.01 * st.seed, "posit8_0": 0.15, "mixed8": 0.849 + 0.01 * st.seed}
        runs = {
            n: {
                "describe": n,
                "test_acc": acc[n],
                "epoch_test_acc": [acc[n] - 0.1, acc[n]],
                "train_loss": [2.0, 1.0],
                "step_cpu_seconds": 0.1,
            }
            for n in st.recipes
        }
        return {
            "seed": st.seed, "settings": exp.settings_dict(st), "runs": runs, "seconds": 2.0,
            "cpu_seconds": 1.0, "steps": 8, "n_train": 256, "n_test": 256,
            "float_reference": None, "float_reference_run": None, "diagnostics": None,
            "machine": "test",
        }  # fmt: skip

    monkeypatch.setattr(exp, "run_seed", fake_run_seed)
    argv = ["--quick", "--no-progress", "--out", str(tmp_path), "--seeds", "0,1,2"]
    assert exp.main(argv) == 0
    assert calls == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "posit_training").iterdir()) == [
        "seed0.json", "seed1.json", "seed2.json"
    ]  # fmt: skip
    assert exp.main(argv) == 0  # every seed cached with the same settings
    assert exp.main([*argv[:-1], "1"]) == 0
    assert calls == [0, 1, 2]
    assert exp.main([*argv[:-1], "1", "--force"]) == 0
    assert exp.main([*argv[:-1], "2", "--epochs", "2"]) == 0  # other settings: rerun
    assert calls == [0, 1, 2, 1, 2]
    assert exp.main(argv) == 0  # seed 2's cache now holds 2 epochs: rerun
    assert calls == [0, 1, 2, 1, 2, 2]

    res = json.loads((tmp_path / "posit_training.json").read_text())
    assert res["seeds"] == [0, 1, 2] and res["cached_seeds"] == [0, 1]
    f = res["aggregate"]["float"]["test_acc"]
    assert f["values"] == pytest.approx([85.0, 86.0, 87.0])
    assert f["mean"] == pytest.approx(86.0) and f["std"] == pytest.approx(1.0)
    d = res["aggregate"]["mixed8"]["delta_vs_float"]
    assert d["mean"] == pytest.approx(-0.1) and d["std"] == pytest.approx(0.0, abs=1e-9)
    verdicts = {c["short"]: c["verdict"] for c in res["claims"]}
    assert verdicts == {
        "uniform posit<8,0> close to float": "did not hold",  # -71 pp
        "mixed 8-bit ≈ float": "inconclusive",  # -0.1 ± 1 pp straddles the -1 pp bound
        "mixed 8-bit ≥ uniform posit<8,0>": "held",
    }
    md = (tmp_path / "posit_training.md").read_text()
    assert "| 86.00 ± 1.00 | 85.00, 86.00, 87.00 | +0.00 ± 0.00 | 90.42 |" in md
    assert "inconclusive — mixed 8-bit ≈ float" in md
    assert (tmp_path / "posit_training.png").read_bytes()[:4] == b"\x89PNG"
    assert exp.verdict(0.0, 0.0, 0.0, math.inf) == "held"
    assert exp.verdict(-0.5, 1.0, 0.0, math.inf) == "inconclusive"
    assert exp.verdict(-2.0, 1.0, 0.0, math.inf) == "did not hold"
