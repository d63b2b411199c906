"""Functions to approximate, their default intervals, error measures and exact references.

Each :class:`Target` carries an mpmath definition; :func:`reference` evaluates it at 40
significant digits and rounds once to float64, so reference values are the nearest doubles to
the true function (what "error of the true result" is measured against).

The real-number error of an approximation ``p`` is ``max |p(x) - f(x)| / w(x)``: ``w = |f|``
(relative error) for targets that stay away from zero (2^x, sigmoid), ``w = 1`` (absolute error,
the paper's "fixed ulp" up to a constant) for targets with a zero in their range (log2 on
[1, 2], erf, GELU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

ERRORS = ("relative", "absolute")


@dataclass(frozen=True)
class Target:
    """A function to approximate.

    Attributes:
        name: registry name (``exp2``, ``log2``, ``erf``, ``sigmoid``, ``gelu``).
        interval: default interval ``(a, b)``.
        error: ``"relative"`` or ``"absolute"`` (real-number mode error measure).
        formula: the function in words, for tables.
    """

    name: str
    interval: tuple[float, float]
    error: str
    formula: str

    def mp(self, x: Any) -> Any:
        """The function at an mpmath number (working precision set by the caller)."""
        return _MP[self.name](x)

    def numpy(self, x: Any) -> np.ndarray:
        """The function in float64 (for plots; use :func:`reference` for errors)."""
        return _NP[self.name](np.asarray(x, dtype=np.float64))


def _mp_exp2(x: Any) -> Any:
    import mpmath

    return mpmath.power(2, x)


def _mp_log2(x: Any) -> Any:
    import mpmath

    return mpmath.log(x, 2)


def _mp_erf(x: Any) -> Any:
    import mpmath

    return mpmath.erf(x)


def _mp_sigmoid(x: Any) -> Any:
    import mpmath

    return 1 / (1 + mpmath.exp(-x))


def _mp_gelu(x: Any) -> Any:
    import mpmath

    return x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2


def _np_erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


_MP: dict[str, Callable[[Any], Any]] = {
    "exp2": _mp_exp2,
    "log2": _mp_log2,
    "erf": _mp_erf,
    "sigmoid": _mp_sigmoid,
    "gelu": _mp_gelu,
}
_NP: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp2": np.exp2,
    "log2": np.log2,
    "erf": _np_erf,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "gelu": lambda x: x * (1 + _np_erf(x / np.sqrt(2))) / 2,
}

TARGETS: dict[str, Target] = {
    "exp2": Target("exp2", (0.0, 1.0), "relative", "2^x"),
    "log2": Target("log2", (1.0, 2.0), "absolute", "log2(x)"),
    "erf": Target("erf", (0.0, 1.0), "absolute", "erf(x)"),
    "sigmoid": Target("sigmoid", (-4.0, 4.0), "relative", "1 / (1 + e^-x)"),
    "gelu": Target("gelu", (-3.0, 3.0), "absolute", "x Φ(x)"),
}


def get_target(name: str | Target) -> Target:
    """The :class:`Target` called ``name``.

    Raises:
        ValueError: an unknown name (the message lists the accepted ones).
    """
    if isinstance(name, Target):
        return name
    key = str(name).lower()
    if key not in TARGETS:
        raise ValueError(f"unknown function {name!r}; accepted: {', '.join(TARGETS)}")
    return TARGETS[key]


def parse_interval(interval: Any, target: Target) -> tuple[float, float]:
    """``(a, b)`` from ``None`` (the target's default), a pair or a string ``"a,b"``.

    Raises:
        ValueError: not two numbers with ``a < b``, or outside the function's domain.
    """
    if interval is None:
        return target.interval
    if isinstance(interval, str):
        parts = interval.split(",")
        if len(parts) != 2:
            raise ValueError(f"interval {interval!r}; expected 'a,b' such as '0,1'")
        try:
            interval = (float(parts[0]), float(parts[1]))
        except ValueError as exc:
            raise ValueError(f"interval {interval!r}; expected two numbers 'a,b'") from exc
    a, b = (float(v) for v in interval)
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"interval ({a}, {b}); expected finite a < b")
    if target.name == "log2" and a <= 0:
        raise ValueError(f"interval ({a}, {b}) for log2; expected 0 < a < b")
    return a, b


@lru_cache(maxsize=32)
def _reference_cached(name: str, raw: bytes) -> np.ndarray:
    import mpmath

    xs = np.frombuffer(raw, dtype=np.float64)
    fn = _MP[name]
    out = np.empty(xs.size)
    with mpmath.workdps(40):
        for i, v in enumerate(xs.tolist()):
            out[i] = float(fn(mpmath.mpf(v)))
    out.setflags(write=False)
    return out


def reference(target: str | Target, x: Any) -> np.ndarray:
    """The function at every element of ``x``, the nearest float64 to the exact value."""
    t = get_target(target)
    xs = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return _reference_cached(t.name, xs.reshape(-1).tobytes()).reshape(xs.shape).copy()


def weights(target: str | Target, truth: np.ndarray) -> np.ndarray:
    """Error weights ``w`` of the real-number error ``|p - f| / w``."""
    t = get_target(target)
    return np.abs(truth) if t.error == "relative" else np.ones_like(truth)
