"""``load_dataset``: one entry point for every data set, by name."""

from __future__ import annotations

import os

from lowbit.data.digits import load_digits_splits
from lowbit.data.fashion_mnist import load_fashion_mnist
from lowbit.data.splits import DataSplits, take_subset
from lowbit.data.synthetic import load_synthetic

DATASETS = ("fashion-mnist", "digits", "synthetic")
ALIASES = {"fmnist": "fashion-mnist"}


def list_datasets() -> list[str]:
    """Canonical data-set names accepted by ``load_dataset`` (aliases: ``fmnist``)."""
    return list(DATASETS)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load a data set as normalised NCHW float32 images and int64 labels.

    Args:
        name: "fashion-mnist" (alias "fmnist"), "digits" or "synthetic".
        data_dir: where Fashion-MNIST's IDX files are (else ``$LOWBIT_DATA_DIR``, else
            ``/usr/share/datasets/fashion-mnist``); ignored by the other data sets.
        subset: keep only the first ``subset`` samples of a ``seed``-ed permutation of the
            train split (the test split and the normalisation stay those of the full set).
        seed: seeds the subset permutation, the digits train/test split and the synthetic data.

    Raises:
        ValueError: unknown name or bad subset.
        DataNotFoundError: Fashion-MNIST is not installed (the message says how to install).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = ALIASES.get(name, name)
    if key == "fashion-mnist":
        splits = load_fashion_mnist(data_dir)
    elif key == "digits":
        splits = load_digits_splits(seed)
    elif key == "synthetic":
        splits = load_synthetic(seed)
    else:
        raise ValueError(
            f"unknown data set {name!r}; accepted: {', '.join(DATASETS)} "
            f"(aliases: {', '.join(ALIASES)})"
        )
    if subset is not None:
        from dataclasses import replace

        splits = replace(splits, train=take_subset(splits.train, subset, seed))
    return splits
