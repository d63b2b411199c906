"""``DataNotFoundError``: a data set's files are not on this machine."""

from __future__ import annotations


class DataNotFoundError(FileNotFoundError):
    """A data set is not installed; the message says how to install it or where to point."""
