"""A small TOML writer for the configs of lowbit (the standard library only reads TOML).

Writes what JSON-like config dicts hold: strings, booleans, integers, floats (``inf``/``nan``
included), lists of scalars, nested tables and lists of tables. ``None`` has no TOML form, so a
key whose value is ``None`` is left out; readers fall back to the field's default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _string(s: str) -> str:
    """A TOML basic string: escape quotes, backslashes and control characters (DEL too)."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(k: str) -> str:
    if not isinstance(k, str):
        raise TypeError(f"TOML keys must be strings, got {k!r}")
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, Mapping) for x in v):
            raise TypeError("a list of tables can only be the value of a key, not nested")
        return "[" + ", ".join(_scalar(x) for x in v if x is not None) + "]"
    raise TypeError(
        f"cannot write {type(v).__name__} value {v!r} to TOML; accepted: str, bool, int, "
        "float, list, dict"
    )


def _is_table_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, Mapping) for x in v)


def _table(d: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    plain = [
        (k, v)
        for k, v in d.items()
        if v is not None and not isinstance(v, Mapping) and not _is_table_list(v)
    ]
    for k, v in plain:
        lines.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in d.items():
        if isinstance(v, Mapping):
            sub = [*path, _key(k)]
            lines.append("")
            lines.append("[" + ".".join(sub) + "]")
            _table(v, sub, lines)
        elif _is_table_list(v):
            sub = [*path, _key(k)]
            for item in v:
                lines.append("")
                lines.append("[[" + ".".join(sub) + "]]")
                _table(item, sub, lines)


def dumps(d: Mapping[str, Any]) -> str:
    """TOML text of the mapping ``d`` (keys with value ``None`` left out).

    Args:
        d: a JSON-like mapping (str keys; str/bool/int/float/list/dict values).

    Returns:
        The TOML document, ending with a newline; ``tomllib.loads`` gives ``d`` back less its
        ``None`` values.

    Raises:
        TypeError: a key that is not a string or a value of another type.
    """
    lines: list[str] = []
    _table(d, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"
