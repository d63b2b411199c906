"""Mutations always give valid programs, change the structure and respect the op set."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.methods.autonumerics import (
    OPS,
    Program,
    Vertex,
    change_op,
    evaluate,
    horner,
    insert,
    mutate,
    random_program,
    remove,
    rewire,
    simplify,
)
from lowbit.methods.autonumerics.mutations import check_ops


def _ops_used(p: Program) -> set[str]:
    return {p.vertices[i].op for i in p.reachable if p.vertices[i].is_op}


def _subsequence(small: Program, big: Program) -> bool:
    """Whether ``small``'s vertex ops appear in ``big`` in order (insertion keeps them)."""
    it = iter(v.op for v in big.vertices)
    return all(any(op == o for o in it) for op in (v.op for v in small.vertices))


@pytest.mark.parametrize("ops", [("add", "mul", "fma"), OPS, ("fma",), ("scale", "sub")])
def test_random_mutation_chains_stay_valid(ops: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 17)
    for _ in range(8):
        p = random_program(rng, ops, 2)
        for _ in range(40):
            q = mutate(p, rng, ops, max_ops=6)
            # the constructor re-validates: operands earlier, arities right, x at 0
            q = Program(q.vertices)
            assert q.ops <= 6
            assert _ops_used(q) <= set(ops)
            assert q.key() != p.key() or q is p
            assert evaluate(q, x).shape == x.shape
            p = q


def test_insert_adds_exactly_one_operation_and_keeps_the_old_vertices() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = random_program(rng, OPS, int(rng.integers(0, 5)))
        q = insert(p, rng, OPS)
        assert q.ops == p.ops + 1
        assert _subsequence(p, q)


def test_remove_deletes_an_operation() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = random_program(rng, OPS, int(rng.integers(1, 6)))
        q = remove(p, rng)
        assert q.ops < p.ops


def test_rewire_and_change_op_keep_the_size_before_simplification() -> None:
    rng = np.random.default_rng(3)
    changed_ops = 0
    for _ in range(200):
        p = random_program(rng, OPS, int(rng.integers(1, 6)))
        r = rewire(p, rng)
        assert r.ops <= p.ops  # rewiring can orphan a branch, never add an operation
        c = change_op(p, rng, OPS)
        if c.ops == p.ops and sorted(_ops_used(c)) != sorted(_ops_used(p)):
            changed_ops += 1
        assert c.ops <= p.ops
    assert changed_ops > 50


def test_insert_on_horner_can_extend_it() -> None:
    rng = np.random.default_rng(4)
    p = horner([1.0, 0.7, 0.24])
    found = False
    for _ in range(300):
        q = simplify(insert(p, rng, ("fma",)))
        if q.is_affine() and q.ops == 3 and q.op_counts() == {"fma": 3}:
            # a degree-3 polynomial: its fourth finite difference vanishes, the third does not
            x = np.arange(8.0)
            q = q.with_constants(np.arange(1.0, len(q.constant_slots) + 1))
            d = np.diff(evaluate(q, x), 3)
            if np.all(d == d[0]) and d[0] != 0:
                found = True
                break
    assert found


def test_simplify_folds_operations_without_x() -> None:
    p = Program(
        (
            Vertex("x"),
            Vertex("const", (), 1.5),
            Vertex("const", (), 2.0),
            Vertex("fma", (1, 2, 1)),  # 1.5 * 2 + 1.5 = 4.5, no x
            Vertex("scale", (3,), 0.5),  # 2.25, no x
            Vertex("mul", (4, 0)),
        )
    )  # 2.25 x
    q = simplify(p)
    assert q.ops == 1 and q.op_counts() == {"mul": 1}
    assert q.constants().tolist() == [2.25]
    x = np.linspace(-1, 1, 9)
    assert np.array_equal(evaluate(q, x), evaluate(p, x))


def test_mutate_is_reproducible_and_respects_max_ops() -> None:
    p = horner([1.0, 0.5, 0.25, 0.125])
    a = [mutate(p, np.random.default_rng(7), ("add", "mul", "fma"), max_ops=3) for _ in range(3)]
    assert all(m == a[0] for m in a)
    rng = np.random.default_rng(8)
    assert all(mutate(p, rng, ("fma",), max_ops=3).ops <= 3 for _ in range(50))


def test_check_ops_rejects_unknown_ops() -> None:
    assert check_ops(["FMA", "add", "fma"]) == ("fma", "add")
    with pytest.raises(ValueError, match="accepted: add, sub, mul, fma, scale"):
        check_ops(["add", "div"])
    with pytest.raises(ValueError, match="at least one"):
        check_ops([])
