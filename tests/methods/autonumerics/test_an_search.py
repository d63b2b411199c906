"""NSGA-II search: Pareto machinery, reproducibility, checkpoint/resume, emitted code."""

from __future__ import annotations

import argparse
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from lowbit.cli import autonumerics_cmd
from lowbit.methods.autonumerics import (
    EvolveConfig,
    Individual,
    RealProblem,
    SearchResult,
    compile_source,
    crowding_distance,
    evaluate,
    evaluate_in_format,
    evolve,
    format_inputs,
    get_target,
    horner,
    nondominated_sort,
    pareto_front,
    random_program,
    reference,
    search,
    to_arith_source,
    to_numpy_source,
    ulp,
)


def test_nondominated_sort_and_crowding_by_brute_force() -> None:
    rng = np.random.default_rng(0)
    pts = np.stack([rng.integers(0, 6, 40), rng.integers(0, 6, 40)], axis=1).astype(float)
    fronts = nondominated_sort(pts)
    assert sorted(i for f in fronts for i in f) == list(range(40))

    def dominates(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.all(a <= b) and np.any(a < b))

    rank = {i: r for r, f in enumerate(fronts) for i in f}
    for i in range(40):
        for j in range(40):
            if dominates(pts[i], pts[j]):
                assert rank[i] < rank[j]
        # a point of rank r > 0 is dominated by some point of rank r - 1
        if rank[i] > 0:
            assert any(dominates(pts[k], pts[i]) for k in fronts[rank[i] - 1])
    cd = crowding_distance(np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]]))
    # interior points: sum over objectives of the neighbours' gap / range
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    assert cd[1] == pytest.approx(2 / 4 + 3 / 4) and cd[2] == pytest.approx(3 / 4 + 2 / 4)


def test_pareto_front_keeps_strict_improvements_only() -> None:
    p = horner([1.0])
    inds = [
        Individual(p, e, o)
        for e, o in [
            (1.0, 0),
            (0.5, 1),
            (0.6, 2),
            (0.5, 3),
            (0.1, 4),
            (0.2, 4),
            (0.1 * (1 - 1e-9), 5),
        ]
    ]
    assert [(i.ops, i.error) for i in pareto_front(inds)] == [(0, 1.0), (1, 0.5), (4, 0.1)]


@pytest.fixture(scope="module")
def real_problem() -> RealProblem:
    return RealProblem(get_target("exp2"), (0.0, 1.0), n_fit=257)


def _run(
    problem, tmp: Path | None = None, budget: int = 48, resume: bool = False, workers: int = 1
):
    cfg = EvolveConfig(
        budget=budget, population=8, max_ops=3, seed=5, workers=workers, checkpoint_every=1
    )
    return evolve(
        problem,
        cfg,
        problem_id={"f": "exp2"},
        progress=False,
        resume=resume,
        checkpoint=None if tmp is None else tmp / "ck.json",
    )


def test_evolution_is_reproducible_and_resumes_bit_for_bit(real_problem, tmp_path) -> None:
    full = _run(real_problem, budget=48)
    again = _run(real_problem, budget=48)
    assert json.dumps(full.to_dict()["archive"]) == json.dumps(again.to_dict()["archive"])
    half = _run(real_problem, tmp_path, budget=24)
    assert half.children == 24 and (tmp_path / "ck.json").is_file()
    resumed = _run(real_problem, tmp_path, budget=48, resume=True)
    for key in ("archive", "population", "cache", "rng_state"):
        assert json.dumps(resumed.to_dict()[key]) == json.dumps(full.to_dict()[key]), key
    assert resumed.children == 48 and resumed.generation == full.generation
    # a checkpoint of another problem is refused
    with pytest.raises(ValueError, match="checkpoint"):
        evolve(
            real_problem,
            EvolveConfig(budget=8, population=8, max_ops=3, seed=5),
            problem_id={"f": "log2"},
            checkpoint=tmp_path / "ck.json",
            resume=True,
            progress=False,
        )


def test_front_programs_score_what_they_claim(real_problem) -> None:
    st = _run(real_problem, budget=48)
    front = st.front()
    assert front and all(a.ops < b.ops and a.error > b.error for a, b in itertools.pairwise(front))
    for ind in front:
        e = np.max(
            np.abs(evaluate(ind.program, real_problem.x) - real_problem.truth) / real_problem.weight
        )
        assert e == ind.error and ind.ops == ind.program.ops


