"""Inner loop: fit a program's constants to minimise its maximum weighted error.

The error of a program ``p`` on points ``x_i`` is ``max_i |p(x_i) - f_i| / w_i``.

* When the output is affine in the constants (:meth:`Program.is_affine`, e.g. any Horner or
  Estrin polynomial), ``p = h + G c`` and the minimax fit is a linear program, solved by
  :func:`minimax_lp` (scipy HiGHS) with iterative refinement: HiGHS solves to about 1e-7
  relative accuracy, so each round solves for the correction of the previous residual, scaled
  to unit size; three to five rounds reach 1e-13 (the degree-8 minimax error of 2^x).
* Otherwise (:func:`fit_nonlinear`) a sequential linear program (the same LP on the Jacobian
  of the output, inside a trust region) followed by a Nelder-Mead polish of the log error.
* In a target format, constants are stored rounded; :func:`refine_discrete` then walks each
  constant over its neighbouring format values while the exhaustive in-format error drops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lowbit.methods.autonumerics.program import Program, affine_form, evaluate, jacobian

_INF = float("inf")


def weighted_error(values: np.ndarray, truth: np.ndarray, weight: np.ndarray) -> float:
    """``max |values - truth| / weight``; ``inf`` when any value is NaN or infinite."""
    with np.errstate(all="ignore"):
        e = np.abs(values - truth) / weight
    if e.size == 0:
        return 0.0
    m = float(np.max(e))
    return m if np.isfinite(m) and not np.isnan(e).any() else _INF


def _lp_solve(a: np.ndarray, b: np.ndarray,
              bounds: np.ndarray | None = None) -> np.ndarray | None:
    """argmin_d max |a d - b| (|d_j| <= bounds_j when given), or None when HiGHS fails."""
    from scipy.optimize import linprog

    n, k = a.shape
    scale = np.max(np.abs(a), axis=0)
    scale[~(scale > 0)] = 1.0
    a_s = a / scale
    ones = np.ones((n, 1))
    a_ub = np.block([[a_s, -ones], [-a_s, -ones]])
    b_ub = np.concatenate([b, -b])
    cost = np.zeros(k + 1)
    cost[-1] = 1.0
    if bounds is None:
        var_bounds = [(None, None)] * k
    else:
        var_bounds = [(-float(s * bj), float(s * bj)) for s, bj in zip(scale, bounds,
                                                                         strict=True)]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[*var_bounds, (0, None)], method="highs")
    if res.status != 0 or res.x is None:
        return None
    return np.asarray(res.x[:k]) / scale


def minimax_lp(a: Any, b: Any, *, rounds: int = 8) -> tuple[np.ndarray, float]:
    """Coefficients ``c`` minimising ``max |a @ c - b|``, and that maximum.

    Iterative refinement: round ``r`` solves the LP for the residual of round ``r - 1`` scaled
    to unit size, so HiGHS's ~1e-7 tolerance applies to the correction, not to the solution.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = np.zeros(a.shape[1])
    err = float(np.max(np.abs(b))) if b.size else 0.0
    for _ in range(rounds):
        r = b - a @ c
        s = float(np.max(np.abs(r)))
        if not s > 0:
            break
        d = _lp_solve(a, r / s)
        if d is None:
            break
        c_new = c + s * d
        e_new = float(np.max(np.abs(b - a @ c_new)))
        if not e_new < err:
            break
        gain = e_new / err
        c, err = c_new, e_new
        if gain > 0.999:
            break
    return c, err


def fit_affine(program: Program, x: np.ndarray, truth: np.ndarray,
               weight: np.ndarray) -> tuple[Program, float]:
    """The LP-optimal constants of an affine program and its weighted error on ``x``."""
    if not program.constant_slots:
        return program, weighted_error(evaluate(program, x), truth, weight)
    h, g = affine_form(program, x)
    with np.errstate(all="ignore"):
        a = g / weight[:, None]
        b = (truth - h) / weight
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return program, _INF
    c, _ = minimax_lp(a, b)
    fitted = program.with_constants(c)
    return fitted, weighted_error(evaluate(fitted, x), truth, weight)


def fit_nonlinear(program: Program, x: np.ndarray, truth: np.ndarray, weight: np.ndarray, *,
                  iters: int = 25, nelder_mead: int = 60) -> tuple[Program, float]:
    """Local minimax fit from the program's current constants: SLP, then Nelder-Mead.

    Args:
        iters: sequential-LP steps (trust region doubled on success, quartered on failure).
        nelder_mead: Nelder-Mead function evaluations per constant for the polish (0: none).
    """
    def err_of(c: np.ndarray) -> float:
        return weighted_error(evaluate(program.with_constants(c), x), truth, weight)

    c = program.constants()
    best = err_of(c)
    radius = np.maximum(np.abs(c), 1.0)
    for _ in range(iters):
        val, jac = jacobian(program.with_constants(c), x)
        with np.errstate(all="ignore"):
            a = jac / weight[:, None]
            r = (truth - val) / weight
        if not (np.isfinite(a).all() and np.isfinite(r).all()):
            break
        d = _lp_solve(a, r, bounds=radius)
        if d is None:
            break
        e_new = err_of(c + d)
        if e_new < best:
            improvement = 1 - e_new / best
            c, best = c + d, e_new
            radius = np.minimum(radius * 2, np.maximum(np.abs(c), 1.0) * 4)
            if improvement < 1e-6:
                break
        else:
            radius = radius / 4
            if np.all(radius < 1e-14 * np.maximum(np.abs(c), 1e-300)):
                break
    if nelder_mead > 0 and c.size and np.isfinite(best):
        c, best = _nelder_mead(err_of, c, best, nelder_mead * c.size)
    return program.with_constants(c), best


