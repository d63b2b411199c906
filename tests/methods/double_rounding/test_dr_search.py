"""Mixed-precision search: scores, Pareto front, the end-to-end sweep and its plot."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

from lowbit.methods import double_rounding as dr  # noqa: E402


def test_pareto_front_matches_the_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = [
            (float(b), float(a))
            for b, a in zip(rng.integers(2, 9, 12) / 2, rng.integers(0, 6, 12) / 5, strict=True)
        ]
        front = dr.pareto_front(pts)

        undominated = {
            a for a in pts if not any(b[0] <= a[0] and b[1] >= a[1] and b != a for b in pts)
        }
        assert {pts[i] for i in front} == undominated
        assert len(front) == len(undominated)  # duplicates of a front point count once
        assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


def test_quantization_errors_and_scores(trained):
    _, res = trained
    model = res.model
    errs = dr.quantization_errors(model)
    for n, m in dr.dr_layers(model).items():
        s = m.weight_quant.step_scale().double().numpy().reshape(-1, 1, 1, 1)
        c_h = m.int_weight(8).numpy().astype(np.int64)
        for b in (8, 6, 4, 2):
            k = 8 - b
            c_l = np.clip(np.round(c_h / 2**k), -(2 ** (b - 1)), 2 ** (b - 1) - 1)  # half-even
            want = float((((c_l * 2**k - c_h) * s) ** 2).sum())
            assert errs[n][b] == pytest.approx(want, rel=1e-6), (n, b)
        assert errs[n][8] == 0 and errs[n][2] > errs[n][4] > errs[n][6] > 0
    traces = {"block.conv1": 2.0, "block.conv2": -1.0}
    scores = dr.layer_scores(traces, errs)
    assert scores["block.conv1"][4] == -2.0 * errs["block.conv1"][4]
    assert scores["block.conv2"][4] == -2e-3 * errs["block.conv2"][4]  # floored at 0.1 % of 2
    with pytest.raises(ValueError, match="different layers"):
        dr.layer_scores({"x": 1.0}, errs)


def test_search_end_to_end(trained, digits, tmp_path):
    _, res = trained
    model = res.model
    dr.set_bits(model, 6)
    out = dr.search(
        model,
        digits[0],
        digits[1],
        targets=[1.0, 2.0, 3.0, 5.0, 8.0],
        trace_batches=1,
        n_probes=2,
        calib_batches=2,
        progress=False,
        plot=tmp_path / "pareto.png",
    )
    assert dr.get_bits(model) == dict.fromkeys(dr.dr_layers(model), 6)  # restored
    uni = {p["mean_bits"]: p["accuracy"] for p in out.points if p["kind"] == "uniform"}
    assert uni == {float(b): res.accuracy[b] for b in (8, 6, 4, 2)}
    ilp = [p for p in out.points if p["kind"] == "ilp"]
    assert [p["target"] for p in ilp] == [2.0, 3.0, 5.0, 8.0]  # 1.0 is below every config
    assert ilp[0]["config"] == dict.fromkeys(dr.dr_layers(model), 2)
    assert ilp[0]["accuracy"] == uni[2.0] and ilp[-1]["accuracy"] == uni[8.0]
    assert ilp[1]["mean_bits"] <= 3.0 and len(set(ilp[1]["config"].values())) == 2
    assert out.front == dr.pareto_front([(p["mean_bits"], p["accuracy"]) for p in out.points])
    assert out.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = out.table()
    assert [r["mean_bits"] for r in rows] == sorted(r["mean_bits"] for r in rows)
    dr.set_bits(model, 8)


def test_measured_scores_are_the_loss_of_each_one_layer_switch(trained, digits):
    import itertools

    import torch.nn.functional as F

    _, res = trained
    model = res.model
    dr.set_bits(model, 8)
    batches = list(itertools.islice(iter(digits[0]), 5))
    calib, measure = batches[:2], batches[2:]
    scores = dr.measured_scores(model, batches, (8, 4, 2), n_batches=3, calib_batches=2)
    assert dr.get_bits(model) == dict.fromkeys(dr.dr_layers(model), 8)  # restored

    def loss_of(config):
        dr.set_bits(model, config)
        dr.recalibrate_bn(model, calib, n_batches=2)
        model.eval()
        with torch.no_grad():
            tot = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in measure)
        dr.set_bits(model, 8)
        return tot / sum(int(y.numel()) for _, y in measure)

    names = list(dr.dr_layers(model))
    base = loss_of(8)
    for n in names:
        assert scores[n][8] == pytest.approx(-base, rel=1e-9)  # every layer at h: one model
        for b in (4, 2):
            cfg = dict.fromkeys(names, 8)
            cfg[n] = b
            assert scores[n][b] == pytest.approx(-loss_of(cfg), rel=1e-9), (n, b)
        assert scores[n][2] < scores[n][8]  # 2-bit weights and inputs cost loss here
    with pytest.raises(ValueError, match="calib_batches"):
        dr.measured_scores(model, batches[:2], (8, 2), n_batches=1, calib_batches=2)


def test_loss_search_picks_the_brute_force_optimum(trained, digits):
    import itertools

    _, res = trained
    model = res.model
    dr.set_bits(model, 8)
    batches = list(itertools.islice(iter(digits[0]), 6))
    out = dr.search(
        model,
        batches,
        digits[1],
        targets=[3.0, 5.0],
        calib_batches=2,
        loss_batches=4,
        sensitivity="loss",
        progress=False,
    )
    assert out.meta["sensitivity"] == "loss" and out.traces == {}
    params = dr.layer_params(model)
    names = list(params)
    total = sum(params.values())
    for sol in out.solutions:
        best = max(
            (
                c
                for c in itertools.product((8, 6, 4, 2), repeat=len(names))
                if sum(params[n] * b for n, b in zip(names, c, strict=True)) <= sol.target * total
            ),
            key=lambda c: sum(out.scores[n][b] for n, b in zip(names, c, strict=True)),
        )
        want = sum(out.scores[n][b] for n, b in zip(names, best, strict=True))
        assert sol.objective == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="sensitivity"):
        dr.search(model, batches, digits[1], sensitivity="fisher", progress=False)
