"""One epoch on digits: the CNNs learn (test accuracy well above chance, > 80 %)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowbit.data import load_dataset, make_loader
from lowbit.models import build_model


@pytest.mark.parametrize("name", ["cnn-small", "resnet-small"])
def test_one_epoch_on_digits(name):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        d = load_dataset("digits", seed=0)
        m = build_model(
            name, in_channels=d.in_channels, num_classes=d.num_classes, image_size=d.image_size
        )
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        m.train()
        for x, y in make_loader(d.train, 16, shuffle=True, seed=0):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            x, y = d.test.tensors
            acc = (m(x).argmax(1) == y).double().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert acc > 0.80, f"{name}: test accuracy {acc:.3f} after one epoch"
