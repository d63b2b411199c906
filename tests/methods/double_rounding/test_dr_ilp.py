"""The mixed-precision ILP against brute-force enumeration of every configuration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("scipy")

from lowbit.methods import double_rounding as dr

BITS = (8, 6, 4, 2)


def brute_force(scores, params, bits, budget):
    """Best objective over all len(bits)^L configurations with memory <= budget."""
    best, best_cfgs = -np.inf, []
    for choice in itertools.product(range(len(bits)), repeat=len(params)):
        memory = sum(p * bits[c] for p, c in zip(params, choice, strict=True))
        if memory > budget:
            continue
        obj = sum(scores[i][c] for i, c in enumerate(choice))
        if obj > best + 1e-12:
            best, best_cfgs = obj, [choice]
        elif abs(obj - best) <= 1e-12:
            best_cfgs.append(choice)
    return best, best_cfgs


@pytest.mark.parametrize("seed", range(4))
def test_milp_matches_brute_force_on_four_layers(seed):
    rng = np.random.default_rng(seed)
    params = [int(p) for p in rng.integers(50, 5000, size=4)]
    # concave, increasing-in-bits scores like -t_l * err(b), plus noise so layers differ
    t = rng.uniform(0.1, 5, size=4)
    err = np.array([[4.0 ** -(b - 2) for b in BITS]]) * rng.uniform(0.5, 2, size=(4, 1))
    scores = -(t[:, None] * err) + rng.normal(0, 0.01, size=(4, 4))
    total = sum(params)
    for target in (2.0, 2.5, 3.3, 4.0, 4.75, 5.5, 6.0, 7.2, 8.0):
        sol = dr.solve_mixed_precision(scores, params, BITS, target_mean_bits=target)
        best, cfgs = brute_force(scores, params, BITS, target * total)
        assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-12), target
        choice = tuple(BITS.index(sol.config[str(i)]) for i in range(4))
        assert choice in cfgs, target
        assert sol.memory_bits <= target * total
        assert sol.mean_bits == pytest.approx(sol.memory_bits / total)


def test_memory_budget_and_named_layers():
    rng = np.random.default_rng(9)
    names = ["a", "b", "c", "d"]
    params = dict(zip(names, [100, 2000, 300, 4000], strict=True))
    table = {n: {b: float(-rng.uniform(0.5, 3) * 2.0**-b) for b in BITS} for n in names}
    arr = [[table[n][b] for b in BITS] for n in names]
    for budget in (12800, 20000, 30000, 51200):
        sol = dr.solve_mixed_precision(table, params, BITS, memory_budget=budget)
        best, cfgs = brute_force(arr, [params[n] for n in names], BITS, budget)
        assert sol.objective == pytest.approx(best, rel=1e-9)
        assert tuple(BITS.index(sol.config[n]) for n in names) in cfgs
        assert sol.memory_bits <= budget and sol.target == budget


def test_sweep_is_monotone_and_reaches_both_ends():
    rng = np.random.default_rng(1)
    params = [int(p) for p in rng.integers(100, 1000, size=4)]
    scores = -(rng.uniform(0.1, 3, size=(4, 1)) * np.array([[2.0**-b for b in BITS]]))
    sols = dr.sweep(scores, params, BITS, targets=np.arange(1.5, 8.01, 0.25))
    objs = [s.objective for s in sols]
    assert objs == sorted(objs)  # a larger budget never scores worse
    assert sols[0].config == dict.fromkeys("0123", 2)  # 1.5 is skipped, 2.0 is all-2-bit
    assert sols[-1].config == dict.fromkeys("0123", 8)
    assert len({tuple(sorted(s.config.items())) for s in sols}) == len(sols)


def test_bad_input_is_rejected():
    scores = np.zeros((2, 4))
    with pytest.raises(ValueError, match="exactly one of target_mean_bits and memory_budget"):
        dr.solve_mixed_precision(scores, [1, 1], BITS)
    with pytest.raises(ValueError, match="exactly one of"):
        dr.solve_mixed_precision(scores, [1, 1], BITS, target_mean_bits=4, memory_budget=8)
    with pytest.raises(ValueError, match="below the smallest configuration"):
        dr.solve_mixed_precision(scores, [1, 1], BITS, target_mean_bits=1.5)
    with pytest.raises(ValueError, match=r"scores must be \(layers, 4\)"):
        dr.solve_mixed_precision(np.zeros((2, 3)), [1, 1], BITS, target_mean_bits=4)
    with pytest.raises(ValueError, match="one positive count per layer"):
        dr.solve_mixed_precision(scores, [1, 0], BITS, target_mean_bits=4)
    with pytest.raises(ValueError, match="scores lack width 2"):
        dr.solve_mixed_precision({"a": {8: 0, 6: 0, 4: 0}}, {"a": 1}, BITS, target_mean_bits=4)
