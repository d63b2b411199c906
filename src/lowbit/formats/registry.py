"""Preset formats by name, and a parser for ``eXmY``, ``posit<n,es>``, ``qI.F``, ``intN``.

Names follow ml_dtypes where it has the format (``e4m3fn``, ``e5m2``, ``e2m1fn``,
``e8m0fnu``) with the short aliases people type (``e4m3``, ``fp8``, ``bf16``).
"""

from __future__ import annotations

import re

from lowbit.formats.block_format import _E8M0, BlockFormat
from lowbit.formats.fixed_format import FixedFormat, IntFormat
from lowbit.formats.float_format import FloatFormat
from lowbit.formats.posit_format import PositFormat

Format = FloatFormat | PositFormat | FixedFormat | IntFormat
AnyFormat = Format | BlockFormat

_F = FloatFormat
E8M0 = _E8M0

# name -> format; the first name listed for a format is its canonical one.
_PRESETS: dict[str, Format] = {}
_BLOCKS: dict[str, BlockFormat] = {}
_ALIASES: dict[str, str] = {}


# Formats added at run time by register_format: found by get_format, but not listed among the
# presets (whose tables and exhaustive tests must not depend on what happened to be imported).
_USER: dict[str, Format] = {}


def _add(fmt: Format, *aliases: str) -> None:
    _PRESETS[fmt.name] = fmt
    for a in aliases:
        _ALIASES[a] = fmt.name


_add(_F(11, 52, name="fp64"), "float64", "binary64", "double", "e11m52")
_add(_F(8, 23, name="fp32"), "float32", "binary32", "single", "e8m23")
_add(_F(8, 10, name="tf32"), "tensorfloat32", "e8m10")
_add(_F(5, 10, name="fp16"), "float16", "binary16", "half", "e5m10")
_add(_F(8, 7, name="bf16"), "bfloat16", "e8m7")
_add(_F(5, 2, name="e5m2"), "fp8_e5m2", "float8_e5m2", "q52")
_add(_F(4, 3, special="fn", name="e4m3fn"), "e4m3", "fp8", "fp8_e4m3", "float8_e4m3fn")
_add(_F(4, 3, name="e4m3-ieee"), "q43", "e4m3ieee", "float8_e4m3")
_add(_F(4, 3, 8, "fnuz", name="e4m3fnuz"), "float8_e4m3fnuz")
_add(_F(5, 2, 16, "fnuz", name="e5m2fnuz"), "float8_e5m2fnuz")
_add(_F(3, 2, 3, "none", name="e3m2fn"), "e3m2", "fp6_e3m2", "float6_e3m2fn")
_add(_F(2, 3, 1, "none", name="e2m3fn"), "e2m3", "fp6_e2m3", "float6_e2m3fn")
_add(_F(2, 1, 1, "none", name="e2m1fn"), "e2m1", "fp4", "fp4_e2m1", "float4_e2m1fn")
_add(E8M0, "e8m0fnu", "float8_e8m0fnu")
_add(PositFormat(8, 2, name="posit8"), "posit<8,2>")
_add(PositFormat(16, 2, name="posit16"), "posit<16,2>")
_add(PositFormat(32, 2, name="posit32"), "posit<32,2>")
for _b in (2, 3, 4, 8, 16, 32):  # 64-bit integers are not exact in float64
    _add(IntFormat(_b, True))
    _add(IntFormat(_b, False))

MXINT8_ELEM = FixedFormat(1, 6, True, name="mxint8_elem")


def _add_block(name: str, elem_name: str) -> None:
    elem = MXINT8_ELEM if elem_name == "mxint8_elem" else _PRESETS[elem_name]
    assert isinstance(elem, (FloatFormat, FixedFormat))
    _BLOCKS[name] = BlockFormat(elem, 32, E8M0, "floor", name=name)


_add_block("mxfp8_e4m3", "e4m3fn")
_add_block("mxfp8_e5m2", "e5m2")
_add_block("mxfp6_e3m2", "e3m2fn")
_add_block("mxfp6_e2m3", "e2m3fn")
_add_block("mxfp4", "e2m1fn")
_add_block("mxint8", "mxint8_elem")
_ALIASES.update({"mxfp8": "mxfp8_e4m3", "mxfp4_e2m1": "mxfp4", "mxfp6": "mxfp6_e3m2"})

_RE_FLOAT = re.compile(r"^(?:fp|float)?e(\d+)m(\d+)(fnuz|fn|-ieee|ieee)?$")
_RE_POSIT = re.compile(r"^posit\s*<\s*(\d+)\s*,\s*(\d+)\s*>$|^posit(\d+)_(\d+)$")
_RE_FIXED = re.compile(r"^(u?)q(\d+)\.(\d+)$|^(u?)fixed<(\d+),(\d+)>$")
_RE_INT = re.compile(r"^(u?)int(\d+)$")


