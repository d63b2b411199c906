"""``lowbit train``: quantization-aware / low-precision training of a small model on real data."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``train`` subparser to ``sub`` (the subparsers of ``lowbit``)."""
    s = sub.add_parser("train", help="train a small model with every tensor in its own format")
    s.set_defaults(func=run)


def run(args: argparse.Namespace, console: Any) -> int:
    raise ValueError("lowbit train is not implemented yet")
