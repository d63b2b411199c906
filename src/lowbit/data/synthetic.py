"""A tiny random data set that a small model separates quickly: for tests, no files needed."""

from __future__ import annotations

import numpy as np

from lowbit.data.splits import DataSplits, normalised_splits

NUM_CLASSES = 4
IMAGE_SIZE = 8
N_TRAIN, N_TEST = 256, 128
NOISE = 0.25


def load_synthetic(seed: int = 0) -> DataSplits:
    """``NUM_CLASSES`` random ±1 prototype images plus Gaussian noise (std ``NOISE``).

    The prototypes differ in about half their 64 pixels, so the nearest prototype is the label
    with overwhelming probability: a linear model separates the classes.
    """
    rng = np.random.default_rng(seed)
    protos = rng.choice(np.array([-1.0, 1.0]), size=(NUM_CLASSES, 1, IMAGE_SIZE, IMAGE_SIZE))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % NUM_CLASSES
        rng.shuffle(y)
        x = protos[y] + NOISE * rng.standard_normal((n, 1, IMAGE_SIZE, IMAGE_SIZE))
        return (0.5 + 0.25 * x).astype(np.float32), y.astype(np.int64)  # roughly [0, 1]

    xtr, ytr = draw(N_TRAIN)
    xte, yte = draw(N_TEST)
    return normalised_splits("synthetic", xtr, ytr, xte, yte, num_classes=NUM_CLASSES)
