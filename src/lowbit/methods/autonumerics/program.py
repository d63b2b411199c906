"""Straight-line programs of one input: the individuals AutoNumerics evolves.

A :class:`Program` is a DAG stored in topological order. Vertex 0 is the input ``x``; the last
vertex is the output. Every other vertex is either a leaf holding a learnable constant
(``const``, free of charge) or an operation, which costs one:

========  =====  =================================
op        arity  value
========  =====  =================================
``add``   2      a + b
``sub``   2      a - b
``mul``   2      a * b
``fma``   3      a * b + c
``scale`` 1      k * a, with its own constant k
========  =====  =================================

Two evaluators run a program on a whole array of inputs at once:

* :func:`evaluate` in float64 (the "real-number" mode; ``fma`` is ``a*b + c`` with two float64
  roundings, exactly what the emitted numpy code computes);
* :func:`evaluate_in_format`, where every vertex is one vectorised :mod:`lowbit.arith` operation
  correctly rounded to the format in the chosen mode, and constants are stored in the format
  (rounded to nearest even once).

For the inner constant fit, :func:`affine_form` writes a program whose output is affine in its
constants as ``h(x) + G(x) @ c`` and :func:`jacobian` gives value and derivative with respect to
the constants for any program (forward mode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ARITY = {"add": 2, "sub": 2, "mul": 2, "fma": 3, "scale": 1}
OPS = tuple(ARITY)
LEAVES = ("x", "const")


@dataclass(frozen=True)
class Vertex:
    """One vertex: ``op`` (``"x"``, ``"const"`` or an operation), operand indices, constant."""

    op: str
    args: tuple[int, ...] = ()
    value: float = 0.0

    @property
    def is_op(self) -> bool:
        """Whether the vertex is an operation (costs one)."""
        return self.op in ARITY

    @property
    def has_constant(self) -> bool:
        """Whether the vertex holds a learnable constant (``const`` and ``scale``)."""
        return self.op in ("const", "scale")


@dataclass(frozen=True)
class Program:
    """A straight-line program: ``vertices[0]`` is ``x``, the last vertex is the output.

    Raises:
        ValueError: an unknown op, a wrong number of operands, an operand that is not an
            earlier vertex, or an ``x`` anywhere but vertex 0.
    """

    vertices: tuple[Vertex, ...]
    _reach: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vs = tuple(self.vertices)
        object.__setattr__(self, "vertices", vs)
        if not vs or vs[0].op != "x":
            raise ValueError("a program starts with the input vertex Vertex('x')")
        for i, v in enumerate(vs):
            if v.op not in ARITY and v.op not in LEAVES:
                raise ValueError(f"vertex {i}: op {v.op!r}; accepted: {', '.join(LEAVES + OPS)}")
            if v.op == "x" and i != 0:
                raise ValueError(f"vertex {i}: the input 'x' may only be vertex 0")
            want = ARITY.get(v.op, 0)
            if len(v.args) != want:
                raise ValueError(f"vertex {i}: {v.op} takes {want} operands, got {len(v.args)}")
            for a in v.args:
                if not (0 <= int(a) < i):
                    raise ValueError(
                        f"vertex {i}: operand {a} is not an earlier vertex (0..{i - 1})"
                    )
        reach = {len(vs) - 1}
        for i in range(len(vs) - 1, -1, -1):
            if i in reach:
                reach.update(vs[i].args)
        object.__setattr__(self, "_reach", frozenset(reach))

    # ---- structure ---------------------------------------------------------------------------
    @property
    def output(self) -> int:
        """Index of the output vertex (the last one)."""
        return len(self.vertices) - 1

    @property
    def reachable(self) -> frozenset[int]:
        """Indices of the vertices the output depends on."""
        return self._reach

    @property
    def ops(self) -> int:
        """Cost: the number of operations the output depends on."""
        return sum(1 for i in self._reach if self.vertices[i].is_op)

    def op_counts(self) -> dict[str, int]:
        """Number of reachable operations of each kind."""
        out: dict[str, int] = {}
        for i in sorted(self._reach):
            v = self.vertices[i]
            if v.is_op:
                out[v.op] = out.get(v.op, 0) + 1
        return out

    @property
    def constant_slots(self) -> tuple[int, ...]:
        """Indices of the vertices holding a constant, in order."""
        return tuple(i for i, v in enumerate(self.vertices) if v.has_constant)

    def constants(self) -> np.ndarray:
        """The constants' values (float64), in :attr:`constant_slots` order."""
        return np.array([self.vertices[i].value for i in self.constant_slots], dtype=np.float64)

    def with_constants(self, values: Any) -> Program:
        """A copy with new constant values (in :attr:`constant_slots` order)."""
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        slots = self.constant_slots
        if vals.size != len(slots):
            raise ValueError(f"{vals.size} constants given; the program holds {len(slots)}")
        vs = list(self.vertices)
        for j, i in enumerate(slots):
            vs[i] = Vertex(vs[i].op, vs[i].args, float(vals[j]))
        return Program(tuple(vs))

    def depends_on_x(self) -> list[bool]:
        """Per vertex: whether its value depends on the input."""
        dep = [False] * len(self.vertices)
        dep[0] = True
        for i, v in enumerate(self.vertices):
            if v.args:
                dep[i] = any(dep[a] for a in v.args)
        return dep

    def pruned(self) -> Program:
        """The same function without the vertices the output does not use."""
        keep = sorted(self._reach | {0})
        new = {old: k for k, old in enumerate(keep)}
        return Program(
            tuple(
                Vertex(
                    self.vertices[i].op,
                    tuple(new[a] for a in self.vertices[i].args),
                    self.vertices[i].value,
                )
                for i in keep
            )
        )

    def key(self) -> str:
        """Structure of the pruned program without constant values (identifies a search point)."""
        p = self.pruned()
        return ";".join(f"{v.op}({','.join(map(str, v.args))})" for v in p.vertices)

    def is_affine(self) -> bool:
        """Whether the output is an affine function of the constants (for fixed ``x``).

        Then the minimax fit of the constants is a linear program.
        """
        # kind per vertex: 0 = no constants involved, 1 = affine in constants, 2 = other
        kind = [0] * len(self.vertices)
        for i, v in enumerate(self.vertices):
            ks = [kind[a] for a in v.args]
            if v.op == "const":
                kind[i] = 1
            elif v.op in ("add", "sub"):
                kind[i] = max(ks)
            elif v.op == "mul":
                kind[i] = 2 if min(ks) > 0 else max(ks)
            elif v.op == "fma":
                prod = 2 if min(ks[:2]) > 0 else max(ks[:2])
                kind[i] = max(prod, ks[2])
            elif v.op == "scale":
                kind[i] = 1 if ks[0] == 0 else 2
        return kind[self.output] <= 1

    # ---- text and JSON -----------------------------------------------------------------------
    def lines(self) -> list[str]:
        """One readable line per reachable vertex, e.g. ``v3 = fma(v2, x, c1)``."""
        names = self._names()
        out = []
        for i in sorted(self._reach):
            v = self.vertices[i]
            if v.op == "const":
                out.append(f"{names[i]} = {v.value!r}")
            elif v.op == "scale":
                out.append(f"{names[i]} = {v.value!r} * {names[v.args[0]]}")
            elif v.is_op:
                out.append(f"{names[i]} = {v.op}({', '.join(names[a] for a in v.args)})")
        return out

    def _names(self) -> dict[int, str]:
        names = {0: "x"}
        nc = nv = 0
        for i, v in enumerate(self.vertices[1:], start=1):
            if v.op == "const":
                names[i] = f"c{nc}"
                nc += 1
            else:
                nv += 1
                names[i] = f"v{nv}"
        return names

    def __str__(self) -> str:
        p = self.pruned()
        return "; ".join(p.lines()) + f"; return {p._names()[p.output]}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"vertices": [[op, [args...], value], ...]}``."""
        return {"vertices": [[v.op, list(v.args), v.value] for v in self.vertices]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Program:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(
                Vertex(str(op), tuple(int(a) for a in args), float(val))
                for op, args, val in d["vertices"]
            )
        )

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string (constants as exact float64 reprs)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> Program:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(s))


