"""Programs as readable Python source: float64 numpy code, or lowbit.arith code in a format.

:func:`to_numpy_source` computes exactly what :func:`evaluate` computes (same float64
operations in the same order; ``fma`` as ``a * b + c``), and :func:`to_arith_source` exactly
what :func:`evaluate_in_format` computes (every operation one ``lb.arith`` call, constants
written as the format values they are stored as). :func:`compile_source` turns either back into
a function, which is how the tests hold the emitted code to the evaluators, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lowbit.methods.autonumerics.program import Program, round_constants

_PY_OPS = {"add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "fma": "{0} * {1} + {2}"}


def _check_name(name: str) -> str:
    if not name.isidentifier():
        raise ValueError(f"function name {name!r} is not a Python identifier")
    return name


def _lit(v: float) -> str:
    """A float literal that reads back as the same float64 (also inf and nan)."""
    v = float(v)
    return repr(v) if v == v and abs(v) != float("inf") else f"float({str(v)!r})"


def _body(p: Program, emit_op: Callable[[str, list[str], float], str]) -> tuple[list[str], str]:
    """Lines assigning each reachable vertex; constants are inlined as float literals."""
    p = p.pruned()
    names: dict[int, str] = {0: "x"}
    lines = []
    k = 0
    for i, v in enumerate(p.vertices):
        if v.op == "x":
            continue
        if v.op == "const":
            names[i] = _lit(v.value)
            continue
        k += 1
        names[i] = f"v{k}"
        lines.append(f"    v{k} = {emit_op(v.op, [names[a] for a in v.args], v.value)}")
    return lines, names[p.output]


def to_numpy_source(program: Program, name: str = "approx", *, doc: str = "") -> str:
    """Python source of ``def name(x)`` computing the program in float64 with numpy."""
    _check_name(name)

    def op(kind: str, args: list[str], value: float) -> str:
        if kind == "scale":
            return f"{_lit(value)} * {args[0]}"
        return _PY_OPS[kind].format(*args)

    lines, out = _body(program, op)
    head = [
        f"def {name}(x):",
        f'    """{doc or "Float64 evaluation"} ({program.ops} operations)."""',
        "    x = np.asarray(x, dtype=np.float64)",
    ]
    ret = f"    return np.broadcast_to({out}, x.shape).astype(np.float64)"
    return "\n".join([*head, *lines, ret]) + "\n"


def to_arith_source(
    program: Program, fmt: str, mode: str = "rne", name: str = "approx", *, doc: str = ""
) -> str:
    """Python source of ``def name(x)`` running the program in ``fmt`` with ``lb.arith``.

    Constants are rounded to the format first (they are exact literals in the source); every
    operation rounds its exact result once in ``mode``.
    """
    _check_name(name)
    p = round_constants(program, fmt)

    def op(kind: str, args: list[str], value: float) -> str:
        if kind == "scale":
            return f"lb.arith.mul(full({_lit(value)}), {args[0]}, FMT, MODE, inputs='exact')"
        a = [f"full({s})" if not s.startswith(("x", "v")) else s for s in args]
        return f"lb.arith.{kind}({', '.join(a)}, FMT, MODE, inputs='exact')"

    lines, out = _body(p, op)
    if not out.startswith(("x", "v")):
        out = f"full({out})"
    head = [
        f"def {name}(x, FMT={fmt!r}, MODE={mode!r}):",
        f'    """{doc or "In-format evaluation"} ({p.ops} operations, each rounded to '
        f'FMT in MODE)."""',
        "    x = np.asarray(lb.round(np.asarray(x, dtype=np.float64), FMT, 'rne'),"
        " dtype=np.float64)",
        "",
        "    def full(c):",
        "        return np.full(x.shape, c)",
        "",
    ]
    ret = f"    return np.asarray({out}, dtype=np.float64)"
    return "\n".join([*head, *lines, ret]) + "\n"


def compile_source(source: str, name: str = "approx") -> Callable[..., Any]:
    """The function ``name`` defined by emitted ``source`` (numpy as ``np``, lowbit as ``lb``)."""
    import numpy as np

    import lowbit as lb

    scope: dict[str, Any] = {"np": np, "lb": lb}
    exec(compile(source, f"<autonumerics {name}>", "exec"), scope)
    return scope[_check_name(name)]
