"""Entry point of the ``lowbit`` command (``lowbit.cli.main:main``).

User errors (an unknown format, mode or value) print one line on stderr and exit with status 2;
set ``LOWBIT_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from rich.console import Console

from lowbit import __version__
from lowbit.cli import commands
from lowbit.rounding import RoundMode

# Also treat -1e-3, -inf, -nan and -0x1p-3 as values, not options (argparse only knows -1, -.5).
_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan|0x)", re.IGNORECASE)


def _console() -> Console:
    """A console on stdout; 200 columns when stdout is not a terminal (no squeezed tables)."""
    out = sys.stdout
    width = None if out.isatty() else 200
    return Console(file=out, width=width, highlight=False, markup=False, soft_wrap=False)


def _harmonic(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from lowbit.reports.harmonic import harmonic

    res = harmonic(
        args.format,
        args.mode,
        n=args.n,
        runs=args.runs,
        seed=args.seed,
        out_dir=args.out,
        progress=not args.no_progress,
    )
    table = Table(title="Harmonic series 1 + 1/2 + ... + 1/n, every operation rounded")
    rows = res.table()
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    if res.plot_path is not None:
        console.print(f"plot: {res.plot_path}")
    return 0


def _demo(args: argparse.Namespace, console: Console) -> int:
    from lowbit.demo import run_demo

    if args.name == "harmonic":
        return _harmonic(args, console)
    run_demo(
        out_dir=args.out,
        quick=args.quick,
        seed=args.seed,
        console=console,
        progress=not args.no_progress,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lowbit`` (one subparser per subcommand)."""
    p = argparse.ArgumentParser(
        prog="lowbit",
        description="Bit-exact emulation of low-precision number formats.",
        epilog="Format names: lowbit formats. Errors exit with status 2.",
    )
    p.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    s = sub.add_parser(
        "formats",
        help="table of every preset format and its properties",
        description="Table of every preset (element and MX block formats): "
        "bits, layout, bias, range, eps, unit roundoff, inf/NaN.",
    )
    s.add_argument("--markdown", action="store_true", help="print Markdown tables instead")
    s.set_defaults(func=commands.cmd_formats)

    s = sub.add_parser(
        "info",
        help="properties and special encodings (hex) of one format",
        description="Bias, emin/emax, max, min normal/subnormal, eps, unit "
        "roundoff and the codes of ±inf, NaN and −0 of one format.",
    )
    s.add_argument("format", help="a format name: e4m3, bf16, posit16, q3.12, int8, mxfp8 ...")
    s.set_defaults(func=commands.cmd_info)

    modes = ", ".join(m.value for m in RoundMode)
    s = sub.add_parser(
        "round",
        help="round values to a format: value, bit pattern, error",
        description="Round each value to FORMAT and print the result exactly (repr, hex float, "
        "fraction), its bit pattern and the absolute and relative error. Each value "
        "is first parsed to the nearest float64 (or --input-dtype); that number is "
        "what gets rounded. The values form one array: with a stochastic mode, "
        "value i uses counter i of the seed.",
    )
    s.add_argument(
        "values",
        nargs="+",
        metavar="VALUE",
        help="decimal (0.1, -1e-3, inf, nan), hex float (0x1.8p-3) or fraction (1/3)",
    )
    s.add_argument("-f", "--format", required=True, help="target format (see lowbit formats)")
    s.add_argument("-m", "--mode", default="rne", help=f"rounding mode: {modes} (default rne)")
    s.add_argument(
        "--subnormals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the format's subnormals (default: on)",
    )
    s.add_argument(
        "--overflow",
        default=None,
        help="inf | nan | saturate (floats), saturate | wrap (fixed/int); default: "
        "inf for IEEE formats, nan for formats with NaN but no inf",
    )
    s.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of stochastic modes (default: a random one, printed)",
    )
    s.add_argument(
        "--rand-bits",
        type=int,
        default=None,
        help="random bits of SR (default 32); required by sr_bits",
    )
    s.add_argument(
        "--input-dtype",
        choices=sorted(commands.INPUT_DTYPES),
        default="float64",
        help="precision the values are parsed to before rounding (default float64)",
    )
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=commands.cmd_round)
    s._negative_number_matcher = _NEGATIVE_VALUE  # type: ignore[attr-defined]

    s = sub.add_parser(
        "enumerate",
        help="every code of a format (≤ 16 bits) with its value",
        description="Every code of a format of at most 16 bits: code, hex, "
        "binary, value and class (normal, subnormal, zero, inf, "
        "nan; posits: nar; fixed/int: finite).",
    )
    s.add_argument("format", help="a format of at most 16 bits")
    s.add_argument("--csv", action="store_true", help="CSV on stdout")
    s.set_defaults(func=commands.cmd_enumerate)

    s = sub.add_parser(
        "demo",
        help="round real data (digits, a small MLP) to 8/16-bit formats; or `demo harmonic`",
        description="`lowbit demo` rounds sklearn's digits images and the weights and "
        "activations of a small MLP trained with torch on them to "
        "every 8- and 16-bit preset in modes rne, rtz, sr; prints and "
        "saves a table of errors and the test accuracy with rounded "
        "weights. `lowbit demo harmonic --format fp16 --mode rne,sr` sums the harmonic "
        "series with every operation correctly rounded and shows RNE's stagnation "
        "(fp16: 7.0859375 from n = 513) next to SR following the exact sum.",
    )
    s.add_argument(
        "name",
        nargs="?",
        default="rounding",
        choices=("rounding", "harmonic"),
        help="which demo (default: rounding)",
    )
    s.add_argument("--format", default="fp16", help="harmonic: format(s), comma-separated")
    s.add_argument("--mode", default="rne,sr", help="harmonic: rounding mode(s), comma-separated")
    s.add_argument("--n", type=int, default=None, help="harmonic: number of terms (2^14)")
    s.add_argument("--runs", type=int, default=8, help="harmonic: runs per stochastic mode")
    s.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    s.add_argument(
        "--quick",
        action="store_true",
        help="fewer training steps and a subsample of the images (for tests)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of training and of SR (default 0)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_demo)

    # Subcommands of the higher layers live in their own modules; each adds its parser here.
    from lowbit.cli import assign_cmd, autonumerics_cmd, dr_cmd, train_cmd

    train_cmd.register(sub)
    dr_cmd.register(sub)
    autonumerics_cmd.register(sub)
    assign_cmd.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lowbit`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help, --version, usage errors (argparse prints them)
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args, _console()))
    except (ValueError, TypeError, ModuleNotFoundError) as e:
        if os.environ.get("LOWBIT_TRACEBACK"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "; known names: " in msg:  # the registry lists ~80 names: point at the table
            head, _, rest = msg.partition("; known names: ")
            _, _, tail = rest.partition("; or write ")
            msg = f"{head}; see `lowbit formats` for the names" + (
                f", or write {tail}" if tail else ""
            )
        if isinstance(e, ModuleNotFoundError):
            msg = (
                f"{msg}; lowbit {args.command} needs optional packages: "
                "pip install 'lowbit[torch,demo]'"
            )
        print(f"lowbit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # lowbit enumerate fp16 | head
        try:  # the recipe of the Python docs: keep the exit flush from raising again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