# ---- builders --------------------------------------------------------------------------------
def horner(coefficients: Any) -> Program:
    """The Horner program of ``c[0] + c[1] x + ... + c[n] x^n`` (``n`` fma, no other op).

    Degree 0 is the constant ``c[0]`` (0 operations).
    """
    c = [float(v) for v in np.asarray(coefficients, dtype=np.float64).reshape(-1)]
    if not c:
        raise ValueError("horner needs at least one coefficient")
    vs: list[Vertex] = [Vertex("x"), Vertex("const", (), c[-1])]
    acc = 1
    for coef in reversed(c[:-1]):
        vs.append(Vertex("const", (), coef))
        vs.append(Vertex("fma", (acc, 0, len(vs) - 1)))
        acc = len(vs) - 1
    return Program(tuple(vs))


# ---- evaluation ------------------------------------------------------------------------------
def evaluate(program: Program, x: Any) -> np.ndarray:
    """The program's output in float64 for every element of ``x`` (real-number mode)."""
    xs = np.asarray(x, dtype=np.float64)
    vals: dict[int, Any] = {0: xs}
    with np.errstate(all="ignore"):
        for i in sorted(program.reachable):
            v = program.vertices[i]
            a = [vals[j] for j in v.args]
            if v.op == "const":
                vals[i] = np.float64(v.value)
            elif v.op == "add":
                vals[i] = a[0] + a[1]
            elif v.op == "sub":
                vals[i] = a[0] - a[1]
            elif v.op == "mul":
                vals[i] = a[0] * a[1]
            elif v.op == "fma":
                vals[i] = a[0] * a[1] + a[2]
            elif v.op == "scale":
                vals[i] = np.float64(v.value) * a[0]
    return np.broadcast_to(np.asarray(vals[program.output], dtype=np.float64), xs.shape).copy()


