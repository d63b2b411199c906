"""``lowbit autonumerics``: evolve the cheapest approximations of a function (AutoNumerics).

Runs :func:`lowbit.methods.autonumerics.search` and prints the Pareto front (operations vs max
error; in a format: ulps of the format, every input of the interval, every operation rounded)
beside the Taylor and minimax Horner baselines. Writes to ``--out``: ``front.png`` (the plot),
``result.json`` (front, baselines, history), ``programs.py`` (every front program as float64
numpy code and as ``lb.arith`` code running in the format).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``autonumerics`` subparser to ``sub`` (the subparsers of ``lowbit``)."""
    s = sub.add_parser(
        "autonumerics",
        help="evolve the cheapest programs approximating exp2/log2/erf/sigmoid/gelu",
        description="Evolve straight-line programs of add/sub/mul/fma/scale approximating a "
        "function (NSGA-II on max error and operation count, constants fitted by LP or "
        "SLP). Without --format: float64 programs, error relative or absolute per "
        "function. With --format: every input of the format in the interval, every "
        "operation rounded in --mode, error in ulps of the true result (exhaustive). "
        "Prints the front beside the Taylor/minimax Horner baselines; writes front.png, "
        "result.json and programs.py to --out.",
    )
    s.add_argument(
        "--function", default="exp2", help="exp2, log2, erf, sigmoid or gelu (default exp2)"
    )
    s.add_argument(
        "--interval",
        default=None,
        metavar="A,B",
        help="interval 'a,b' (default: the function's, e.g. 0,1 for exp2)",
    )
    s.add_argument(
        "--format",
        default=None,
        dest="fmt",
        help="target format (bf16, fp16, e4m3, ...); default: real-number mode",
    )
    s.add_argument(
        "--mode", default="rne", help="rounding mode of every operation (format mode; default rne)"
    )
    s.add_argument(
        "--ops",
        default="add,mul,fma",
        help="operations allowed, comma-separated (add,sub,mul,fma,scale)",
    )
    s.add_argument("--budget", type=int, default=2000, help="candidate programs to generate")
    s.add_argument("--seed", type=int, default=0, help="seed of the search")
    s.add_argument("--max-ops", type=int, default=10, help="largest program (default 10)")
    s.add_argument("--population", type=int, default=32, help="NSGA-II population size")
    s.add_argument("--workers", type=int, default=1, help="processes fitting constants")
    s.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop the evolution after this long",
    )
    s.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="JSON checkpoint of the search state (written every few generations)",
    )
    s.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    s.add_argument(
        "--bound",
        type=float,
        default=None,
        help="error bound (ulps in a format): report the cheapest evolved program "
        "and baseline meeting it",
    )
    s.add_argument("--out", default="autonumerics_out", help="output folder")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run(args: argparse.Namespace, console: Any) -> int:
    """Handler of ``lowbit autonumerics``; returns the exit status (user errors: ValueError)."""
    from rich.table import Table

    from lowbit.methods.autonumerics import search

    ops = tuple(o for o in str(args.ops).split(",") if o.strip())
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint PATH")
    res = search(
        args.function,
        args.interval,
        fmt=args.fmt,
        mode=args.mode,
        ops=ops,
        budget=args.budget,
        seed=args.seed,
        progress=not args.no_progress,
        max_ops=args.max_ops,
        population=args.population,
        workers=args.workers,
        time_limit=args.time_limit,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    where = f"in {res.fmt} ({res.mode}), exhaustive" if res.fmt else "real-number mode"
    table = Table(
        title=f"{res.function} on [{res.interval[0]:g}, {res.interval[1]:g}], {where}: {res.unit}"
    )
    rows = res.rows()
    for key in rows[0]:
        table.add_column(key, justify="right")
    for r in rows:
        table.add_row(*(_fmt(v) for v in r.values()))
    console.print(table)
    console.print(
        f"{res.children} programs generated, {res.fits} structures fitted, "
        f"{res.generations} generations, {res.elapsed:.1f} s"
    )
    if args.bound is not None:
        best = res.cheapest(args.bound)
        base = res.cheapest_baseline(args.bound)
        console.print(
            f"bound {args.bound:g}: evolved "
            f"{f'{best.ops} ops ({best.error:.3g})' if best else 'none'}; minimax "
            f"baseline {f'{base.ops} ops ({base.error:.3g})' if base else 'none'}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = res.plot(out / "front.png", bound=args.bound)
    res.save(out / "result.json")
    code = [
        '"""Front programs of lowbit autonumerics (float64 numpy and lb.arith versions)."""',
        "",
        "import numpy as np",
        "",
        "import lowbit as lb",
        "",
        "",
    ]
    for e in res.front:
        code += [res.numpy_code(e), "", res.arith_code(e), "", ""]
    (out / "programs.py").write_text("\n".join(code).rstrip() + "\n")
    for e in res.front:
        console.print(f"{e.ops:2d} ops  {e.error:.3g}  {e.program}")
    console.print(f"plot: {plot}")
    console.print(f"programs: {out / 'programs.py'}; result: {out / 'result.json'}")
    return 0
