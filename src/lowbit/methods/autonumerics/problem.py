"""What a program is scored on: the fitness of the outer search, in one of two modes.

* :class:`RealProblem` (real-number mode): constants fitted on ``n_fit`` equally spaced points
  of the interval, programs run in float64, error ``max |p - f| / w`` (relative or absolute,
  per target); :meth:`RealProblem.validate` scores on ``n_valid`` points.
* :class:`FormatProblem` (in-format mode): the inputs are *every* value of the format in the
  interval; each operation is rounded in the format and mode (:func:`evaluate_in_format`) and
  the error is in ulps of the true result, ``max |p - f| / ulp(f)``. The fit minimises that
  error in exact arithmetic (LP weighted by ``1/ulp(f)``) on up to ``n_fit`` of the inputs,
  rounds the constants to the format and walks them over neighbouring format values while the
  exhaustive error drops (:func:`refine_discrete`). The score is exhaustive, hence a proof for
  that format, interval and mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lowbit.methods.autonumerics.constants import fit_constants, refine_discrete, weighted_error
from lowbit.methods.autonumerics.program import (
    Program,
    evaluate,
    evaluate_in_format,
    format_inputs,
    round_constants,
    ulp,
)
from lowbit.methods.autonumerics.targets import Target, get_target, reference, weights

FIXED_ULP = 2.0**-23  # the paper's unit: float32 ulp(1.5)


@dataclass
class RealProblem:
    """Real-number fitness of programs approximating ``target`` on ``interval``."""

    target: Target
    interval: tuple[float, float]
    n_fit: int = 1025
    n_valid: int = 16385
    x: np.ndarray = field(init=False, repr=False)
    truth: np.ndarray = field(init=False, repr=False)
    weight: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.target = get_target(self.target)
        self.x, self.truth, self.weight = self.points(self.n_fit)

    mode_name = "real"

    @property
    def unit(self) -> str:
        """Unit of :meth:`fit`'s error."""
        return f"max {self.target.error} error"

    def points(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` equally spaced points of the interval, the reference values and weights."""
        x = np.linspace(self.interval[0], self.interval[1], n)
        truth = reference(self.target, x)
        return x, truth, weights(self.target, truth)

    def fit(
        self, program: Program, seed: int = 0, hint: float | None = None
    ) -> tuple[Program, float]:
        """Fitted constants and the error on the fit points.

        ``hint``: the best error known at this size; a nonlinear program whose least-squares
        fit is 4x worse skips the minimax polish.
        """
        give_up = None if hint is None or not np.isfinite(hint) else 4 * hint
        return fit_constants(
            program,
            self.x,
            self.truth,
            self.weight,
            rng=np.random.default_rng(seed),
            give_up_above=give_up,
        )

    def refit(self, program: Program, n: int = 3001) -> tuple[Program, float]:
        """Refit on ``n`` points (the baselines' grid) starting from the current constants."""
        x, truth, w = self.points(n)
        return fit_constants(
            program, x, truth, w, rng=np.random.default_rng(0), restarts=3, nelder_mead=40
        )

    def validate(self, program: Program) -> float:
        """The error on ``n_valid`` equally spaced points."""
        x, truth, w = self.points(self.n_valid)
        return weighted_error(evaluate(program, x), truth, w)


@dataclass
class FormatProblem:
    """In-format fitness: every input of ``fmt`` in ``interval``, error in ulps of ``fmt``."""

    target: Target
    interval: tuple[float, float]
    fmt: str
    mode: str = "rne"
    seed: int | None = None
    n_fit: int = 2049
    refine_below: float = 16.0
    x: np.ndarray = field(init=False, repr=False)
    truth: np.ndarray = field(init=False, repr=False)
    ulps: np.ndarray = field(init=False, repr=False)

    mode_name = "format"

    def __post_init__(self) -> None:
        from lowbit.rounding.modes import as_mode

        self.target = get_target(self.target)
        m = as_mode(self.mode)
        self.mode = m.value
        if m.stochastic and self.seed is None:
            self.seed = 0  # the exhaustive score must be reproducible
        self.x = format_inputs(self.fmt, self.interval)
        if self.x.size == 0:
            raise ValueError(f"{self.fmt} has no values in {self.interval}")
        self.truth = reference(self.target, self.x)
        self.ulps = ulp(self.truth, self.fmt)
        idx = np.unique(np.searchsorted(self.x, np.linspace(self.x[0], self.x[-1], self.n_fit)))
        idx = np.unique(np.concatenate([idx[idx < self.x.size], [0, self.x.size - 1]]))
        self._fit_idx = idx

    @property
    def unit(self) -> str:
        """Unit of :meth:`fit`'s error."""
        return f"max ulps of {self.fmt} ({self.mode}, exhaustive)"

    def errors(self, program: Program) -> np.ndarray:
        """Per-input error in ulps of the true result, every operation rounded."""
        vals = evaluate_in_format(program, self.x, self.fmt, self.mode, seed=self.seed)
        with np.errstate(all="ignore"):
            e = np.abs(vals - self.truth) / self.ulps
        return np.where(np.isnan(e), np.inf, e)

    def score(self, program: Program) -> tuple[float, float]:
        """``(max, mean)`` ulp error over every input."""
        e = self.errors(program)
        return float(np.max(e)), float(np.mean(e))

    def fit(
        self, program: Program, seed: int = 0, hint: float | None = None
    ) -> tuple[Program, float]:
        """Exact-arithmetic fit, constants rounded and tuned in the format; exhaustive error.

        The discrete tuning runs when the rounded program is within ``refine_below`` ulps and,
        given ``hint`` (the best error known at this size), within ``2 hint + 1`` ulps.
        """
        i = self._fit_idx
        ok = hint is not None and np.isfinite(hint)
        p, e_real = fit_constants(
            program,
            self.x[i],
            self.truth[i],
            self.ulps[i],
            rng=np.random.default_rng(seed),
            give_up_above=4 * hint + 4 if ok else None,
        )
        if not np.isfinite(e_real):
            return round_constants(p, self.fmt), float("inf")
        p = round_constants(p, self.fmt)
        first = self.score(p)
        limit = min(self.refine_below, 2 * hint + 1) if ok else self.refine_below
        if first[0] > limit or not p.constant_slots:
            return p, first[0]
        p, best, _ = refine_discrete(p, self.score, self.fmt)
        return p, best[0]

    def refit(self, program: Program, n: int = 0) -> tuple[Program, float]:
        """Tune the constants further: longer single steps and joint moves of two constants
        (radius 2 up to five constants, else 1)."""
        radius = 2 if len(program.constant_slots) <= 5 else 1
        p, best, _ = refine_discrete(
            program, self.score, self.fmt, steps=(1, 2, 3, 4, 6, 8), pair_radius=radius
        )
        return p, best[0]

    def validate(self, program: Program) -> float:
        """The exhaustive max ulp error (the same as :meth:`fit`'s)."""
        return self.score(round_constants(program, self.fmt))[0]


def make_problem(
    function: str | Target,
    interval: tuple[float, float],
    fmt: str | None = None,
    mode: str = "rne",
    *,
    seed: int | None = None,
) -> RealProblem | FormatProblem:
    """:class:`RealProblem` when ``fmt`` is None, else :class:`FormatProblem`."""
    t = get_target(function)
    if fmt is None:
        return RealProblem(t, interval)
    return FormatProblem(t, interval, fmt, mode, seed)