def round_constants(program: Program, fmt: Any) -> Program:
    """The program with every constant rounded to ``fmt`` (nearest even), as stored in it."""
    from lowbit.rounding.api import round as lb_round

    c = program.constants()
    if c.size == 0:
        return program
    return program.with_constants(np.asarray(lb_round(c, fmt, "rne"), dtype=np.float64))


def evaluate_in_format(
    program: Program, x: Any, fmt: Any, mode: Any = "rne", *, seed: int | None = None
) -> np.ndarray:
    """Output with every operation correctly rounded to ``fmt`` in ``mode`` (lowbit.arith).

    ``x`` is rounded to the format (nearest even) first; constants are stored in the format
    (nearest even). Each vertex is one vectorised :mod:`lowbit.arith` call over all inputs. In
    stochastic modes vertex ``i`` draws from counter offsets ``i * x.size ...`` of ``seed``, so
    a run is reproducible and no two operations share a draw.
    """
    from lowbit import arith
    from lowbit.rounding.api import round as lb_round

    x64 = np.asarray(x, dtype=np.float64)
    shape = x64.shape
    xs = np.ascontiguousarray(np.asarray(lb_round(x64.reshape(-1), fmt, "rne"), dtype=np.float64))
    n = xs.size
    p = round_constants(program, fmt)
    vals: dict[int, np.ndarray] = {0: xs}
    kw = {"inputs": "exact"}
    if seed is not None:
        kw["seed"] = seed
    for i in sorted(p.reachable):
        v = p.vertices[i]
        a = [vals[j] for j in v.args]
        off = {"offset": i * n} if seed is not None else {}
        if v.op == "const":
            vals[i] = np.full(n, v.value)
        elif v.op == "scale":
            vals[i] = arith.mul(np.full(n, v.value), a[0], fmt, mode, **kw, **off)
        elif v.op == "fma":
            vals[i] = arith.fma(a[0], a[1], a[2], fmt, mode, **kw, **off)
        elif v.is_op:
            vals[i] = getattr(arith, v.op)(a[0], a[1], fmt, mode, **kw, **off)
        vals[i] = np.asarray(vals[i], dtype=np.float64)
    return vals[p.output].reshape(shape).copy()


