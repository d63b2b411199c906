"""digits: the split is a stratified partition of sklearn's images, normalised exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from lowbit.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def codes_of(x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    """Invert the normalisation: pixel codes 0..16, checked to be (close to) integers."""
    c = (x.double().numpy() * std + mean) * 16
    r = np.rint(c)
    assert np.abs(c - r).max() < 1e-4
    assert r.min() >= 0 and r.max() <= 16
    return r.astype(np.int64)


def test_shapes(digits):
    xtr, ytr = digits.train.tensors
    xte, yte = digits.test.tensors
    assert xtr.shape == (1347, 1, 8, 8) and xte.shape == (450, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64 and yte.dtype == torch.int64
    assert (digits.name, digits.in_channels, digits.image_size, digits.num_classes) == (
        "digits", 1, 8, 10,
    )  # fmt: skip


def test_partition_of_sklearn_images_and_stratified(digits):
    d = load_digits()
    xtr, ytr = digits.train.tensors
    xte, yte = digits.test.tensors
    rows = [
        (tuple(c.ravel()), int(y))
        for x, ys in ((xtr, ytr), (xte, yte))
        for c, y in zip(codes_of(x, digits.mean, digits.std), ys.tolist(), strict=True)
    ]
    want = [
        (tuple(img.astype(np.int64).ravel()), int(t))
        for img, t in zip(d.images, d.target, strict=True)
    ]
    assert sorted(rows) == sorted(want)  # every image once, with its own label
    # stratified: each class's share of the test set is its share of the data, ±1 image
    full = np.bincount(d.target, minlength=10)
    test = np.bincount(yte.numpy(), minlength=10)
    assert np.all(np.abs(test - full * 450 / 1797) <= 1)


def test_normalisation_against_numpy(digits):
    xtr = digits.train.tensors[0]
    codes = codes_of(xtr, digits.mean, digits.std)
    p = codes / 16.0
    assert digits.mean == pytest.approx(p.mean(), rel=1e-12)
    assert digits.std == pytest.approx(p.std(), rel=1e-12)
    m32, s32 = np.float32(digits.mean), np.float32(digits.std)
    assert np.array_equal(xtr.numpy(), (codes.astype(np.float32) / np.float32(16) - m32) / s32)
    xd = xtr.double()
    assert abs(float(xd.mean())) < 1e-6 and abs(float(xd.std(unbiased=False)) - 1) < 1e-6
    # the test split uses the train statistics, not its own
    xte = digits.test.tensors[0]
    tc = codes_of(xte, digits.mean, digits.std)
    assert np.array_equal(xte.numpy(), (tc.astype(np.float32) / np.float32(16) - m32) / s32)


def test_seed_changes_split_deterministically(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(again.train.tensors[0], digits.train.tensors[0])
    assert torch.equal(again.test.tensors[1], digits.test.tensors[1])
    assert not torch.equal(other.train.tensors[1], digits.train.tensors[1])