def test_two_workers_give_the_same_result(real_problem) -> None:
    one = _run(real_problem, budget=16)
    two = _run(real_problem, budget=16, workers=2)
    assert json.dumps(one.to_dict()["archive"]) == json.dumps(two.to_dict()["archive"])


def test_emitted_code_is_bit_identical_to_the_evaluators() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([format_inputs("bf16", (-2.0, 2.0))[::7], [0.0, -0.0]])
    for _ in range(20):
        p = random_program(rng, ("add", "sub", "mul", "fma", "scale"), int(rng.integers(0, 5)))
        f = compile_source(to_numpy_source(p, "f"), "f")
        assert np.array_equal(f(x), evaluate(p, x), equal_nan=True)
        g = compile_source(to_arith_source(p, "bf16", "rtz", "g"), "g")
        assert np.array_equal(g(x), evaluate_in_format(p, x, "bf16", "rtz"), equal_nan=True)
    with pytest.raises(ValueError, match="identifier"):
        to_numpy_source(horner([1.0]), "not a name")


def test_search_in_bf16_matches_an_independent_exhaustive_check(tmp_path) -> None:
    res = search(
        "exp2",
        "0,1",
        fmt="bf16",
        budget=24,
        population=8,
        max_ops=2,
        seed=1,
        progress=False,
        polish=1,
        baseline_degrees=[1, 2],
    )
    assert res.front and res.unit.startswith("max ulps of bf16")
    x = format_inputs("bf16", (0.0, 1.0))
    truth = np.exp2(x)  # float64 exp2: within 1e-16 relative, far below a bf16 ulp
    for e in res.front:
        got = np.max(np.abs(evaluate_in_format(e.program, x, "bf16") - truth) / ulp(truth, "bf16"))
        assert got == pytest.approx(e.error, abs=1e-9)
    assert {b.kind for b in res.baselines} == {"minimax", "minimax+tuned", "taylor"}
    back = SearchResult.load(res.save(tmp_path / "r.json"))
    assert back.to_dict() == res.to_dict()
    png = res.plot(tmp_path / "p.png", bound=1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_search_front_is_on_the_minimax_line_for_tiny_programs() -> None:
    res = search(
        "exp2",
        (0.0, 1.0),
        budget=96,
        population=12,
        max_ops=2,
        seed=0,
        progress=False,
        baseline_degrees=[0, 1, 2],
    )
    mm = res.baseline_line("minimax")
    front = {e.ops: e.error for e in res.front}
    for ops in (0, 1, 2):
        assert front[ops] <= mm[ops] * (1 + 1e-6), (ops, front, mm)
    # the error is the relative error, as a float64 evaluation on the validation grid says
    e2 = next(e for e in res.front if e.ops == 2)
    xv = np.linspace(0, 1, 16385)
    fv = reference("exp2", xv)
    assert np.max(np.abs(evaluate(e2.program, xv) - fv) / fv) == e2.error


def test_cli_writes_table_plot_programs_and_json(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    autonumerics_cmd.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "autonumerics",
            "--function",
            "exp2",
            "--interval",
            "0,1",
            "--format",
            "bf16",
            "--ops",
            "add,mul,fma",
            "--budget",
            "16",
            "--population",
            "8",
            "--max-ops",
            "2",
            "--seed",
            "0",
            "--bound",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    buf = io.StringIO()
    assert args.func(args, Console(file=buf, width=200)) == 0
    text = buf.getvalue()
    assert "exp2 on [0, 1], in bf16 (rne), exhaustive" in text and "bound 1:" in text
    for name in ("front.png", "result.json", "programs.py"):
        assert (tmp_path / name).is_file()
    res = SearchResult.load(tmp_path / "result.json")
    code = (tmp_path / "programs.py").read_text()
    scope: dict = {}
    exec(compile(code, "programs.py", "exec"), scope)
    x = format_inputs("bf16", (0.0, 1.0))
    for e in res.front:
        fn = scope[f"exp2_{e.ops}ops_bf16"]
        assert np.array_equal(fn(x), evaluate_in_format(e.program, x, "bf16"))
    bad = parser.parse_args(["autonumerics", "--ops", "add,div", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="accepted"):
        bad.func(bad, Console(file=io.StringIO()))
