"""The harmonic series in low precision: stagnation under round-to-nearest, none under SR.

``s_n = fl(s_{n-1} + fl(1/n))`` with every division and addition correctly rounded to the
format (``lb.arith``). Under round-to-nearest the sum stops growing once ``1/n`` is below half
an ulp of ``s_n``: in fp16 it stays at 7.0859375 from n = 513 on (Higham & Pranesh,
"Simulating low precision floating-point arithmetic", SIAM J. Sci. Comput. 41(5), 2019), in
bf16 at 5.0625 from n = 65. Stochastic rounding keeps the expected sum equal to the exact one,
so the SR sums keep following ``H_n = 1 + 1/2 + ... + 1/n`` (computed exactly with
``fractions.Fraction``).

:func:`harmonic` is what ``lowbit demo harmonic`` calls; ``examples/harmonic.py`` runs it for
the documentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.arith import ops
from lowbit.arith._emulate import new_stream, serial_kernels, use_stream
from lowbit.formats import get_element_format
from lowbit.rounding.modes import as_mode


@dataclass(frozen=True)
class HarmonicRow:
    """One (format, mode) run.

    Attributes:
        fmt: format name.
        mode: rounding mode.
        n: number of terms summed.
        runs: independent runs (stochastic modes; 1 otherwise).
        final: ``s_n`` (mean over the runs for stochastic modes).
        final_min: smallest ``s_n`` over the runs.
        final_max: largest ``s_n`` over the runs.
        stagnation_n: first ``m`` from which ``s_m = s_{m-1} = ... = s_n`` (reported only when
            the sum stayed constant for at least half of the terms; else ``None``).
        stagnation_value: the sum there.
        exact: ``H_n`` (the exact sum, rounded to float64 for display).
        rel_error: ``|final - H_n| / H_n``.
        seed: seed of the stochastic runs (``None`` for deterministic modes).
    """

    fmt: str
    mode: str
    n: int
    runs: int
    final: float
    final_min: float
    final_max: float
    stagnation_n: int | None
    stagnation_value: float | None
    exact: float
    rel_error: float
    seed: int | None


@dataclass
class HarmonicResult:
    """What :func:`harmonic` computed.

    Attributes:
        rows: one :class:`HarmonicRow` per (format, mode).
        plot_path: the PNG written (``None`` when not plotted).
        markdown: a markdown table of the rows (also written next to the plot).
        markdown_path: the markdown file written, if any.
        exact: ``H_1..H_n`` as float64 (from exact Fractions).
        sums: ``(fmt, mode) -> array (runs, n)`` of partial sums ``s_1..s_n``.
    """

    rows: list[HarmonicRow]
    plot_path: Path | None
    markdown: str
    markdown_path: Path | None = None
    exact: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sums: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """The rows as dictionaries (for printing)."""
        return [asdict(r) for r in self.rows]


def exact_harmonic(n: int) -> np.ndarray:
    """``H_1, ..., H_n`` summed exactly with ``fractions.Fraction``, rounded to float64."""
    out = np.empty(n)
    h = Fraction(0)
    for k in range(1, n + 1):
        h += Fraction(1, k)
        out[k - 1] = float(h)
    return out


def partial_sums(
    n: int, fmt: str, mode: str = "rne", *, seed: int = 0, runs: int = 1, progress: bool = False
) -> np.ndarray:
    """``s_1..s_n`` of the harmonic series in ``fmt``/``mode``, shape ``(runs, n)``.

    All divisions ``fl(1/k)`` are one vector operation; the additions run in order ``k = 1..n``
    (each one a vector operation over the runs). Stochastic runs draw from one stream seeded
    with ``seed`` (so runs are independent and the whole table reproducible).
    """
    m = as_mode(mode)
    runs = runs if m.stochastic else 1
    stream = new_stream(fmt, m, seed)
    out = np.empty((runs, n))
    k = np.arange(1, n + 1, dtype=np.float64)
    steps: Any = range(n)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"harmonic {fmt} {m.value}", unit="term", mininterval=0.5)
    with use_stream(stream), serial_kernels():
        terms = np.asarray(ops.div(np.ones((n, runs)), k[:, None], fmt, m), dtype=np.float64)
        s = np.zeros(runs)
        for i in steps:
            s = np.asarray(ops.add(s, terms[i], fmt, m), dtype=np.float64)
            out[:, i] = s
    return out


def stagnation(s: np.ndarray) -> tuple[int, float] | None:
    """Where the partial sums ``s = (s_1..s_n)`` stop changing.

    Returns ``(m, value)``: ``m`` is the first term index from which no term changes the sum
    (``s_{m-1} = s_m = ... = s_n = value``, and ``s_{m-2} != s_{m-1}``); ``None`` unless the
    sum stayed constant for at least half of the terms.
    """
    n = s.size
    changed = np.flatnonzero(np.diff(s) != 0)  # index i: s[i+1] != s[i]
    last = int(changed[-1]) + 1 if changed.size else 0  # 0-based index of the last change
    m = last + 2  # 1-based n of the first term that no longer changes the sum
    if m > n or n - m + 1 < n // 2:
        return None
    return m, float(s[last])


def harmonic(
    fmts: str | Sequence[str] = "fp16",
    modes: str | Sequence[str] = ("rne", "sr"),
    *,
    n: int | None = None,
    runs: int = 8,
    seed: int = 0,
    out_dir: str | Path | None = None,
    plot: bool = True,
    progress: bool = False,
) -> HarmonicResult:
    """Sum the harmonic series in each format and mode; tabulate, plot and write markdown.

    Args:
        fmts: format name(s) (comma-separated string or sequence), e.g. ``"fp16,bf16"``.
        modes: rounding mode(s), e.g. ``"rne,sr"``.
        n: number of terms (default ``2^14``; at least twice the stagnation point of every
            round-to-nearest run is advisable).
        runs: independent runs of each stochastic mode (mean and range are reported).
        seed: seed of the stochastic runs.
        out_dir: where to write ``harmonic.png`` and ``harmonic.md`` (``None``: nothing
            written, and no plot unless ``plot`` and ``out_dir`` are both set).
        plot: draw the plot (needs matplotlib) when ``out_dir`` is given.
        progress: show tqdm progress bars.

    Returns:
        :class:`HarmonicResult` (``rows``, ``plot_path``, ``markdown``, ...).

    Example:
        >>> r = harmonic("fp16", "rne", n=1100)
        >>> r.rows[0].stagnation_n, r.rows[0].stagnation_value
        (513, 7.0859375)
    """
    fl = [f.strip() for f in fmts.split(",")] if isinstance(fmts, str) else list(fmts)
    ml = [m.strip() for m in modes.split(",")] if isinstance(modes, str) else list(modes)
    for f in fl:
        get_element_format(f)
    n = 2**14 if n is None else int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    exact = exact_harmonic(n)
    rows: list[HarmonicRow] = []
    sums: dict[tuple[str, str], np.ndarray] = {}
    for f in fl:
        for mname in ml:
            m = as_mode(mname)
            s = partial_sums(n, f, m.value, seed=seed, runs=runs, progress=progress)
            sums[(f, m.value)] = s
            fin = s[:, -1]
            st = stagnation(s[0]) if s.shape[0] == 1 else None
            rows.append(
                HarmonicRow(
                    fmt=f,
                    mode=m.value,
                    n=n,
                    runs=s.shape[0],
                    final=float(fin.mean()),
                    final_min=float(fin.min()),
                    final_max=float(fin.max()),
                    stagnation_n=None if st is None else st[0],
                    stagnation_value=None if st is None else st[1],
                    exact=float(exact[-1]),
                    rel_error=float(abs(fin.mean() - exact[-1]) / exact[-1]),
                    seed=seed if m.stochastic else None,
                )
            )
    md = markdown_table(rows)
    plot_path = md_path = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plot:
            plot_path = _plot(exact, sums, out / "harmonic.png")
        text = md + (f"\n![harmonic series]({plot_path.name})\n" if plot_path else "")
        md_path = out / "harmonic.md"
        md_path.write_text(text)
    return HarmonicResult(rows, plot_path, md, md_path, exact, sums)


def markdown_table(rows: Sequence[HarmonicRow]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| format | mode | n | runs | s_n (mean) | s_n range | stagnates from n | at value "
        "| exact H_n | rel. error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rng = f"{r.final_min:.6g} – {r.final_max:.6g}" if r.runs > 1 else "—"
        st_n = "—" if r.stagnation_n is None else str(r.stagnation_n)
        st_v = "—" if r.stagnation_value is None else repr(r.stagnation_value)
        lines.append(
            f"| {r.fmt} | {r.mode} | {r.n} | {r.runs} | {r.final:.8g} | {rng} | {st_n} "
            f"| {st_v} | {r.exact:.8g} | {r.rel_error:.2e} |"
        )
    return "\n".join(lines) + "\n"


def _plot(exact: np.ndarray, sums: dict[tuple[str, str], np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = exact.size
    x = np.arange(1, n + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, exact, color="black", lw=1.5, label="exact $H_n$ (Fraction)")
    for (f, m), s in sums.items():
        if s.shape[0] > 1:
            line = ax.plot(x, s.mean(axis=0), lw=1, label=f"{f} {m} (mean of {s.shape[0]})")
            ax.fill_between(
                x, s.min(axis=0), s.max(axis=0), color=line[0].get_color(), alpha=0.2, lw=0
            )
        else:
            ax.plot(x, s[0], lw=1, ls="--", label=f"{f} {m}")
    ax.set_xscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("partial sum $s_n$")
    ax.set_title("Harmonic series: round-to-nearest stagnates, stochastic rounding does not")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = [
    "HarmonicResult",
    "HarmonicRow",
    "exact_harmonic",
    "harmonic",
    "markdown_table",
    "partial_sums",
    "stagnation",
]
