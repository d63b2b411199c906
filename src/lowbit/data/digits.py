"""scikit-learn's digits (1797 real 8×8 handwritten digits, pixels 0..16; ships with sklearn)."""

from __future__ import annotations

import numpy as np

from lowbit.data.splits import DataSplits, normalised_splits

TEST_SIZE = 450  # 1347 train / 450 test, the split sklearn's docs use (25 %)


def load_digits_splits(seed: int = 0) -> DataSplits:
    """Digits as ``DataSplits``: a ``seed``-ed stratified 1347/450 split; pixels (codes
    0..16) / 16, normalised by the train mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None, :, :]  # integer codes 0..16
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=int(seed), stratify=y
    )
    return normalised_splits("digits", xtr, ytr, xte, yte, num_classes=10, levels=16)
