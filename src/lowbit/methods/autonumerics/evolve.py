"""Outer loop: NSGA-II on (maximum error, operation count), from scratch.

The population starts as random one- to three-operation programs. Each generation draws
``population`` parents by binary tournament (Pareto rank, then crowding distance) or, with
probability ``archive_parents``, from the archive of the best program per size, mutates each
(:func:`mutate`), fits the children's constants (:meth:`problem.fit`), and keeps the best
``population`` distinct structures of parents and children by non-dominated sorting and
crowding distance (Deb et al. 2002). Errors are compared on a log scale for crowding.

Every child's structure (:meth:`Program.key`) is cached: a structure met again costs no fit.
The archive keeps the best program at each operation count over the whole run; its Pareto
subset is the result.

Reproducible: the generator seeded by ``seed`` draws every parent, mutation and fit seed in the
main process; fits run in ``workers`` processes (``multiprocessing``) in the same order, so one
or two workers give the same result. A JSON checkpoint (every ``checkpoint_every``
generations and at the end) holds the generator state, population, archive and cache;
``resume=True`` continues from it bit for bit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.methods.autonumerics.mutations import check_ops, mutate, random_program
from lowbit.methods.autonumerics.program import Program

_BIG = 1e300


@dataclass(frozen=True)
class EvolveConfig:
    """Settings of one search (frozen; round-trips through JSON with :meth:`to_dict`).

    Attributes:
        budget: children to generate (cache hits included).
        population: NSGA-II population size.
        max_ops: largest program (operations) allowed.
        ops: operations mutations may use.
        seed: seed of every random choice.
        workers: processes fitting constants (1: in this process).
        time_limit: stop after this many seconds (None: no limit).
        checkpoint_every: generations between checkpoints (when a path is given).
        archive_parents: probability that a parent is drawn from the archive (the best program
            of a random op count) instead of by tournament; keeps every size's best breeding.
    """

    budget: int = 2000
    population: int = 32
    max_ops: int = 10
    ops: tuple[str, ...] = ("add", "mul", "fma")
    seed: int = 0
    workers: int = 1
    time_limit: float | None = None
    checkpoint_every: int = 5
    archive_parents: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", check_ops(self.ops))
        for name in ("budget", "population", "max_ops", "workers", "checkpoint_every"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name}={v!r}; expected a positive integer")
        if not 0 <= self.archive_parents <= 1:
            raise ValueError(f"archive_parents={self.archive_parents}; expected 0 <= p <= 1")
        if self.population < 4:
            raise ValueError(f"population={self.population}; expected at least 4")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["ops"] = list(self.ops)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvolveConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "ops": tuple(d["ops"])})


@dataclass
class Individual:
    """A fitted program with its objectives."""

    program: Program
    error: float
    ops: int

    @property
    def key(self) -> str:
        """The structure (see :meth:`Program.key`)."""
        return self.program.key()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``inf`` written as a string)."""
        return {"program": self.program.to_dict(), "error": _jf(self.error), "ops": self.ops}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Individual:
        """Inverse of :meth:`to_dict`."""
        return cls(Program.from_dict(d["program"]), float(d["error"]), int(d["ops"]))


def _jf(v: float) -> float | str:
    return v if np.isfinite(v) else str(v)


# ---- NSGA-II building blocks -----------------------------------------------------------------
def _objectives(inds: Sequence[Individual]) -> np.ndarray:
    err = np.array([min(i.error, _BIG) if i.error == i.error else _BIG for i in inds])
    return np.stack([np.log10(np.maximum(err, 1e-300)), [float(i.ops) for i in inds]], axis=1)


