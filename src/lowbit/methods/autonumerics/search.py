"""``search``: evolve the cheapest programs approximating a function, in float64 or in a format.

Runs :func:`evolve` (NSGA-II on error and operation count) on a :class:`RealProblem` or a
:class:`FormatProblem`, then polishes the best few programs of every operation count (real
mode: constants refitted on the baselines' 3001-point grid and scored on 16385 points; format
mode: joint moves of constant pairs over neighbouring format values, scored exhaustively) and
scores the Taylor and minimax Horner baselines with the same evaluator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.methods.autonumerics.baselines import Baseline, format_baselines, real_baselines
from lowbit.methods.autonumerics.emit import to_arith_source, to_numpy_source
from lowbit.methods.autonumerics.evolve import EvolveConfig, Individual, evolve, pareto_front
from lowbit.methods.autonumerics.problem import FIXED_ULP, FormatProblem, make_problem
from lowbit.methods.autonumerics.program import Program
from lowbit.methods.autonumerics.targets import get_target, parse_interval


@dataclass(frozen=True)
class FrontEntry:
    """One program of the Pareto front: operations, error (in the result's unit), program."""

    ops: int
    error: float
    program: Program

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ops": self.ops, "error": self.error, "program": self.program.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["ops"]), float(d["error"]), Program.from_dict(d["program"]))


@dataclass
class SearchResult:
    """Outcome of :func:`search`.

    Attributes:
        function, interval, fmt, mode, ops, seed: what was searched (``fmt=None``: real mode).
        unit: the error's unit (``"max relative error"``, ``"max ulps of bf16 (rne, ...)"``).
        front: Pareto front after polishing, ascending in operations.
        baselines: Taylor / minimax (and in a format, minimax with tuned constants) rows.
        children, fits, generations, elapsed: search effort (fits: distinct structures fitted).
        history: per generation, the archive's front (``[[ops, error], ...]``).
    """

    function: str
    interval: tuple[float, float]
    fmt: str | None
    mode: str
    ops: tuple[str, ...]
    seed: int
    unit: str
    front: list[FrontEntry]
    baselines: list[Baseline]
    children: int = 0
    fits: int = 0
    generations: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    # ---- questions ---------------------------------------------------------------------------
    def baseline_line(self, kind: str = "minimax") -> dict[int, float]:
        """Ops → error of one baseline kind."""
        return {b.ops: b.error for b in self.baselines if b.kind == kind}

    def cheapest(self, bound: float) -> FrontEntry | None:
        """The front program with the fewest operations whose error is at most ``bound``."""
        ok = [e for e in self.front if e.error <= bound]
        return min(ok, key=lambda e: e.ops) if ok else None

    def cheapest_baseline(self, bound: float, kind: str = "minimax") -> Baseline | None:
        """The baseline of ``kind`` with the fewest operations meeting ``bound``."""
        ok = [b for b in self.baselines if b.kind == kind and b.error <= bound]
        return min(ok, key=lambda b: b.ops) if ok else None

    def rows(self) -> list[dict[str, Any]]:
        """One row per op count: front error, minimax and Taylor baseline errors."""
        mm, ty = self.baseline_line("minimax"), self.baseline_line("taylor")
        tuned = self.baseline_line("minimax+tuned")
        counts = sorted({e.ops for e in self.front} | set(mm))
        out = []
        for n in counts:
            f = [e for e in self.front if e.ops == n]
            row: dict[str, Any] = {
                "ops": n,
                "evolved": f[0].error if f else None,
                "minimax": mm.get(n),
                "taylor": ty.get(n),
            }
            if tuned:
                row["minimax+tuned"] = tuned.get(n)
            if self.fmt is None:
                row["evolved (fixed ulps)"] = f[0].error / FIXED_ULP if f else None
            out.append(row)
        return out

    def markdown(self) -> str:
        """The :meth:`rows` as a markdown table."""
        rows = self.rows()
        keys = list(rows[0]) if rows else ["ops"]

        def fmt_v(v: Any) -> str:
            return "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(fmt_v(r[k]) for k in keys) + " |" for r in rows]
        return "\n".join(lines)

    def numpy_code(self, entry: FrontEntry, name: str | None = None) -> str:
        """The entry as float64 numpy source (see :func:`to_numpy_source`)."""
        nm = name or f"{self.function}_{entry.ops}ops"
        return to_numpy_source(
            entry.program,
            nm,
            doc=f"{self.function} on {self.interval}: {entry.error:.3g} {self.unit}",
        )

    def arith_code(self, entry: FrontEntry, name: str | None = None) -> str:
        """The entry as lb.arith source in the result's format (bf16 when real mode)."""
        nm = name or f"{self.function}_{entry.ops}ops_{self.fmt or 'bf16'}"
        return to_arith_source(
            entry.program,
            self.fmt or "bf16",
            self.mode,
            nm,
            doc=f"{self.function} on {self.interval}: {entry.error:.3g} {self.unit}",
        )

    # ---- files -------------------------------------------------------------------------------
    def plot(self, path: str | os.PathLike[str], *, bound: float | None = None) -> Path:
        """Error against operations: the front beside the minimax and Taylor lines (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for kind, style in (("minimax", "s--"), ("taylor", "^:"), ("minimax+tuned", "d-.")):
            line = self.baseline_line(kind)
            if line:
                xs = sorted(line)
                ax.plot(xs, [line[k] for k in xs], style, label=f"{kind} (Horner)", alpha=0.8)
        if self.front:
            ax.plot(
                [e.ops for e in self.front],
                [e.error for e in self.front],
                "o-",
                color="k",
                label="evolved front",
                zorder=3,
            )
        if bound is not None:
            ax.axhline(bound, color="r", lw=0.8, label=f"bound {bound:g}")
        ax.set_yscale("log")
        ax.set_xlabel("operations (add, sub, mul, fma, scale: 1 each)")
        ax.set_ylabel(self.unit)
        where = f"in {self.fmt} ({self.mode})" if self.fmt else "real-number mode"
        ax.set_title(f"{self.function} on [{self.interval[0]:g}, {self.interval[1]:g}], {where}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=120)
        plt.close(fig)
        return p

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "function": self.function,
            "interval": list(self.interval),
            "fmt": self.fmt,
            "mode": self.mode,
            "ops": list(self.ops),
            "seed": self.seed,
            "unit": self.unit,
            "front": [e.to_dict() for e in self.front],
            "baselines": [b.to_dict() for b in self.baselines],
            "children": self.children,
            "fits": self.fits,
            "generations": self.generations,
            "elapsed": self.elapsed,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            d["function"],
            tuple(d["interval"]),
            d["fmt"],
            d["mode"],
            tuple(d["ops"]),
            int(d["seed"]),
            d["unit"],
            [FrontEntry.from_dict(e) for e in d["front"]],
            [Baseline.from_dict(b) for b in d["baselines"]],
            int(d["children"]),
            int(d["fits"]),
            int(d["generations"]),
            float(d["elapsed"]),
            d["history"],
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchResult:
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _polish(problem: Any, cands: list[Individual], keep: int) -> list[Individual]:
    """Refit/tune the best ``keep`` structures of every op count; score on validation."""
    by_ops: dict[int, list[Individual]] = {}
    for c in sorted(cands, key=lambda i: (i.ops, i.error)):
        by_ops.setdefault(c.ops, []).append(c)
    out = []
    for group in by_ops.values():
        for ind in group[:keep]:
            if not np.isfinite(ind.error):
                continue
            p, _ = problem.refit(ind.program)
            err = problem.validate(p)
            old = problem.validate(ind.program)
            if old < err:
                p, err = ind.program, old
            out.append(Individual(p, err, p.ops))
    return out


def search(
    function: str,
    interval: Any = None,
    *,
    fmt: str | None = None,
    mode: str = "rne",
    ops: Sequence[str] = ("add", "mul", "fma"),
    budget: int = 2000,
    seed: int = 0,
    progress: bool = True,
    max_ops: int = 10,
    population: int = 32,
    workers: int = 1,
    time_limit: float | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    polish: int = 3,
    baseline_degrees: Sequence[int] | None = None,
) -> SearchResult:
    """Evolve the Pareto front of (operations, max error) programs approximating ``function``.

    Args:
        function: ``exp2``, ``log2``, ``erf``, ``sigmoid`` or ``gelu`` (see ``targets.py``).
        interval: ``(a, b)`` or ``"a,b"``; default: the function's own.
        fmt: ``None`` for real-number mode (float64, error relative or absolute per target);
            a float format name (``"bf16"``, ``"fp16"``, ``"e4m3"`` ...) for in-format mode
            (every input of the format in the interval, every operation rounded, error in ulps
            of the true result).
        mode: rounding mode of the operations in format mode.
        ops: operations the programs may use (subset of add, sub, mul, fma, scale).
        budget: candidate programs to generate.
        seed: makes the run reproducible.
        progress: show a tqdm progress bar.
        max_ops: largest program allowed.
        population: NSGA-II population size.
        workers: processes fitting constants (2 on the 2-core machines). They are started
            with ``spawn``: a script calling ``search(..., workers=2)`` needs the usual
            ``if __name__ == "__main__":`` guard.
        time_limit: stop the evolution after this many seconds.
        checkpoint: JSON file holding the search state (written every few generations);
            with ``resume=True`` a run continues from it.
        polish: structures per op count polished at the end (0: none).
        baseline_degrees: Horner baselines to score (default 0..max_ops, real mode;
            1..min(max_ops, 8) in a format).

    Returns:
        :class:`SearchResult`.

    Raises:
        ValueError: an unknown function, op, format or mode, or a bad interval or budget.
    """
    target = get_target(function)
    iv = parse_interval(interval, target)
    problem = make_problem(target, iv, fmt, mode)
    mode_v = problem.mode if isinstance(problem, FormatProblem) else mode
    cfg = EvolveConfig(
        budget=budget,
        population=population,
        max_ops=max_ops,
        ops=tuple(ops),
        seed=seed,
        workers=workers,
        time_limit=time_limit,
    )
    pid = {"function": target.name, "interval": list(iv), "fmt": fmt, "mode": mode_v}
    state = evolve(
        problem, cfg, problem_id=pid, checkpoint=checkpoint, resume=resume, progress=progress
    )
    cands = list(state.cache.values())
    if polish > 0:
        polished = _polish(problem, cands, polish)
    else:
        polished = [
            Individual(i.program, problem.validate(i.program), i.ops)
            for i in state.archive.values()
        ]
    front = [FrontEntry(i.ops, i.error, i.program) for i in pareto_front(polished)]
    if fmt is None:
        degrees = range(0, max_ops + 1) if baseline_degrees is None else baseline_degrees
        baselines = real_baselines(target, iv, degrees)
    else:
        degrees = range(1, min(max_ops, 8) + 1) if baseline_degrees is None else baseline_degrees
        baselines = format_baselines(problem, degrees, tuned=True)
    return SearchResult(
        target.name,
        iv,
        fmt,
        mode_v,
        cfg.ops,
        seed,
        problem.unit,
        front,
        baselines,
        state.children,
        state.fits,
        state.generation,
        state.elapsed,
        state.history,
    )
