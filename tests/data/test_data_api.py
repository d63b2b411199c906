"""load_dataset names and subsets, the synthetic set, make_loader's determinism."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lowbit.data import DataSplits, list_datasets, load_dataset, make_loader


def test_unknown_name_lists_accepted():
    with pytest.raises(ValueError, match=r"'mnist'.*fashion-mnist, digits, synthetic.*fmnist"):
        load_dataset("mnist")
    assert list_datasets() == ["fashion-mnist", "digits", "synthetic"]


def test_synthetic_is_separable_and_seeded():
    s = load_dataset("synthetic", seed=5)
    assert isinstance(s, DataSplits)
    xtr, ytr = s.train.tensors
    xte, yte = s.test.tensors
    assert xtr.shape == (256, 1, 8, 8) and xte.shape == (128, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert torch.bincount(ytr).tolist() == [64] * 4
    xd = xtr.double()
    assert abs(float(xd.mean())) < 1e-6 and abs(float(xd.std(unbiased=False)) - 1) < 1e-5
    # nearest train-class centroid classifies the test set (almost) perfectly
    cent = torch.stack([xtr[ytr == c].mean(0) for c in range(s.num_classes)]).flatten(1)
    pred = torch.cdist(xte.flatten(1), cent).argmin(1)
    assert (pred == yte).float().mean() >= 0.98
    assert torch.equal(load_dataset("synthetic", seed=5).train.tensors[0], xtr)
    assert not torch.equal(load_dataset("synthetic", seed=6).train.tensors[0], xtr)


def test_subset():
    full = load_dataset("synthetic")
    sub = load_dataset("synthetic", subset=40, seed=0)
    assert len(sub.train) == 40 and torch.equal(sub.test.tensors[0], full.test.tensors[0])
    # every subset sample is a distinct sample of the full train set, with its label
    xs, ys = sub.train.tensors
    xf, yf = full.train.tensors
    same = (xs.flatten(1)[:, None, :] == xf.flatten(1)[None, :, :]).all(-1)  # (40, 256)
    assert torch.all(same.sum(1) == 1)  # each matches exactly one full-train sample
    idx = same.int().argmax(1)
    assert len(set(idx.tolist())) == 40
    assert torch.equal(yf[idx], ys)
    # first N of a permutation: a larger subset with the same seed starts with the smaller one
    sub60 = load_dataset("synthetic", subset=60, seed=0)
    assert torch.equal(sub60.train.tensors[0][:40], xs)
    assert not torch.equal(load_dataset("synthetic", subset=40, seed=1).train.tensors[0], xs)
    assert (sub.mean, sub.std) == (full.mean, full.std)


@pytest.mark.parametrize("bad", [0, -1, 257, 2.5, True])
def test_subset_out_of_range(bad):
    with pytest.raises(ValueError, match=r"subset=.*1\.\.256"):
        load_dataset("synthetic", subset=bad)


def _ds(n: int = 23) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))


def _order(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def test_loader_in_order_without_shuffle():
    loader = make_loader(_ds(), 5, shuffle=False)
    sizes = [len(y) for _, y in loader]
    assert sizes == [5, 5, 5, 5, 3] and _order(loader) == list(range(23))


def test_loader_shuffle_is_seeded_and_leaves_global_rng():
    state = torch.get_rng_state()
    a = make_loader(_ds(), 4, shuffle=True, seed=3)
    b = make_loader(_ds(), 4, shuffle=True, seed=3)
    a1, a2 = _order(a), _order(a)  # two epochs
    assert a1 == _order(b) and a2 == _order(b)
    assert sorted(a1) == list(range(23)) and a1 != list(range(23)) and a1 != a2
    assert _order(make_loader(_ds(), 4, shuffle=True, seed=4)) != a1
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("bad", [0, -3, 2.0, None])
def test_loader_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_ds(), bad, shuffle=False)
