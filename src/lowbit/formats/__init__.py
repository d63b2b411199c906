"""Layer 1: number formats and the preset registry."""

from lowbit.formats.block_format import BlockFormat
from lowbit.formats.fixed_format import FixedFormat, IntFormat
from lowbit.formats.float_format import FloatFormat
from lowbit.formats.posit_format import PositFormat
from lowbit.formats.registry import (
    E8M0,
    AnyFormat,
    Format,
    block_presets,
    get_element_format,
    get_format,
    known_names,
    presets,
    register_format,
)

__all__ = [
    "E8M0",
    "AnyFormat",
    "BlockFormat",
    "FixedFormat",
    "FloatFormat",
    "Format",
    "IntFormat",
    "PositFormat",
    "block_presets",
    "get_element_format",
    "get_format",
    "known_names",
    "presets",
    "register_format",
]
