"""The mixed-precision integer program (one width per layer) solved with scipy's MILP.

Variables ``x_{l,b} ∈ {0,1}``, one per layer ``l`` and width ``b``:

    maximise   Σ_{l,b} x_{l,b} · score(l, b)
    subject to Σ_b x_{l,b} = 1                               for every layer
               Σ_{l,b} params_l · b · x_{l,b} ≤ budget       (weight memory in bits)

``budget`` is ``target_mean_bits · Σ_l params_l`` (a mean-bits target) or a memory budget in
bits. An exact equality on the mean is in general infeasible (the mean takes finitely many
values), so the target is an upper bound; with scores increasing in ``b`` the optimum spends
the budget as fully as it can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MixedPrecisionSolution:
    """One solution of the integer program.

    Attributes:
        config: width by layer name.
        objective: ``Σ score(l, config[l])``.
        mean_bits: ``Σ params_l · b_l / Σ params_l``.
        memory_bits: ``Σ params_l · b_l``.
        target: the mean-bits target or memory budget asked for.
    """

    config: dict[str, int]
    objective: float
    mean_bits: float
    memory_bits: int
    target: float


def _as_arrays(
    scores: Mapping[str, Mapping[int, float]] | np.ndarray,
    params: Mapping[str, int] | Sequence[int],
    bits: Sequence[int],
) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    widths = [int(b) for b in bits]
    if not widths or len(set(widths)) != len(widths):
        raise ValueError(f"bits={list(bits)}; accepted: distinct widths, at least one")
    if isinstance(scores, Mapping):
        names = list(scores)
        try:
            s = np.array([[float(scores[n][b]) for b in widths] for n in names])
        except KeyError as e:
            raise ValueError(
                f"scores lack width {e.args[0]!r}; every layer needs a score "
                f"for each of bits={widths}"
            ) from None
    else:
        s = np.asarray(scores, dtype=np.float64)
        names = [str(i) for i in range(s.shape[0])]
    if s.ndim != 2 or s.shape[1] != len(widths) or s.shape[0] == 0:
        raise ValueError(f"scores must be (layers, {len(widths)}), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if isinstance(params, Mapping):
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"params lacks layers {missing}")
        p = np.array([int(params[n]) for n in names], dtype=np.int64)
    else:
        p = np.asarray(list(params), dtype=np.int64)
    if p.shape != (len(names),) or np.any(p <= 0):
        raise ValueError(
            f"params must give one positive count per layer ({len(names)}), got {p.tolist()}"
        )
    return names, s, p, widths


def solve_mixed_precision(
    scores: Mapping[str, Mapping[int, float]] | np.ndarray,
    params: Mapping[str, int] | Sequence[int],
    bits: Sequence[int],
    *,
    target_mean_bits: float | None = None,
    memory_budget: float | None = None,
) -> MixedPrecisionSolution:
    """Best width per layer under a mean-bits target or a memory budget.

    Args:
        scores: ``{layer: {width: score}}`` (higher is better) or an array
            ``(layers, len(bits))``.
        params: weights per layer (dict by name, or a sequence in the order of ``scores``).
        bits: the candidate widths.
        target_mean_bits: upper bound on the parameter-weighted mean width.
        memory_budget: upper bound on ``Σ params_l · b_l`` in bits (exclusive with the target).

    Returns:
        The optimal :class:`MixedPrecisionSolution`.

    Raises:
        ValueError: both or neither budget given, or no configuration fits.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    names, s, p, widths = _as_arrays(scores, params, bits)
    if (target_mean_bits is None) == (memory_budget is None):
        raise ValueError("give exactly one of target_mean_bits and memory_budget")
    total = int(p.sum())
    budget = float(target_mean_bits) * total if memory_budget is None else float(memory_budget)
    target = float(target_mean_bits if memory_budget is None else memory_budget)
    L, B = s.shape
    cost = (p[:, None] * np.array(widths)[None, :]).astype(np.float64)
    min_cost = int(cost.min(1).sum())
    if budget < min_cost:
        raise ValueError(
            f"budget {budget:g} bits is below the smallest configuration "
            f"({min_cost} bits = mean {min_cost / total:g}); raise the target"
        )
    one_hot = np.zeros((L, L * B))
    for i in range(L):
        one_hot[i, i * B : (i + 1) * B] = 1.0
    constraints = [
        LinearConstraint(one_hot, 1.0, 1.0),
        LinearConstraint(cost.reshape(1, -1), -np.inf, budget),
    ]
    res = milp(
        -s.reshape(-1), constraints=constraints, integrality=np.ones(L * B), bounds=Bounds(0, 1)
    )
    if res.x is None:
        raise ValueError(f"the integer program found no solution: {res.message}")
    choice = np.round(res.x.reshape(L, B)).astype(int).argmax(1)
    memory = int(sum(int(p[i]) * widths[choice[i]] for i in range(L)))
    if memory > budget:  # the solver's feasibility tolerance must not buy a wider layer
        raise ValueError(f"solver returned {memory} bits over the budget {budget:g}")
    config = {names[i]: widths[choice[i]] for i in range(L)}
    objective = float(sum(s[i, choice[i]] for i in range(L)))
    return MixedPrecisionSolution(
        config=config,
        objective=objective,
        mean_bits=memory / total,
        memory_bits=memory,
        target=target,
    )


def sweep(
    scores: Mapping[str, Mapping[int, float]] | np.ndarray,
    params: Mapping[str, int] | Sequence[int],
    bits: Sequence[int],
    targets: Iterable[float] | None = None,
) -> list[MixedPrecisionSolution]:
    """Solve for each mean-bits target (default ``min(bits)…max(bits)`` in steps of 0.25).

    Targets below the smallest mean are skipped; identical configurations are kept once
    (the first target that reached them).
    """
    names, s, p, widths = _as_arrays(scores, params, bits)
    if targets is None:
        targets = np.arange(min(widths), max(widths) + 1e-9, 0.25)
    out: list[MixedPrecisionSolution] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    table = {
        n: dict(zip(widths, map(float, row), strict=True)) for n, row in zip(names, s, strict=True)
    }
    counts = dict(zip(names, map(int, p), strict=True))
    for t in targets:
        if float(t) < min(widths):  # below the all-narrowest configuration: nothing fits
            continue
        sol = solve_mixed_precision(table, counts, widths, target_mean_bits=float(t))
        key = tuple(sorted(sol.config.items()))
        if key not in seen:
            seen.add(key)
            out.append(sol)
    return out
