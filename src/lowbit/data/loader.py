"""``make_loader``: a DataLoader whose order depends only on its seed."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def make_loader(
    ds: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """Batches of ``ds`` in the main process; shuffled by a private ``torch.Generator``.

    Each pass over a shuffled loader draws the next permutation from the generator, so a loop
    of epochs is reproducible from ``seed`` and does not touch torch's global RNG.

    Args:
        ds: the data set (usually ``DataSplits.train`` / ``.test``).
        batch_size: samples per batch (> 0).
        shuffle: reshuffle every epoch.
        seed: seeds the shuffling generator.
        drop_last: drop a last incomplete batch.

    Raises:
        ValueError: ``batch_size`` is not a positive int.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=0,
    )