def _nelder_mead(err_of: Callable[[np.ndarray], float], c: np.ndarray, best: float,
                 maxfev: int) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    def obj(v: np.ndarray) -> float:
        e = err_of(v)
        return float(np.log(e)) if 0 < e < _INF else (-745.0 if e == 0 else 1e300)

    step = np.where(c != 0, 0.05 * np.abs(c), 0.00025)
    simplex = np.vstack([c, c + np.diag(step)])
    res = minimize(obj, c, method="Nelder-Mead",
                   options={"maxfev": maxfev, "initial_simplex": simplex, "xatol": 0.0,
                            "fatol": 1e-9})
    e = err_of(res.x)
    return (np.asarray(res.x), e) if e < best else (c, best)


def fit_constants(program: Program, x: np.ndarray, truth: np.ndarray, weight: np.ndarray, *,
                  rng: np.random.Generator | None = None, restarts: int = 2,
                  method: str = "auto") -> tuple[Program, float]:
    """Fit the constants: LP when the program is affine in them, else :func:`fit_nonlinear`.

    Args:
        rng: draws the starting points of the ``restarts - 1`` extra nonlinear fits (the
            first starts from the program's own constants).
        method: ``"auto"``, ``"lp"`` (affine programs only), ``"slp"`` (sequential LP and
            Nelder-Mead) or ``"nelder-mead"``.

    Raises:
        ValueError: an unknown method, or ``"lp"`` for a program that is not affine.
    """
    methods = ("auto", "lp", "slp", "nelder-mead")
    if method not in methods:
        raise ValueError(f"method={method!r}; accepted: {', '.join(methods)}")
    x = np.asarray(x, dtype=np.float64)
    if method in ("auto", "lp") and program.is_affine():
        return fit_affine(program, x, truth, weight)
    if method == "lp":
        raise ValueError("method='lp' needs a program affine in its constants")
    rng = rng if rng is not None else np.random.default_rng(0)
    best_p, best_e = program, _INF
    for k in range(max(1, restarts)):
        start = program if k == 0 else program.with_constants(
            program.constants() * np.exp(rng.normal(0, 0.5, len(program.constant_slots)))
            + rng.normal(0, 0.5, len(program.constant_slots)))
        if method == "nelder-mead":
            c0 = start.constants()

            def err_of(c: np.ndarray, s: Program = start) -> float:
                return weighted_error(evaluate(s.with_constants(c), x), truth, weight)

            c, e = _nelder_mead(err_of, c0, err_of(c0), 400 * max(1, c0.size))
            p = start.with_constants(c)
        else:
            p, e = fit_nonlinear(start, x, truth, weight)
        if e < best_e:
            best_p, best_e = p, e
    return best_p, best_e


def format_steps(values: np.ndarray, fmt: Any, k: int) -> np.ndarray:
    """Each value moved ``k`` representable values of ``fmt`` up (k > 0) or down (k < 0)."""
    from lowbit.rounding.api import round as lb_round

    v = np.asarray(values, dtype=np.float64).copy()
    mode, toward = ("ru", np.inf) if k > 0 else ("rd", -np.inf)
    for _ in range(abs(k)):
        v = np.asarray(lb_round(np.nextafter(v, toward), fmt, mode), dtype=np.float64)
    return v


def refine_discrete(program: Program, score: Callable[[Program], tuple[float, float]], fmt: Any,
                    *, steps: tuple[int, ...] = (1, 2, 3), max_rounds: int = 6,
                    ) -> tuple[Program, tuple[float, float], int]:
    """Coordinate descent over the constants' neighbouring values in ``fmt``.

    ``score`` returns ``(max error, mean error)`` (compared lexicographically). Each round
    tries, for every constant, the values ``steps`` representable values up and down and keeps
    the best if it improves; stops after a round without improvement.

    Returns:
        ``(program, score, evaluations)``.
    """
    from lowbit.methods.autonumerics.program import round_constants

    p = round_constants(program, fmt)
    best = score(p)
    calls = 1
    c = p.constants()
    for _ in range(max_rounds):
        improved = False
        for j in range(c.size):
            cand_best, cand_c = best, None
            for k in (*steps, *(-s for s in steps)):
                trial = c.copy()
                trial[j] = format_steps(c[j:j + 1], fmt, k)[0]
                if trial[j] == c[j] or not np.isfinite(trial[j]):
                    continue
                s = score(p.with_constants(trial))
                calls += 1
                if s < cand_best:
                    cand_best, cand_c = s, trial
            if cand_c is not None:
                best, c, improved = cand_best, cand_c, True
        if not improved:
            break
    return p.with_constants(c), best, calls
