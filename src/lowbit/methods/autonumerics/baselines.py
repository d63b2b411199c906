"""Baselines: Taylor and minimax polynomials of each degree, evaluated as Horner programs.

A degree-``n`` polynomial in Horner form is ``n`` fma operations (:func:`horner`), so the
baseline line of the (operations, error) plane has one point per degree.

* :func:`taylor_coefficients`: the Taylor polynomial about ``center`` (by default the left end
  of the interval, as in the AutoNumerics paper's baselines) re-expanded in powers of ``x``
  with mpmath, then rounded to float64.
* :func:`minimax_coefficients`: the weighted minimax polynomial on a grid by linear
  programming (:func:`minimax_lp`, 3001 points by default).
* :func:`remez`: the same polynomial by the Remez exchange in mpmath at 40 digits, an
  independent check of the LP.

In a format, the baseline is the minimax polynomial for the error in ulps of the format
(weight ``ulp(f)``) on the format's inputs, with coefficients rounded to the format, as a
Sollya polynomial with rounded coefficients would be.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.methods.autonumerics.constants import minimax_lp
from lowbit.methods.autonumerics.program import Program, horner, round_constants
from lowbit.methods.autonumerics.targets import Target, get_target, reference, weights


@dataclass(frozen=True)
class Baseline:
    """One baseline polynomial: kind (``"minimax"``/``"taylor"``), degree, ops, error."""

    kind: str
    degree: int
    ops: int
    error: float
    program: Program

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "degree": self.degree,
            "ops": self.ops,
            "error": self.error,
            "program": self.program.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Baseline:
        """Inverse of :meth:`to_dict`."""
        return cls(
            d["kind"],
            int(d["degree"]),
            int(d["ops"]),
            float(d["error"]),
            Program.from_dict(d["program"]),
        )


def taylor_coefficients(function: str | Target, degree: int, center: float = 0.0) -> np.ndarray:
    """Monomial coefficients ``c_0 .. c_n`` of the degree-``n`` Taylor polynomial about
    ``center`` (computed in mpmath, rounded to float64 once)."""
    import mpmath

    t = get_target(function)
    if degree < 0:
        raise ValueError(f"degree={degree}; expected >= 0")
    with mpmath.workdps(50):
        a = mpmath.mpf(center)
        d = mpmath.taylor(t.mp, a, degree)  # coefficients of (x - a)^k
        mono = [mpmath.mpf(0)] * (degree + 1)
        for k, ck in enumerate(d):  # expand (x - a)^k binomially
            for j in range(k + 1):
                mono[j] += ck * mpmath.binomial(k, j) * (-a) ** (k - j)
        return np.array([float(m) for m in mono])


def minimax_coefficients(x: Any, truth: Any, weight: Any, degree: int) -> tuple[np.ndarray, float]:
    """Weighted minimax polynomial of ``degree`` on the points ``x`` (LP), and its error."""
    xs = np.asarray(x, dtype=np.float64)
    v = np.vander(xs, degree + 1, increasing=True)
    w = np.asarray(weight, dtype=np.float64)
    return minimax_lp(v / w[:, None], np.asarray(truth, dtype=np.float64) / w)


def remez(
    function: str | Target,
    interval: tuple[float, float],
    degree: int,
    *,
    error: str | None = None,
    iters: int = 30,
    grid: int = 4001,
    dps: int = 40,
) -> tuple[np.ndarray, float]:
    """Minimax polynomial by the Remez exchange algorithm in mpmath (reference for the LP).

    Args:
        error: ``"relative"`` or ``"absolute"`` (default: the target's).
        grid: points on which the extrema of the error are located each iteration.

    Returns:
        Coefficients (float64) and the levelled error ``|E|`` of the last exchange.
    """
    import mpmath

    t = get_target(function)
    kind = error or t.error
    a, b = (float(v) for v in interval)
    n = degree + 2
    with mpmath.workdps(dps):
        xs_grid = [mpmath.mpf(a) + (mpmath.mpf(b) - a) * k / (grid - 1) for k in range(grid)]
        f_grid = [t.mp(xv) for xv in xs_grid]
        w_grid = [abs(fv) if kind == "relative" else mpmath.mpf(1) for fv in f_grid]
        ref = [(a + b) / 2 - (b - a) / 2 * mpmath.cos(mpmath.pi * k / (n - 1)) for k in range(n)]
        coefs: list[Any] = []
        e_level = mpmath.mpf(0)
        for _ in range(iters):
            mat = mpmath.matrix(n, n)
            rhs = mpmath.matrix(n, 1)
            for i, xi in enumerate(ref):
                fi = t.mp(xi)
                wi = abs(fi) if kind == "relative" else 1
                for j in range(degree + 1):
                    mat[i, j] = xi**j
                mat[i, degree + 1] = (-1) ** i * wi
                rhs[i] = fi
            sol = mpmath.lu_solve(mat, rhs)
            coefs = [sol[j] for j in range(degree + 1)]
            e_level = abs(sol[degree + 1])
            errs = [
                (mpmath.polyval(coefs[::-1], xv) - fv) / wv
                for xv, fv, wv in zip(xs_grid, f_grid, w_grid, strict=True)
            ]
            ref_new = _alternating_extrema(xs_grid, errs, n)
            if ref_new is None:
                break
            e_max = max(abs(e) for e in errs)
            if e_max <= e_level * (1 + mpmath.mpf(10) ** -6):
                break
            ref = ref_new
        return np.array([float(c) for c in coefs]), float(e_level)


def _alternating_extrema(xs: list[Any], errs: list[Any], n: int) -> list[Any] | None:
    """n points of alternating sign where |error| is largest (one per sign run, Remez rule)."""
    runs: list[tuple[Any, Any]] = []  # (x, err) of the largest |err| of each sign run
    for xv, ev in zip(xs, errs, strict=True):
        if runs and (ev >= 0) == (runs[-1][1] >= 0):
            if abs(ev) > abs(runs[-1][1]):
                runs[-1] = (xv, ev)
        else:
            runs.append((xv, ev))
    if len(runs) < n:
        return None
    while len(runs) > n:  # drop the smaller of the end runs, keeping alternation
        if abs(runs[0][1]) < abs(runs[-1][1]):
            runs.pop(0)
        else:
            runs.pop()
    return [r[0] for r in runs]


def real_baselines(
    function: str | Target,
    interval: tuple[float, float],
    degrees: Iterable[int],
    *,
    n_fit: int = 3001,
    n_valid: int = 16385,
    taylor_center: float | None = None,
) -> list[Baseline]:
    """Minimax (LP on ``n_fit`` points) and Taylor Horner programs of each degree, with their
    float64 error on ``n_valid`` equally spaced points (the target's error measure)."""
    from lowbit.methods.autonumerics.constants import weighted_error
    from lowbit.methods.autonumerics.program import evaluate

    t = get_target(function)
    a, b = interval
    xf = np.linspace(a, b, n_fit)
    ff = reference(t, xf)
    xv = np.linspace(a, b, n_valid)
    fv = reference(t, xv)
    wv = weights(t, fv)
    center = a if taylor_center is None else taylor_center
    out = []
    for d in degrees:
        c, _ = minimax_coefficients(xf, ff, weights(t, ff), d)
        p = horner(c)
        out.append(Baseline("minimax", d, p.ops, weighted_error(evaluate(p, xv), fv, wv), p))
        p = horner(taylor_coefficients(t, d, center))
        out.append(Baseline("taylor", d, p.ops, weighted_error(evaluate(p, xv), fv, wv), p))
    return out


def format_baselines(
    problem: Any, degrees: Iterable[int], *, tuned: bool = False, taylor_center: float | None = None
) -> list[Baseline]:
    """In-format baselines for a :class:`FormatProblem`: ulp-weighted minimax and Taylor
    polynomials with coefficients rounded to the format, scored exhaustively.

    ``tuned=True`` adds ``"minimax+tuned"`` rows: the minimax coefficients walked over
    neighbouring format values while the exhaustive error drops (the same tuning the search's
    polish applies to its own programs, :meth:`FormatProblem.refit`), to separate gains of
    structure from gains of tuning.
    """
    t = problem.target
    i = problem._fit_idx
    center = problem.interval[0] if taylor_center is None else taylor_center
    out = []
    for d in degrees:
        c, _ = minimax_coefficients(problem.x[i], problem.truth[i], problem.ulps[i], d)
        p = round_constants(horner(c), problem.fmt)
        out.append(Baseline("minimax", d, p.ops, problem.score(p)[0], p))
        if tuned:
            q, best = problem.refit(p)
            out.append(Baseline("minimax+tuned", d, q.ops, best, q))
        p = round_constants(horner(taylor_coefficients(t, d, center)), problem.fmt)
        out.append(Baseline("taylor", d, p.ops, problem.score(p)[0], p))
    return out
