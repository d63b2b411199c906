"""The ``lowbit`` subcommands: formats, info, round, enumerate (``demo`` lives in lowbit.demo)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import secrets
import sys
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np
from rich.console import Console
from rich.table import Table

from lowbit.cli.describe import (
    aliases_by_name,
    bit_fields,
    classify,
    code_of,
    fmt_num,
    hex_code,
    hexf,
    layout,
    nan_convention,
    pow2,
    special_codes,
)
from lowbit.formats import (
    BlockFormat,
    FloatFormat,
    Format,
    IntFormat,
    PositFormat,
    block_presets,
    get_element_format,
    get_format,
    presets,
)
from lowbit.rounding import RoundMode, as_mode, encode

MAX_ENUMERATE_BITS = 16
INPUT_DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


class CLIError(ValueError):
    """A user error: printed as one line on stderr, exit status 2."""


# ---------------------------------------------------------------------------------------------
# lowbit formats
# ---------------------------------------------------------------------------------------------
def _bias(fmt: Format) -> str:
    return str(fmt.bias) if isinstance(fmt, FloatFormat) else "—"


def _min_sub(fmt: Format) -> str:
    if isinstance(fmt, FloatFormat) and not fmt.has_subnormals:
        return "—"
    if isinstance(fmt, PositFormat):
        return "—"
    return fmt_num(fmt.min_subnormal)


def _has_inf(fmt: Format) -> str:
    return "yes" if isinstance(fmt, FloatFormat) and fmt.has_inf else "no"


def format_rows() -> tuple[list[str], list[list[str]]]:
    """Header and rows of the element-format table (every preset of the registry)."""
    aliases = aliases_by_name()
    header = [
        "name",
        "aliases",
        "bits",
        "layout",
        "bias",
        "max",
        "min normal",
        "min subnormal",
        "eps",
        "unit roundoff",
        "inf",
        "NaN",
    ]
    rows = []
    for name, f in presets().items():
        rows.append(
            [
                name,
                ", ".join(aliases.get(name, [])),
                str(f.bits),
                layout(f),
                _bias(f),
                fmt_num(f.max),
                fmt_num(f.min_normal),
                _min_sub(f),
                fmt_num(f.eps),
                fmt_num(f.unit_roundoff),
                _has_inf(f),
                nan_convention(f),
            ]
        )
    return header, rows


def block_rows() -> tuple[list[str], list[list[str]]]:
    """Header and rows of the block-format table (MX presets)."""
    aliases = aliases_by_name()
    header = [
        "name",
        "aliases",
        "element",
        "block",
        "scale",
        "scale rule",
        "bits/element",
        "element max",
        "largest value",
    ]
    rows = []
    for name, b in block_presets().items():
        smax = b.scale_fmt.max
        rows.append(
            [
                name,
                ", ".join(aliases.get(name, [])),
                b.elem.name,
                str(b.block),
                b.scale_fmt.name,
                b.scale_rule,
                f"{b.bits_per_element:g}",
                fmt_num(b.elem.max),
                fmt_num(b.elem.max * smax),
            ]
        )
    return header, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


_SHORT = {
    "min normal": "min norm",
    "min subnormal": "min sub",
    "unit roundoff": "u",
    "bits/element": "bits/elem",
    "element max": "elem max",
    "largest value": "largest",
    "scale rule": "rule",
}
_CAPTION = (
    "min norm/min sub: smallest normal/subnormal; eps: spacing above 1 (fixed/int: the "
    "step); u: unit roundoff = eps/2"
)


def cmd_formats(args: argparse.Namespace, console: Console) -> int:
    """Print the table of every preset format (and block presets)."""
    tables = [("Element formats", *format_rows()), ("Block formats (OCP MX v1.0)", *block_rows())]
    if args.markdown:
        for title, header, rows in tables:
            print(f"**{title}**\n\n{_markdown(header, rows)}\n")
        return 0
    for title, header, rows in tables:
        t = Table(
            title=title,
            title_justify="left",
            caption_justify="left",
            caption=_CAPTION if title.startswith("Element") else None,
        )
        text_cols = ("name", "aliases", "layout", "element", "scale", "scale rule", "inf", "NaN")
        for h in header:
            wrap = h in ("aliases", "NaN", "layout")
            t.add_column(
                _SHORT.get(h, h),
                no_wrap=not wrap,
                overflow="fold",
                min_width={"aliases": 10, "NaN": 6, "layout": 6}.get(h),
                justify="left" if h in text_cols else "right",
            )
        for r in rows:
            t.add_row(*r)
        console.print(t)
    console.print(
        "Parsed names work too: eXmY[fn|fnuz] (e.g. e5m10, e3m4fn), posit<n,es>, "
        "qI.F / uqI.F (fixed point), intN / uintN. Details: lowbit info NAME"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# lowbit info
# ---------------------------------------------------------------------------------------------
def _val(v: float, fmt: Format | None = None) -> str:
    """A value exactly: shortest repr, hex float, power of two, and its code in ``fmt``."""
    s = repr(v)
    if not (math.isnan(v) or math.isinf(v)):
        extra = [hexf(v)]
        p = pow2(v)
        if p:
            extra.append(p)
        s += "  = " + " = ".join(extra)
    if fmt is not None:
        s += f"   code {hex_code(code_of(v, fmt), fmt.bits)}"
    return s


def info_rows(fmt: Format) -> list[tuple[str, str]]:
    """Key/value rows describing an element format."""
    rows: list[tuple[str, str]] = []
    if isinstance(fmt, FloatFormat):
        conv = {
            "ieee": "IEEE 754: all-ones exponent holds ±inf (mantissa 0) and NaNs",
            "fn": "OCP 'fn': no infinities; only the all-ones exponent+mantissa code is NaN",
            "fnuz": "'fnuz': no infinities, no −0; the −0 code is the single NaN",
            "none": "no inf, no NaN: every code is a finite number (OCP MX FP6/FP4)",
        }[fmt.special]
        sign = "sign + " if fmt.signed else "no sign, "
        rows += [
            (
                "family",
                f"float: {sign}{fmt.exp_bits} exponent + {fmt.man_bits} mantissa bits "
                f"= {fmt.bits} bits",
            ),
            ("convention", conv + ("" if fmt.has_zero else "; no zero, no subnormals")),
            ("bias", str(fmt.bias)),
            ("emin / emax", f"{fmt.emin} / {fmt.emax}"),
            (
                "precision",
                f"{fmt.precision} bit{'s' if fmt.precision > 1 else ''} ({fmt.man_bits} stored)",
            ),
            ("max", _val(fmt.max, fmt)),
            ("min normal", _val(fmt.min_normal, fmt)),
            (
                "min subnormal",
                _val(fmt.min_subnormal, fmt) if fmt.has_subnormals else "none (no subnormals)",
            ),
            ("eps", _val(fmt.eps)),
            ("unit roundoff", _val(fmt.unit_roundoff)),
        ]
        if fmt.bits <= MAX_ENUMERATE_BITS:
            rows.append(("finite codes", f"{fmt.n_finite} of {1 << fmt.bits}"))
    elif isinstance(fmt, PositFormat):
        rows += [
            (
                "family",
                f"posit<{fmt.n},{fmt.es}> (Posit Standard 2022"
                f"{'' if fmt.es == 2 else '; older es'}): sign, regime, up to {fmt.es} "
                "exponent bits, fraction",
            ),
            (
                "convention",
                "one zero (no −0), no infinities, no subnormals; NaR is 1 followed "
                "by zeros; overflow saturates at ±maxpos",
            ),
            ("useed", f"2^{fmt.useed_log2}"),
            ("max (maxpos)", _val(fmt.max, fmt)),
            ("min (minpos)", _val(fmt.min_normal, fmt)),
            ("eps (at 1)", _val(fmt.eps)),
            ("unit roundoff (at 1)", _val(fmt.unit_roundoff)),
        ]
    else:
        fixed = fmt.fixed if isinstance(fmt, IntFormat) else fmt
        kind = "two's complement" if fixed.signed else "unsigned"
        desc = (
            f"integer, {fmt.bits} bits, {kind}"
            if isinstance(fmt, IntFormat)
            else f"fixed point Q{fixed.int_bits}.{fixed.frac_bits}, {fixed.bits} bits, {kind}"
        )
        rows += [
            ("family", desc),
            ("convention", "one zero, no inf/NaN; overflow saturates (default) or wraps"),
            ("step", _val(fixed.step)),
            ("max", _val(fixed.max, fmt)),
            ("min", _val(fixed.min, fmt)),
            ("unit roundoff", _val(fixed.step / 2) + " (absolute)"),
        ]
    for k, v in special_codes(fmt).items():
        rows.append((k, v))
    rows.append(("zero", hex_code(0, fmt.bits)))
    return rows


def _kv(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_info(args: argparse.Namespace, console: Console) -> int:
    """Print the properties and special encodings of one format."""
    fmt = get_format(args.format)
    aliases = aliases_by_name().get(fmt.name, [])
    head = fmt.name + (f"  (aliases: {', '.join(aliases)})" if aliases else "")
    rows: list[tuple[str, str]] = []
    if isinstance(fmt, BlockFormat):
        elem = fmt.elem
        rows += [
            (
                "family",
                f"block: {fmt.block} elements of {elem.name} share one "
                f"{fmt.scale_fmt.name} scale (OCP MX v1.0)",
            ),
            (
                "scale rule",
                "floor: X = 2^(floor(log2 amax) - emax_elem), may clip"
                if fmt.scale_rule == "floor"
                else "ceil: smallest power of two that avoids clipping",
            ),
            ("element emax", str(fmt.elem_emax)),
            (
                "bits/element",
                f"{fmt.bits_per_element:g} ({elem.bits} + {fmt.scale_fmt.bits}/{fmt.block})",
            ),
            ("largest value", _val(elem.max * fmt.scale_fmt.max)),
            ("element format", elem.name),
        ]
        rows += [(f"  {k}", v) for k, v in info_rows(elem)]
    else:
        rows += info_rows(fmt)
    print(head)
    print(_kv(rows))
    return 0


# ---------------------------------------------------------------------------------------------
# lowbit round
# ---------------------------------------------------------------------------------------------
def parse_value(s: str) -> float:
    """A decimal (``0.1``, ``-1e-3``, ``inf``, ``nan``), hex float (``0x1.8p-3``) or ``1/3``."""
    t = s.strip()
    try:
        return float(t)
    except ValueError:
        pass
    if "0x" in t.lower():  # float.fromhex also takes "abc" without the prefix
        try:
            return float.fromhex(t)
        except ValueError:
            pass
    try:
        return float(Fraction(t))
    except (ValueError, ZeroDivisionError):
        raise CLIError(
            f"invalid value {s!r}: expected a decimal (0.1, -1e-3, inf, nan), a hex "
            "float (0x1.8p-3) or a fraction (1/3)"
        ) from None


def encode_values(vals: list[float], fmt: Format) -> list[int | None]:
    """Codes of already-rounded values (``lowbit.encode``); ``None`` for a value without one.

    A NaN result has no code in formats without NaN (FP6/FP4, fixed point, integers).
    """
    try:
        codes = np.asarray(encode(np.asarray(vals, dtype=np.float64), fmt)).reshape(-1)
        return [int(c) for c in codes]
    except ValueError:
        pass
    out: list[int | None] = []
    for v in vals:
        try:
            out.append(int(np.asarray(encode(np.asarray([v]), fmt)).reshape(-1)[0]))
        except ValueError:
            out.append(None)
    return out


def _fmt_err(err: Fraction | float) -> str:
    if isinstance(err, float):
        return repr(err)
    f = float(err)
    return repr(f) + ("" if Fraction(f) == err else " (rounded to float64)")


def round_records(
    values: list[float],
    fmt: Format,
    mode: RoundMode,
    *,
    input_dtype: str,
    overflow: str | None,
    subnormals: bool,
    seed: int | None,
    rand_bits: int | None,
) -> list[dict[str, Any]]:
    """Round ``values`` (one array, element i uses SR counter i) and describe each result."""
    import lowbit as lb

    dt = INPUT_DTYPES[input_dtype]
    with np.errstate(over="ignore"):
        x = np.asarray(values, dtype=np.float64).astype(dt).astype(np.float64)  # exact upcast
    # Rounded in float64, which holds every result exactly (e.g. posit16's 2^56 from an fp16
    # input); the value rounded is still the one parsed to ``input_dtype``.
    y = lb.round(
        x, fmt, mode, overflow=overflow, subnormals=subnormals, seed=seed, rand_bits=rand_bits
    )
    xs = [float(v) for v in x]
    ys = [float(v) for v in np.asarray(y)]
    codes = encode_values(ys, fmt)
    out = []
    for given, xv, yv, code in zip(values, xs, ys, codes, strict=True):
        if code is not None:
            back = fmt.decode(code)
            if not (back == yv and math.copysign(1, back) == math.copysign(1, yv)) and not (
                math.isnan(back) and math.isnan(yv)
            ):
                raise RuntimeError(
                    f"internal error: code {code:#x} decodes to {back!r}, "
                    f"not the rounded value {yv!r}"
                )
            bits, names = bit_fields(code, fmt)
            hx = hex_code(code, fmt.bits)
        else:
            bits, names, hx = "none", f"{fmt.name} has no code for {yv!r}", "none"
        rec: dict[str, Any] = {
            "given": given,
            "input": xv,
            "input_hex": hexf(xv),
            "rounded": yv,
            "rounded_hex": hexf(yv),
            "code": code,
            "hex": hx,
            "binary": bits,
            "fields": names,
        }
        if math.isfinite(xv) and math.isfinite(yv):
            err = abs(Fraction(yv) - Fraction(xv))
            rec["fraction"] = str(Fraction(yv))
            rec["abs_error"] = float(err)
            rec["abs_error_exact"] = str(err)
            rec["rel_error"] = (
                float(err / abs(Fraction(xv))) if xv != 0 else (0.0 if yv == 0 else math.inf)
            )
        else:
            same = (math.isnan(xv) and math.isnan(yv)) or xv == yv
            rec["fraction"] = None
            rec["abs_error"] = 0.0 if same else (math.nan if math.isnan(yv) else math.inf)
            rec["abs_error_exact"] = None
            rec["rel_error"] = rec["abs_error"]
        out.append(rec)
    return out


def cmd_round(args: argparse.Namespace, console: Console) -> int:
    """Round values to a format and show value, bits and error."""
    fmt = get_element_format(args.format)
    mode = as_mode(args.mode)
    seed = args.seed
    if mode.stochastic and seed is None:
        seed = secrets.randbits(63)
    vals = [parse_value(s) for s in args.values]
    recs = round_records(
        vals,
        fmt,
        mode,
        input_dtype=args.input_dtype,
        overflow=args.overflow,
        subnormals=args.subnormals,
        seed=seed,
        rand_bits=args.rand_bits,
    )
    if args.json:
        meta = {
            "format": fmt.name,
            "mode": mode.value,
            "seed": seed,
            "subnormals": args.subnormals,
            "overflow": args.overflow,
            "input_dtype": args.input_dtype,
        }
        print(json.dumps({**meta, "results": recs}, indent=1))
        return 0
    opts = [f"mode {mode.value}"]
    if mode.stochastic:
        opts.append(f"seed {seed}")
    if not args.subnormals:
        opts.append("no subnormals")
    if args.overflow:
        opts.append(f"overflow {args.overflow}")
    print(
        f"format {fmt.name} ({layout(fmt)}), {', '.join(opts)}; values parsed to {args.input_dtype}"
    )
    for rec in recs:
        src = (
            ""
            if rec["given"] == rec["input"] or math.isnan(rec["given"])
            else f"   (parsed from {rec['given']!r})"
        )
        rounded = f"{rec['rounded']!r} = {hexf(rec['rounded'])}"
        frac = rec["fraction"]
        if frac is not None and "/" in frac and len(frac) <= 40:
            rounded += f" = {frac}"
        exact = rec["abs_error_exact"]
        rows = [
            ("input", f"{rec['input']!r} = {hexf(rec['input'])}{src}"),
            ("rounded", rounded),
            ("bits", f"{rec['binary']}   ({rec['fields']})"),
            ("hex", rec["hex"]),
            (
                "abs error",
                _fmt_err(Fraction(exact)) if exact is not None else repr(rec["abs_error"]),
            ),
            ("rel error", repr(rec["rel_error"])),
        ]
        print()
        print(_kv(rows))
    return 0


# ---------------------------------------------------------------------------------------------
# lowbit enumerate
# ---------------------------------------------------------------------------------------------
def enumerate_rows(fmt: Format) -> list[tuple[int, str, str, float, str]]:
    """(code, hex, binary with fields, value, class) for every code of ``fmt``."""
    rows = []
    for code in range(1 << fmt.bits):
        bits, _ = bit_fields(code, fmt)
        rows.append((code, hex_code(code, fmt.bits), bits, fmt.decode(code), classify(fmt, code)))
    return rows


def cmd_enumerate(args: argparse.Namespace, console: Console) -> int:
    """Print every code of a format of at most 16 bits."""
    fmt = get_format(args.format)
    given = args.format if args.format == fmt.name else f"{args.format} ({fmt.name})"
    if isinstance(fmt, BlockFormat):
        raise CLIError(
            f"{given} is a block format; enumerate its element format instead: "
            f"lowbit enumerate {fmt.elem.name}"
        )
    if fmt.bits > MAX_ENUMERATE_BITS:
        raise CLIError(
            f"{given} has {fmt.bits} bits ({1 << fmt.bits} codes); enumerate "
            f"accepts formats of at most {MAX_ENUMERATE_BITS} bits"
        )
    rows = enumerate_rows(fmt)
    try:  # field names of a typical code (1.0 has every field of a posit)
        _, names = bit_fields(code_of(1.0, fmt), fmt)
    except ValueError:
        _, names = bit_fields(0, fmt)
    if isinstance(fmt, PositFormat):
        names += " (negative codes: sign|two's complement of the rest)"
    if args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["code", "hex", "binary", "value", "class"])
        for code, hx, bits, val, cls in rows:
            w.writerow([code, hx, bits, repr(val), cls])
        return 0
    width = max(len(r[2]) for r in rows)
    lines = [
        f"{fmt.name}: {len(rows)} codes; binary is {names}",
        f"{'code':>6}  {'hex':<{len(rows[0][1])}}  {'binary':<{width}}  {'value':<24}  class",
    ]
    lines += [
        f"{code:>6}  {hx}  {bits:<{width}}  {val!r:<24}  {cls}" for code, hx, bits, val, cls in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


__all__ = [
    "CLIError",
    "block_rows",
    "cmd_enumerate",
    "cmd_formats",
    "cmd_info",
    "cmd_round",
    "enumerate_rows",
    "format_rows",
    "info_rows",
    "parse_value",
    "round_records",
]