def nondominated_sort(points: np.ndarray) -> list[list[int]]:
    """Pareto fronts (lists of row indices) of ``points`` (minimise every column)."""
    n = len(points)
    dominated_by = [[] for _ in range(n)]
    count = np.zeros(n, dtype=int)
    for i in range(n):
        le = np.all(points[i] <= points, axis=1) & np.any(points[i] < points, axis=1)
        dominated_by[i] = list(np.flatnonzero(le))
        ge = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
        count[i] = int(ge.sum())
    fronts = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row (boundary points: infinity)."""
    n, m = points.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(points[:, k], kind="stable")
        lo, hi = points[order[0], k], points[order[-1], k]
        d[order[0]] = d[order[-1]] = np.inf
        if hi > lo:
            d[order[1:-1]] += (points[order[2:], k] - points[order[:-2], k]) / (hi - lo)
    return d


def pareto_front(inds: Sequence[Individual], rtol: float = 1e-6) -> list[Individual]:
    """Best program per op count, keeping only counts whose error beats every smaller count
    by more than the relative tolerance ``rtol`` (float64 noise is no improvement)."""
    best: dict[int, Individual] = {}
    for i in inds:
        if i.ops not in best or i.error < best[i.ops].error:
            best[i.ops] = i
    out, floor = [], float("inf")
    for ops in sorted(best):
        if best[ops].error < floor * (1 - rtol):
            out.append(best[ops])
            floor = best[ops].error
    return out


# ---- workers ---------------------------------------------------------------------------------
_PROBLEM: Any = None


def _init_worker(problem: Any) -> None:
    global _PROBLEM
    _PROBLEM = problem
    _single_thread_numba()


def _fit_job(job: tuple[dict[str, Any], int, float | None]) -> dict[str, Any]:
    prog, seed, hint = job
    p, e = _PROBLEM.fit(Program.from_dict(prog), seed=seed, hint=hint)
    return Individual(p, e, p.ops).to_dict()


def _single_thread_numba() -> None:
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - numba is a dependency
        pass


@contextmanager
def _serial_numba() -> Iterator[None]:
    """lowbit's parallel kernels cost more than they save on 16k-element arrays: one thread."""
    try:
        import numba
    except ImportError:  # pragma: no cover
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ---- the search ------------------------------------------------------------------------------
@dataclass
class EvolveState:
    """Everything a run needs to continue: written to / read from the JSON checkpoint."""

    config: EvolveConfig
    problem_id: dict[str, Any]
    rng_state: dict[str, Any]
    population: list[Individual] = field(default_factory=list)
    archive: dict[int, Individual] = field(default_factory=dict)
    cache: dict[str, Individual] = field(default_factory=dict)
    children: int = 0
    fits: int = 0
    generation: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "version": 1,
            "config": self.config.to_dict(),
            "problem": self.problem_id,
            "rng_state": self.rng_state,
            "population": [i.to_dict() for i in self.population],
            "archive": {str(k): v.to_dict() for k, v in self.archive.items()},
            "cache": {k: v.to_dict() for k, v in self.cache.items()},
            "children": self.children,
            "fits": self.fits,
            "generation": self.generation,
            "elapsed": self.elapsed,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvolveState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            EvolveConfig.from_dict(d["config"]),
            d["problem"],
            d["rng_state"],
            [Individual.from_dict(i) for i in d["population"]],
            {int(k): Individual.from_dict(v) for k, v in d["archive"].items()},
            {k: Individual.from_dict(v) for k, v in d["cache"].items()},
            int(d["children"]),
            int(d["fits"]),
            int(d["generation"]),
            float(d["elapsed"]),
            list(d["history"]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the checkpoint atomically (temporary file, then rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvolveState:
        """Read a checkpoint written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def front(self) -> list[Individual]:
        """Pareto front of the archive."""
        return pareto_front(list(self.archive.values()))


def evolve(
    problem: Any,
    config: EvolveConfig,
    *,
    problem_id: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> EvolveState:
    """Run NSGA-II until ``config.budget`` children (or ``config.time_limit`` seconds).

    Args:
        problem: has ``fit(program, seed, hint) -> (program, error)`` (``problem.py``;
            ``hint`` is the archive's best error at the program's size, or None).
        problem_id: JSON description of the problem; a resumed checkpoint must match it.
        checkpoint: JSON file to write every ``config.checkpoint_every`` generations.
        resume: continue from ``checkpoint`` when it exists.

    Raises:
        ValueError: the checkpoint holds another problem or configuration.
    """
    from tqdm.auto import tqdm

    pid = problem_id or {}
    rng = np.random.default_rng(config.seed)
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = EvolveState.load(checkpoint)
        if state.problem_id != pid:
            raise ValueError(f"checkpoint {checkpoint} is for {state.problem_id}, not {pid}")
        same = {
            k: v
            for k, v in config.to_dict().items()
            if k not in ("budget", "workers", "time_limit")
        }
        old = {k: v for k, v in state.config.to_dict().items() if k in same}
        if old != same:
            raise ValueError(f"checkpoint {checkpoint} was written with {old}, not {same}")
        state.config = config
        rng.bit_generator.state = state.rng_state
    else:
        state = EvolveState(config, pid, rng.bit_generator.state)
    start = time.perf_counter() - state.elapsed
    pool = None
    if config.workers > 1:
        import multiprocessing as mp

        # spawn, not fork: numba's thread pool in this process is not fork-safe
        pool = mp.get_context("spawn").Pool(
            config.workers, initializer=_init_worker, initargs=(problem,)
        )
    bar = tqdm(
        total=config.budget,
        initial=min(state.children, config.budget),
        disable=not progress,
        desc="autonumerics",
        unit="prog",
        leave=False,
    )

    def fit_all(progs: list[Program]) -> list[Individual]:
        """Fit in order; cache hits skip the fit."""
        seeds = [int(rng.integers(2**31)) for _ in progs]
        todo: dict[str, tuple[Program, int]] = {}
        for p, s in zip(progs, seeds, strict=True):
            k = p.key()
            if k not in state.cache and k not in todo:
                todo[k] = (p, s)
        # hint: the best error at the child's size, so hopeless candidates get a cheap fit
        jobs = [
            (p.to_dict(), s, state.archive[p.ops].error if p.ops in state.archive else None)
            for p, s in todo.values()
        ]
        if pool is not None:
            done = pool.map(_fit_job, jobs, chunksize=1)
        else:
            done = []
            for prog, s, hint in jobs:
                fp, e = problem.fit(Program.from_dict(prog), seed=s, hint=hint)
                done.append(Individual(fp, e, fp.ops).to_dict())
        for k, d in zip(todo, done, strict=True):
            ind = Individual.from_dict(d)
            state.cache[k] = ind
            if ind.ops not in state.archive or ind.error < state.archive[ind.ops].error:
                state.archive[ind.ops] = ind
        state.fits += len(jobs)
        return [state.cache[p.key()] for p in progs]

    try:
        with _serial_numba():
            if not state.population:
                progs = [
                    random_program(rng, config.ops, 1 + k % 3) for k in range(config.population)
                ]
                state.population = _select(fit_all(progs), config.population)
            while state.children < config.budget:
                if (
                    config.time_limit is not None
                    and time.perf_counter() - start > config.time_limit
                ):
                    break
                n = min(config.population, config.budget - state.children)
                parents = _tournament(state.population, n, rng)
                elite = sorted(state.archive.values(), key=lambda i: i.ops)
                for j in range(n):
                    if rng.random() < config.archive_parents:
                        parents[j] = elite[int(rng.integers(len(elite)))]
                children = [
                    mutate(p.program, rng, config.ops, max_ops=config.max_ops) for p in parents
                ]
                fitted = fit_all(children)
                state.population = _select(state.population + fitted, config.population)
                state.children += n
                state.generation += 1
                state.elapsed = time.perf_counter() - start
                state.history.append(
                    {
                        "generation": state.generation,
                        "children": state.children,
                        "fits": state.fits,
                        "elapsed": round(state.elapsed, 3),
                        "front": [[i.ops, _jf(i.error)] for i in state.front()],
                    }
                )
                bar.update(n)
                bar.set_postfix_str(" ".join(f"{i.ops}:{i.error:.2g}" for i in state.front()))
                if checkpoint is not None and state.generation % config.checkpoint_every == 0:
                    state.rng_state = rng.bit_generator.state
                    state.save(checkpoint)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    state.elapsed = time.perf_counter() - start
    state.rng_state = rng.bit_generator.state
    if checkpoint is not None:
        state.save(checkpoint)
    return state


def _select(inds: list[Individual], n: int) -> list[Individual]:
    """NSGA-II survivor selection among distinct structures."""
    uniq: dict[str, Individual] = {}
    for i in inds:
        k = i.key
        if k not in uniq or i.error < uniq[k].error:
            uniq[k] = i
    pool = list(uniq.values())
    pts = _objectives(pool)
    out: list[Individual] = []
    for front in nondominated_sort(pts):
        if len(out) + len(front) <= n:
            out += [pool[i] for i in front]
            continue
        cd = crowding_distance(pts[front])
        order = sorted(range(len(front)), key=lambda j: (-cd[j], j))
        out += [pool[front[j]] for j in order[: n - len(out)]]
        break
    return out


def _tournament(pop: list[Individual], n: int, rng: np.random.Generator) -> list[Individual]:
    """Binary tournaments on (Pareto rank, -crowding distance)."""
    pts = _objectives(pop)
    rank = np.zeros(len(pop), dtype=int)
    crowd = np.zeros(len(pop))
    for r, front in enumerate(nondominated_sort(pts)):
        rank[front] = r
        crowd[front] = crowding_distance(pts[front])
    out = []
    for _ in range(n):
        a, b = (int(v) for v in rng.integers(len(pop), size=2))
        better = a if (rank[a], -crowd[a]) <= (rank[b], -crowd[b]) else b
        out.append(pop[better])
    return out
