"""``lowbit dr``: Double Rounding (one int8 model switchable to 8/6/4/3/2 bits)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``dr`` subparser to ``sub`` (the subparsers of ``lowbit``)."""
    s = sub.add_parser("dr", help="Double Rounding: train, export, eval, search")
    s.set_defaults(func=run)


def run(args: argparse.Namespace, console: Any) -> int:
    raise ValueError("lowbit dr is not implemented yet")
