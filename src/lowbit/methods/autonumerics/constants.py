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


def _lp_solve(a: np.ndarray, b: np.ndarray, bounds: np.ndarray | None = None) -> np.ndarray | None:
    """argmin_d max |a d - b| (|d_j| <= bounds_j when given), or None when HiGHS fails.

    Active-set (exchange) strategy, as in Remez's algorithm: solve on a few rows, add the rows
    the solution violates most, repeat until no row exceeds the subset's optimum. The optimum
    of the subset is a lower bound of the full one, so the result is the full LP's solution;
    it takes a handful of LPs of ~10 K rows instead of one of 2 N rows.
    """
    n, k = a.shape
    scale = np.max(np.abs(a), axis=0)
    scale[~(scale > 0)] = 1.0
    a_s = a / scale
    sb = None if bounds is None else np.asarray(bounds) * scale
    m = min(n, max(4 * k + 8, 32))
    rows = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
    b_max = float(np.max(np.abs(b))) if n else 0.0
    d = None
    for _ in range(50):
        sol = _lp_rows(a_s[rows], b[rows], sb)
        if sol is None:
            return None
        d, t = sol
        viol = np.abs(a_s @ d - b)
        # HiGHS is accurate to ~1e-9 of |b| (iterative refinement in minimax_lp does the rest)
        slack = t * 1e-6 + 1e-9 * b_max
        over = np.flatnonzero(viol > t + slack)
        over = over[~np.isin(over, rows)]
        if over.size == 0:
            break
        rows = np.union1d(rows, over[np.argsort(-viol[over], kind="stable")[: 2 * k + 2]])
    return None if d is None else d / scale


def _lp_rows(
    a: np.ndarray, b: np.ndarray, bounds: np.ndarray | None
) -> tuple[np.ndarray, float] | None:
    from scipy.optimize import linprog

    n, k = a.shape
    ones = np.ones((n, 1))
    a_ub = np.block([[a, -ones], [-a, -ones]])
    b_ub = np.concatenate([b, -b])
    cost = np.zeros(k + 1)
    cost[-1] = 1.0
    if bounds is None:
        var_bounds = [(None, None)] * k
    else:
        var_bounds = [(-float(bj), float(bj)) for bj in bounds]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[*var_bounds, (0, None)], method="highs")
    if res.status != 0 or res.x is None:
        return None
    return np.asarray(res.x[:k]), float(res.x[k])