def known_names() -> list[str]:
    """Every preset name and alias, sorted."""
    return sorted([*_PRESETS, *_BLOCKS, *_ALIASES])


def register_format(fmt: Format, *aliases: str) -> None:
    """Make ``get_format(fmt.name)`` (and each alias) return ``fmt``; idempotent.

    For formats a method or a user defines (e.g. the HFP8 formats of Lee et al.) so that
    configs naming them round-trip through JSON/TOML. Names are matched case-insensitively.

    Raises:
        TypeError: ``fmt`` is not an element format, or it has no name.
        ValueError: a name is already taken by a different format.
    """
    if not isinstance(fmt, (FloatFormat, PositFormat, FixedFormat, IntFormat)):
        raise TypeError(
            f"fmt must be a FloatFormat, PositFormat, FixedFormat or IntFormat, "
            f"got {type(fmt).__name__}"
        )
    if not fmt.name:
        raise TypeError("fmt needs a name (pass name=... when constructing it)")
    keys = [k.strip().lower().replace(" ", "") for k in (fmt.name, *aliases)]
    for key, k in zip((fmt.name, *aliases), keys, strict=True):
        known = _PRESETS.get(_ALIASES.get(k, k)) or _BLOCKS.get(k) or _USER.get(k)
        if known is not None and known != fmt:
            raise ValueError(f"format name {key!r} is already registered as {known!r}")
    for k in keys:
        _USER[k] = fmt


def presets() -> dict[str, Format]:
    """Canonical name -> format for every element-wise preset."""
    return dict(_PRESETS)


def block_presets() -> dict[str, BlockFormat]:
    """Canonical name -> block format for every MX preset."""
    return dict(_BLOCKS)


def _parse(key: str) -> AnyFormat | None:
    m = _RE_FLOAT.match(key)
    if m:
        e, man, kind = int(m.group(1)), int(m.group(2)), m.group(3) or ""
        special = {"": "ieee", "-ieee": "ieee", "ieee": "ieee", "fn": "fn", "fnuz": "fnuz"}[kind]
        bias = (1 << (e - 1)) - 1 + (1 if special == "fnuz" else 0)
        return FloatFormat(e, man, bias, special)  # type: ignore[arg-type]
    m = _RE_POSIT.match(key)
    if m:
        n, es = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        return PositFormat(int(n), int(es))
    m = _RE_FIXED.match(key)
    if m:
        if m.group(2) is not None:
            uns, i, f = m.group(1), m.group(2), m.group(3)
        else:
            uns, i, f = m.group(4), m.group(5), m.group(6)
        return FixedFormat(int(i), int(f), signed=not uns)
    m = _RE_INT.match(key)
    if m:
        return IntFormat(int(m.group(2)), signed=not m.group(1))
    if key.startswith("posit") and key[5:].isdigit():
        return PositFormat(int(key[5:]), 2)
    return None


def get_format(fmt: AnyFormat | str) -> AnyFormat:
    """Look a format up by name, or pass a format object through.

    Accepts preset names and aliases (``"bf16"``, ``"e4m3"``, ``"mxfp8_e4m3"``), and parsed
    names: ``"e5m10"`` (IEEE-style; suffix ``fn``/``fnuz`` for the OCP/AMD conventions),
    ``"posit<8,0>"``, ``"q3.12"``/``"uq0.8"`` (fixed point), ``"int5"``/``"uint7"``.

    Raises:
        ValueError: the name is unknown; the message lists the known names.
        TypeError: ``fmt`` is neither a string nor a format object.
    """
    if isinstance(fmt, (FloatFormat, PositFormat, FixedFormat, IntFormat, BlockFormat)):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"format must be a name or a format object, got {type(fmt).__name__}")
    key = fmt.strip().lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    if key in _PRESETS:
        return _PRESETS[key]
    if key in _BLOCKS:
        return _BLOCKS[key]
    if key in _USER:
        return _USER[key]
    try:
        parsed = _parse(key)
    except (ValueError, TypeError) as err:
        raise ValueError(f"format {fmt!r} parses but is invalid: {err}") from None
    if parsed is None:
        raise ValueError(
            f"unknown format {fmt!r}; known names: {', '.join(known_names())}; "
            "or write eXmY[fn|fnuz], posit<n,es>, qI.F, uqI.F, intN, uintN"
        )
    return parsed


def get_element_format(fmt: AnyFormat | str) -> Format:
    """Like :func:`get_format` but rejects block formats (for element-wise rounding)."""
    f = get_format(fmt)
    if isinstance(f, BlockFormat):
        raise ValueError(
            f"{f.name} is a block format; use lowbit.quantize_mx / lowbit.blocks for it, "
            "or round to its element format"
        )
    return f
