"""Mutations of programs: insert, remove, rewire, change op; every result is a valid program.

Each mutation works on the vertex list in topological order and re-indexes operands, so the
result always satisfies :class:`Program`'s invariants (operands are earlier vertices, vertex 0
is ``x``, the output is last). :func:`simplify` then folds every operation that does not
depend on ``x`` into one constant (it costs nothing to store) and drops unused vertices;
:func:`mutate` retries until the structure actually changes and stays within ``max_ops``.
New constants are drawn from N(0, 1); the inner fit replaces them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lowbit.methods.autonumerics.program import ARITY, OPS, Program, Vertex, evaluate

KINDS = ("insert", "remove", "rewire", "change")
# insertion is the only way to grow; it is drawn twice as often as each other kind
_KIND_WEIGHTS = np.array([0.4, 0.2, 0.2, 0.2])
NEW_CONST = -1  # operand marker: a fresh constant leaf
# probability that an insertion composes the edge with an affine map in x: op(source, x, c)
P_AFFINE_INSERT = 0.5


def check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    """Validate an op set (a non-empty subset of :data:`OPS`).

    Raises:
        ValueError: an unknown op or an empty set.
    """
    out = tuple(dict.fromkeys(str(o).strip().lower() for o in ops))
    bad = [o for o in out if o not in ARITY]
    if bad or not out:
        raise ValueError(f"ops {list(ops)!r}; accepted: {', '.join(OPS)} (at least one)")
    return out


def _shift(vs: list[Vertex], pos: int, n: int) -> list[Vertex]:
    """Re-index operands for ``n`` vertices inserted at ``pos``."""
    return [Vertex(v.op, tuple(a + n if a >= pos else a for a in v.args), v.value) for v in vs]


def _operand(
    rng: np.random.Generator, before: int, p_const: float = 0.4, p_x: float = 0.4
) -> int | None:
    """A new operand for a vertex at position ``before``: None ("a new constant") with
    probability ``p_const``, the input ``x`` with ``p_x`` (polynomials need it everywhere),
    else any earlier vertex."""
    u = rng.random()
    if u < p_const:
        return None
    if u < p_const + p_x:
        return 0
    return int(rng.integers(0, before))


def _new_vertex(
    rng: np.random.Generator, op: str, pos: int, fixed: dict[int, int], vs: list[Vertex]
) -> tuple[list[Vertex], int]:
    """Insert at ``pos`` an ``op`` vertex with the operands ``fixed`` (slot -> index < pos, or
    :data:`NEW_CONST`) and random others (earlier vertices or new constants); returns
    (vertices, new vertex index)."""
    arity = ARITY[op]
    args: list[int | None] = []
    for s in range(arity):
        if s in fixed:
            args.append(None if fixed[s] == NEW_CONST else fixed[s])
        else:
            args.append(_operand(rng, pos))
    n_new = sum(1 for a in args if a is None)
    vs = vs[:pos] + _shift(vs[pos:], pos, n_new + 1)
    consts = [Vertex("const", (), float(rng.normal())) for _ in range(n_new)]
    k = pos
    final = []
    for a in args:
        if a is None:
            final.append(k)
            k += 1
        else:
            final.append(a)
    value = float(rng.normal()) if op == "scale" else 0.0
    new = Vertex(op, tuple(final), value)
    return vs[:pos] + consts + [new] + vs[pos:], pos + n_new


def insert(p: Program, rng: np.random.Generator, ops: Sequence[str]) -> Program:
    """Put a new operation on a random edge (or after the output); the edge's source is one of
    its operands, so the new vertex changes the function.

    With probability :data:`P_AFFINE_INSERT` the other operands are ``x`` then a new constant
    (``fma(source, x, c)``, ``mul(source, x)``, ``add(source, x)``, ``fma(x, c, source)``...,
    the source in a random slot), the move that raises a polynomial's degree by one; else
    each is ``x``, a new constant or any earlier vertex.
    """
    vs = list(p.vertices)
    edges: list[tuple[int, int]] = [(len(vs), -1)]  # (consumer, slot); len(vs): the output
    for i in sorted(p.reachable):
        edges += [(i, s) for s in range(len(vs[i].args))]
    consumer, slot = edges[int(rng.integers(len(edges)))]
    source = p.output if consumer == len(vs) else vs[consumer].args[slot]
    op = str(rng.choice(list(ops)))
    src_slot = int(rng.integers(ARITY[op]))
    keep = {src_slot: source}
    if rng.random() < P_AFFINE_INSERT:
        free = [s for s in range(ARITY[op]) if s != src_slot]
        for s, operand in zip(free, (0, NEW_CONST), strict=False):
            keep[s] = operand
    pos = consumer  # the new vertex goes right before its consumer
    vs, w = _new_vertex(rng, op, pos, keep, vs)
    if consumer == len(p.vertices):
        return Program(tuple(vs))
    c_idx = w + 1 + (consumer - pos)  # the consumer moved up by the inserted vertices
    cv = vs[c_idx]
    args = list(cv.args)
    args[slot] = w
    vs[c_idx] = Vertex(cv.op, tuple(args), cv.value)
    return Program(tuple(vs))


def remove(p: Program, rng: np.random.Generator) -> Program:
    """Delete a random operation; its users read one of its operands instead."""
    cands = [i for i in sorted(p.reachable) if p.vertices[i].is_op]
    if not cands:
        return p
    w = cands[int(rng.integers(len(cands)))]
    r = p.vertices[w].args[int(rng.integers(len(p.vertices[w].args)))]
    if w == p.output:
        return Program(p.vertices[: r + 1]).pruned()
    vs = []
    for i, v in enumerate(p.vertices):
        if i == w:
            continue
        args = tuple(r if a == w else a for a in v.args)
        vs.append(Vertex(v.op, tuple(a - 1 if a > w else a for a in args), v.value))
    return Program(tuple(vs))


def rewire(p: Program, rng: np.random.Generator) -> Program:
    """Point one operand of a random operation at another earlier vertex or a new constant."""
    cands = [i for i in sorted(p.reachable) if p.vertices[i].is_op]
    if not cands:
        return p
    v_idx = cands[int(rng.integers(len(cands)))]
    v = p.vertices[v_idx]
    slot = int(rng.integers(len(v.args)))
    src = _operand(rng, v_idx, p_const=0.25)
    vs = list(p.vertices)
    if src is None:
        const = Vertex("const", (), float(rng.normal()))
        vs = [*vs[:v_idx], const, *_shift(vs[v_idx:], v_idx, 1)]
        src, v_idx = v_idx, v_idx + 1
        v = vs[v_idx]
    args = list(v.args)
    args[slot] = src
    vs[v_idx] = Vertex(v.op, tuple(args), v.value)
    return Program(tuple(vs))


def change_op(p: Program, rng: np.random.Generator, ops: Sequence[str]) -> Program:
    """Give a random operation another op; operands are kept, dropped or drawn as needed."""
    cands = [i for i in sorted(p.reachable) if p.vertices[i].is_op]
    if not cands:
        return p
    v_idx = cands[int(rng.integers(len(cands)))]
    v = p.vertices[v_idx]
    choices = [o for o in ops if o != v.op]
    if not choices:
        return p
    op = str(rng.choice(choices))
    arity = ARITY[op]
    keep = list(v.args)
    rng.shuffle(keep)
    fixed = {s: a for s, a in enumerate(keep[:arity])}
    vs = list(p.vertices)
    # build the replacement just before v, then point v's users at it and drop v
    vs, w = _new_vertex(rng, op, v_idx, fixed, vs)
    old = w + 1
    out = []
    for i, u in enumerate(vs):
        if i == old:
            continue
        args = tuple(w if a == old else a for a in u.args)
        out.append(Vertex(u.op, tuple(a - 1 if a > old else a for a in args), u.value))
    return Program(tuple(out))


def simplify(p: Program) -> Program:
    """Fold operations that do not depend on ``x`` into constants; drop unused vertices."""
    dep = p.depends_on_x()
    vs = list(p.vertices)
    changed = False
    for i in sorted(p.reachable):
        v = vs[i]
        if v.is_op and not dep[i]:
            val = float(evaluate(Program(tuple(vs[: i + 1])), np.zeros(1))[0])
            vs[i] = Vertex("const", (), val if np.isfinite(val) else 0.0)
            changed = True
    q = Program(tuple(vs)) if changed else p
    return q.pruned()


def random_program(rng: np.random.Generator, ops: Sequence[str], n_ops: int = 1) -> Program:
    """A small random program: ``n_ops`` insertions into the constant program."""
    p = Program((Vertex("x"), Vertex("const", (), float(rng.normal()))))
    for _ in range(64):
        if p.ops >= n_ops:
            break
        p = simplify(insert(p, rng, ops))
    return p


def mutate(
    p: Program, rng: np.random.Generator, ops: Sequence[str], *, max_ops: int = 10, tries: int = 64
) -> Program:
    """A random mutation of ``p`` with a different structure and at most ``max_ops`` ops.

    Kinds are drawn with probabilities 0.4 (insert), 0.2 (remove, rewire, change op); results
    above ``max_ops`` are retried. Returns ``p`` itself if no try succeeds.
    """
    ops = check_ops(ops)
    key = p.key()
    for _ in range(tries):
        kind = KINDS[int(rng.choice(len(KINDS), p=_KIND_WEIGHTS))]
        if kind == "insert":
            q = insert(p, rng, ops)
        elif kind == "remove":
            q = remove(p, rng)
        elif kind == "rewire":
            q = rewire(p, rng)
        else:
            q = change_op(p, rng, ops)
        q = simplify(q)
        if q.ops <= max_ops and q.key() != key:
            return q
    return p
