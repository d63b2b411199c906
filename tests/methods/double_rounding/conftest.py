"""Fixtures of the Double Rounding tests: sklearn digits and a tiny ResNet-style CNN.

The tests define their own model and loaders (``lowbit.methods`` must not depend on
``lowbit.data`` / ``lowbit.models``), small enough that a training run takes a second or two.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from _dr_tiny import TinyNet  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """(train_loader, test_loader) of sklearn digits, 1×8×8, normalised; fixed shuffling."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    train = DataLoader(
        TensorDataset(x[tr], y[tr]),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    test = DataLoader(TensorDataset(x[te], y[te]), batch_size=512)
    return train, test


@pytest.fixture(scope="session")
def trained(digits):
    """A float TinyNet trained for a few epochs, then 3 epochs of Double Rounding training
    at widths (8, 6, 4, 2) with ALRS: ``(fp_result, dr_result)``."""
    import copy

    from lowbit.methods import double_rounding as dr

    train, test = digits
    torch.manual_seed(0)
    fp = dr.train_fp(TinyNet(), train, test, epochs=8, lr=5e-3, progress=False)
    res = dr.train(
        copy.deepcopy(fp.model), train, test, bits=(8, 6, 4, 2), epochs=3, lr=1e-3, progress=False
    )
    return fp, res