def affine_form(program: Program, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(h, G)`` with ``evaluate(program, x) ≈ h + G @ constants`` (``G``: (len(x), K)).

    Raises:
        ValueError: the program is not affine in its constants (:meth:`Program.is_affine`).
    """
    if not program.is_affine():
        raise ValueError("program is not affine in its constants; use jacobian()")
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    n, slots = xs.size, program.constant_slots
    col = {s: j for j, s in enumerate(slots)}
    k = len(slots)
    h: dict[int, np.ndarray] = {0: xs}
    g: dict[int, np.ndarray | None] = {0: None}  # None: no constant involved
    with np.errstate(all="ignore"):
        for i in sorted(program.reachable - {0}):
            v = program.vertices[i]
            if v.op == "const":
                h[i] = np.zeros(n)
                gi = np.zeros((n, k))
                gi[:, col[i]] = 1.0
                g[i] = gi
                continue
            if v.op == "scale":
                h[i] = np.zeros(n)
                gi = np.zeros((n, k))
                gi[:, col[i]] = h[v.args[0]]
                g[i] = gi
                continue
            a = v.args
            if v.op in ("add", "sub"):
                s = 1.0 if v.op == "add" else -1.0
                h[i] = h[a[0]] + s * h[a[1]]
                g[i] = _gsum(g[a[0]], g[a[1]], s)
            else:
                hp, gp = _affine_mul(h[a[0]], g[a[0]], h[a[1]], g[a[1]])
                if v.op == "fma":
                    h[i] = hp + h[a[2]]
                    g[i] = _gsum(gp, g[a[2]], 1.0)
                else:
                    h[i], g[i] = hp, gp
    out_g = g[program.output]
    return h[program.output].copy(), (np.zeros((n, k)) if out_g is None else out_g.copy())


def _gsum(a: np.ndarray | None, b: np.ndarray | None, s: float) -> np.ndarray | None:
    if a is None:
        return None if b is None else s * b
    return a if b is None else a + s * b


def _affine_mul(
    ha: np.ndarray, ga: np.ndarray | None, hb: np.ndarray, gb: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    if ga is None:
        return ha * hb, (None if gb is None else ha[:, None] * gb)
    return ha * hb, hb[:, None] * ga  # gb is None: is_affine() guarantees it


def jacobian(program: Program, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(value, J)``: the float64 output and its derivative by each constant (forward mode)."""
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    n, slots = xs.size, program.constant_slots
    col = {s: j for j, s in enumerate(slots)}
    k = len(slots)
    val: dict[int, np.ndarray] = {0: xs}
    der: dict[int, np.ndarray] = {0: np.zeros((n, k))}
    with np.errstate(all="ignore"):
        for i in sorted(program.reachable - {0}):
            v = program.vertices[i]
            a = v.args
            d = np.zeros((n, k))
            if v.op == "const":
                val[i] = np.full(n, v.value)
                d[:, col[i]] = 1.0
            elif v.op == "scale":
                val[i] = v.value * val[a[0]]
                d = v.value * der[a[0]]
                d[:, col[i]] += val[a[0]]
            elif v.op in ("add", "sub"):
                s = 1.0 if v.op == "add" else -1.0
                val[i] = val[a[0]] + s * val[a[1]]
                d = der[a[0]] + s * der[a[1]]
            else:
                val[i] = val[a[0]] * val[a[1]]
                d = val[a[1]][:, None] * der[a[0]] + val[a[0]][:, None] * der[a[1]]
                if v.op == "fma":
                    val[i] = val[i] + val[a[2]]
                    d = d + der[a[2]]
            der[i] = d
    return val[program.output].copy(), der[program.output].copy()


# ---- the inputs and ulps of a format ---------------------------------------------------------
MAX_EXHAUSTIVE = 1 << 21


def _float_format(fmt: Any) -> Any:
    from lowbit.formats import FloatFormat, get_element_format

    f = get_element_format(fmt)
    if not isinstance(f, FloatFormat):
        raise ValueError(f"in-format evaluation needs a float format; got {f}")
    return f


def _positive_values(f: Any, lo: float, hi: float, limit: int) -> np.ndarray:
    """Every value v of format ``f`` with 0 < v and lo <= v <= hi (lo >= 0)."""
    mb = f.man_bits
    parts = []
    count = 0
    # subnormals: k 2^(emin - mb), k = 1 .. 2^mb - 1
    sub_step = 2.0 ** (f.emin - mb)
    if lo < f.min_normal:
        k0 = max(1, int(np.ceil(lo / sub_step)))
        k1 = min((1 << mb) - 1, int(np.floor(hi / sub_step)))
        if k1 >= k0:
            count += k1 - k0 + 1
            parts.append(np.arange(k0, k1 + 1, dtype=np.float64) * sub_step)
    e_lo = max(f.emin, int(np.floor(np.log2(lo))) if lo > 0 else f.emin)
    e_hi = min(f.emax, int(np.floor(np.log2(hi))) if hi > 0 else f.emin - 1)
    for e in range(e_lo, e_hi + 1):
        step = 2.0 ** (e - mb)
        k0 = max(1 << mb, int(np.ceil(lo / step)))
        k1 = min((2 << mb) - 1, int(np.floor(hi / step)))
        if k1 < k0:
            continue
        count += k1 - k0 + 1
        if count > limit:
            raise ValueError(
                f"{f} has more than {limit} values in [{lo}, {hi}]; exhaustive "
                "in-format evaluation takes formats of at most ~16 bits"
            )
        parts.append(np.arange(k0, k1 + 1, dtype=np.float64) * step)
    v = np.concatenate(parts) if parts else np.zeros(0)
    return v[v <= f.max]


def format_inputs(
    fmt: Any, interval: tuple[float, float], *, limit: int = MAX_EXHAUSTIVE
) -> np.ndarray:
    """Every finite value of ``fmt`` in ``[a, b]``, ascending (one zero), as float64.

    Raises:
        ValueError: not a float format, or more than ``limit`` values (use a narrower format).
    """
    f = _float_format(fmt)
    a, b = float(interval[0]), float(interval[1])
    parts = []
    if a < 0:
        if not f.signed:
            raise ValueError(f"{f} is unsigned; interval [{a}, {b}] has negative inputs")
        parts.append(-_positive_values(f, max(0.0, -b), -a, limit)[::-1])
    if a <= 0 <= b:
        parts.append(np.zeros(1))
    if b > 0:
        parts.append(_positive_values(f, max(0.0, a), b, limit))
    return np.concatenate(parts)


def ulp(values: Any, fmt: Any) -> np.ndarray:
    """The format's ulp at each value: ``2^(max(floor(log2|v|), emin) - man_bits)``.

    At a power of two this is the spacing above it; beyond the largest binade, that binade's
    spacing. Used as the unit of in-format errors ("ulps of the true result").
    """
    f = _float_format(fmt)
    v = np.abs(np.asarray(values, dtype=np.float64))
    _, e = np.frexp(v)
    ex = np.clip(e.astype(np.int64) - 1, f.emin, f.emax)
    ex = np.where(v == 0, f.emin, ex)
    return np.ldexp(1.0, (ex - f.man_bits).astype(np.int32))
