"""``DataSplits``: a data set's train and test tensors plus the shape facts models need."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train and test splits of an image classification data set.

    Images are float32 NCHW, normalised with the (full) train set's pixel mean and std;
    labels are int64.

    Attributes:
        name: canonical data-set name ("fashion-mnist", "digits", "synthetic").
        train: ``TensorDataset(images, labels)``.
        test: ``TensorDataset(images, labels)``.
        in_channels: C of the NCHW images.
        image_size: H (= W) of the images.
        num_classes: labels lie in ``range(num_classes)``.
        mean: train pixel mean used to normalise (in the [0, 1] pixel scale).
        std: train pixel std used to normalise.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    in_channels: int
    image_size: int
    num_classes: int
    mean: float = 0.0
    std: float = 1.0


def normalised_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    levels: int | None = None,
) -> DataSplits:
    """Build ``DataSplits`` from NCHW pixel arrays, normalised by the train mean and std.

    Every pixel becomes ``(p - mean) / std`` in float32, where ``p = code / levels`` (float32)
    for integer codes, or ``p`` itself for float input; ``mean``/``std`` are float64 statistics
    of the train pixels, rounded to float32 for the arithmetic.

    Args:
        name: data-set name.
        x_train: train images, NCHW: integer codes in ``0..levels`` when ``levels`` is given,
            else floats (roughly in [0, 1]).
        y_train: train labels.
        x_test: test images, same layout as ``x_train``.
        y_test: test labels.
        num_classes: number of classes.
        levels: the largest pixel code (255 for 8-bit images, 16 for digits); integer codes go
            through a 256-entry lookup table, much faster than float arithmetic on 47M pixels.
    """
    if x_train.ndim != 4 or x_test.ndim != 4 or x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"expected NCHW arrays of one shape, got {x_train.shape}, {x_test.shape}")
    if levels is None:
        mean = float(np.mean(x_train, dtype=np.float64))
        std = float(np.std(x_train, dtype=np.float64))
    else:
        if x_train.dtype != np.uint8 or x_test.dtype != np.uint8:
            raise TypeError(f"levels={levels} needs uint8 codes, got {x_train.dtype}")
        # torch.bincount on uint8 is ~10x faster than numpy's (which widens to intp first)
        hist = torch.bincount(torch.from_numpy(np.array(x_train).reshape(-1)), minlength=256)
        hist = hist.numpy().astype(np.float64)
        values = np.arange(256, dtype=np.float64) / levels
        n = hist.sum()
        mean = float(hist @ values / n)
        std = float(np.sqrt(hist @ (values - mean) ** 2 / n))
    if not std > 0:
        raise ValueError(f"{name}: train pixels are constant (std {std}); cannot normalise")
    mean32, std32 = np.float32(mean), np.float32(std)

    def prep(x: np.ndarray) -> torch.Tensor:
        if levels is None:
            return torch.from_numpy((np.asarray(x, dtype=np.float32) - mean32) / std32)
        lut = (np.arange(256, dtype=np.float32) / np.float32(levels) - mean32) / std32
        return torch.from_numpy(lut[x])

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(y, dtype=np.int64))

    return DataSplits(
        name=name,
        train=TensorDataset(prep(x_train), labels(y_train)),
        test=TensorDataset(prep(x_test), labels(y_test)),
        in_channels=int(x_train.shape[1]),
        image_size=int(x_train.shape[2]),
        num_classes=int(num_classes),
        mean=mean,
        std=std,
    )


def take_subset(ds: TensorDataset, subset: int, seed: int) -> TensorDataset:
    """The first ``subset`` samples of a ``seed``-ed permutation of ``ds`` (for quick runs)."""
    n = len(ds)
    if isinstance(subset, bool) or not isinstance(subset, int) or not 1 <= subset <= n:
        raise ValueError(f"subset={subset!r}: expected an int in 1..{n} (the train set size)")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:subset]
    return TensorDataset(*(t[idx] for t in ds.tensors))