def minimax_lp(a: Any, b: Any, *, rounds: int = 8) -> tuple[np.ndarray, float]:
    """Coefficients ``c`` minimising ``max |a @ c - b|``, and that maximum.

    Starts from the least-squares solution; then iterative refinement: round ``r`` solves the
    LP for the residual of round ``r - 1`` scaled to unit size, so HiGHS's ~1e-7 tolerance
    applies to the correction, not to the solution.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    # start from least squares: the LP rounds then only correct a small residual
    c = np.linalg.lstsq(a, b, rcond=None)[0] if b.size else np.zeros(a.shape[1])
    if not np.isfinite(c).all():
        c = np.zeros(a.shape[1])
    err = float(np.max(np.abs(b - a @ c))) if b.size else 0.0
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


def fit_affine(
    program: Program, x: np.ndarray, truth: np.ndarray, weight: np.ndarray
) -> tuple[Program, float]:
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


def _levenberg_marquardt(
    program: Program,
    x: np.ndarray,
    truth: np.ndarray,
    weight: np.ndarray,
    c: np.ndarray,
    iters: int,
) -> np.ndarray:
    """Weighted least squares by Levenberg-Marquardt: cheap steps into the basin of a good
    minimum, where the minimax SLP then converges in a few LPs."""
    lam = 1e-3

    def resid(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        val, jac = jacobian(program.with_constants(v), x)
        with np.errstate(all="ignore"):
            return (val - truth) / weight, jac / weight[:, None]

    r, j = resid(c)
    cost = float(r @ r) if np.isfinite(r).all() else _INF
    for _ in range(iters):
        if not (np.isfinite(cost) and np.isfinite(j).all()):
            break
        jtj, jtr = j.T @ j, j.T @ r
        try:
            d = -np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), jtr)
        except np.linalg.LinAlgError:
            break
        r2, j2 = resid(c + d)
        cost2 = float(r2 @ r2) if np.isfinite(r2).all() else _INF
        if cost2 < cost:
            gain = 1 - cost2 / cost
            c, r, j, cost, lam = c + d, r2, j2, cost2, max(lam / 3, 1e-12)
            if gain < 1e-6:
                break
        else:
            lam *= 8
            if lam > 1e12:
                break
    return c


def fit_nonlinear(
    program: Program,
    x: np.ndarray,
    truth: np.ndarray,
    weight: np.ndarray,
    *,
    lm_iters: int = 20,
    iters: int = 10,
    nelder_mead: int = 0,
    give_up_above: float | None = None,
) -> tuple[Program, float]:
    """Local minimax fit from the program's current constants.

    Levenberg-Marquardt on the weighted least-squares error, then sequential LP on the
    Jacobian (the minimax step inside a trust region, doubled on success, quartered on
    failure), then optionally a Nelder-Mead polish of the log max error.

    Args:
        lm_iters: Levenberg-Marquardt steps.
        iters: sequential-LP steps.
        nelder_mead: Nelder-Mead function evaluations per constant (0: no polish).
        give_up_above: skip the SLP when the least-squares fit's max error exceeds this (the
            minimax error is rarely below half the least-squares one, so such a program cannot
            compete; the search passes a multiple of the best error at the same size).
    """

    def err_of(c: np.ndarray) -> float:
        return weighted_error(evaluate(program.with_constants(c), x), truth, weight)

    c0 = program.constants()
    e0 = err_of(c0)
    c = _levenberg_marquardt(program, x, truth, weight, c0.copy(), lm_iters)
    best = err_of(c)
    if not best < e0:
        c, best = c0, e0
    if give_up_above is not None and not best <= give_up_above:
        return program.with_constants(c), best
    radius = np.maximum(np.abs(c), 1.0) / 4
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
            if improvement < 1e-3:
                break
        else:
            radius = radius / 4
            if np.all(radius < 1e-12 * np.maximum(np.abs(c), 1e-300)):
                break
    if nelder_mead > 0 and c.size and np.isfinite(best):
        c, best = _nelder_mead(err_of, c, best, nelder_mead * c.size)
    return program.with_constants(c), best


def _nelder_mead(
    err_of: Callable[[np.ndarray], float], c: np.ndarray, best: float, maxfev: int
) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    def obj(v: np.ndarray) -> float:
        e = err_of(v)
        return float(np.log(e)) if 0 < e < _INF else (-745.0 if e == 0 else 1e300)

    step = np.where(c != 0, 0.05 * np.abs(c), 0.00025)
    simplex = np.vstack([c, c + np.diag(step)])
    res = minimize(
        obj,
        c,
        method="Nelder-Mead",
        options={"maxfev": maxfev, "initial_simplex": simplex, "xatol": 0.0, "fatol": 1e-9},
    )
    e = err_of(res.x)
    return (np.asarray(res.x), e) if e < best else (c, best)


def fit_constants(
    program: Program,
    x: np.ndarray,
    truth: np.ndarray,
    weight: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    restarts: int = 1,
    method: str = "auto",
    nelder_mead: int = 0,
    give_up_above: float | None = None,
) -> tuple[Program, float]:
    """Fit the constants: LP when the program is affine in them, else :func:`fit_nonlinear`.

    Args:
        rng: draws the starting points of the ``restarts - 1`` extra nonlinear fits (the
            first starts from the program's own constants).
        method: ``"auto"``, ``"lp"`` (affine programs only), ``"slp"``
            (:func:`fit_nonlinear`) or ``"nelder-mead"`` (Nelder-Mead alone, 400 evaluations
            per constant).
        nelder_mead: Nelder-Mead polish evaluations per constant after the SLP.
        give_up_above: see :func:`fit_nonlinear`.

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
        start = (
            program
            if k == 0
            else program.with_constants(
                program.constants() * np.exp(rng.normal(0, 0.5, len(program.constant_slots)))
                + rng.normal(0, 0.5, len(program.constant_slots))
            )
        )
        if method == "nelder-mead":
            c0 = start.constants()

            def err_of(c: np.ndarray, s: Program = start) -> float:
                return weighted_error(evaluate(s.with_constants(c), x), truth, weight)

            c, e = _nelder_mead(err_of, c0, err_of(c0), 400 * max(1, c0.size))
            p = start.with_constants(c)
        else:
            p, e = fit_nonlinear(
                start, x, truth, weight, nelder_mead=nelder_mead, give_up_above=give_up_above
            )
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


def refine_discrete(
    program: Program,
    score: Callable[[Program], tuple[float, float]],
    fmt: Any,
    *,
    steps: tuple[int, ...] = (1, 2, 3),
    max_rounds: int = 6,
    pair_radius: int = 0,
) -> tuple[Program, tuple[float, float], int]:
    """Local search over the constants' neighbouring values in ``fmt``.

    ``score`` returns ``(max error, mean error)`` (compared lexicographically). Each round
    tries, for every constant, the values ``steps`` representable values up and down, and with
    ``pair_radius > 0`` also every joint move of two constants by up to that many values each
    (rounded Horner coefficients often improve only together: one up, its neighbour down); the
    best improving move of each kind is taken. Stops after a round without improvement.

    Returns:
        ``(program, score, evaluations)``.
    """
    from lowbit.methods.autonumerics.program import round_constants

    p = round_constants(program, fmt)
    best = score(p)
    calls = 1
    c = p.constants()
    k = c.size

    def shifted(vals: np.ndarray, j: int, s: int) -> float:
        return float(format_steps(vals[j : j + 1], fmt, s)[0])

    for _ in range(max_rounds):
        improved = False
        for j in range(k):
            cand_best, cand_c = best, None
            for s in (*steps, *(-t for t in steps)):
                trial = c.copy()
                trial[j] = shifted(c, j, s)
                if trial[j] == c[j] or not np.isfinite(trial[j]):
                    continue
                sc = score(p.with_constants(trial))
                calls += 1
                if sc < cand_best:
                    cand_best, cand_c = sc, trial
            if cand_c is not None:
                best, c, improved = cand_best, cand_c, True
        if pair_radius > 0:
            offsets = [s for s in range(-pair_radius, pair_radius + 1) if s]
            cand_best, cand_c = best, None
            for i in range(k):
                for j in range(i + 1, k):
                    for si in offsets:
                        for sj in offsets:
                            trial = c.copy()
                            trial[i], trial[j] = shifted(c, i, si), shifted(c, j, sj)
                            if not np.isfinite(trial).all():
                                continue
                            sc = score(p.with_constants(trial))
                            calls += 1
                            if sc < cand_best:
                                cand_best, cand_c = sc, trial
            if cand_c is not None:
                best, c, improved = cand_best, cand_c, True
        if not improved:
            break
    return p.with_constants(c), best, calls
