"""Reproducible reports behind ``lowbit demo ...`` and ``examples/`` (tables, plots, markdown)."""
