"""Fashion-MNIST: directory lookup and error messages on hand-built IDX files; the installed
files (skipped when absent) against an independent gzip + numpy parse."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from lowbit.data import DataNotFoundError, load_dataset
from lowbit.data import fashion_mnist as fm

INSTALLED = "/usr/share/datasets/fashion-mnist"
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip


def write_idx(path, arr: np.ndarray, compress: bool = True) -> None:
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    buf = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(buf) if compress else buf)


def fake_dir(d, n_train=30, n_test=12, seed=0, compress=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    d.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        write_idx(d / (stem + (".gz" if compress else "")), a, compress)
    return arrays


def check_against_raw(s, arrays):
    xtr_raw, ytr_raw, xte_raw, yte_raw = (arrays[k] for k in STEMS)
    # the statistics: float64 numpy over pixel/255
    p = xtr_raw.astype(np.float64) / 255
    assert s.mean == pytest.approx(p.mean(), rel=1e-12)
    assert s.std == pytest.approx(p.std(), rel=1e-12)
    m32, s32 = np.float32(s.mean), np.float32(s.std)
    for x, raw in ((s.train.tensors[0], xtr_raw), (s.test.tensors[0], xte_raw)):
        want = (raw.astype(np.float32) / np.float32(255) - m32) / s32
        assert x.dtype == torch.float32 and x.shape == (len(raw), 1, 28, 28)
        assert np.array_equal(x.numpy()[:, 0], want)
    assert s.train.tensors[1].dtype == torch.int64
    assert np.array_equal(s.train.tensors[1].numpy(), ytr_raw)
    assert np.array_equal(s.test.tensors[1].numpy(), yte_raw)
    assert (s.name, s.in_channels, s.image_size, s.num_classes) == ("fashion-mnist", 1, 28, 10)


@pytest.mark.parametrize("compress", [True, False])
def test_fake_files_decoded_exactly(tmp_path, compress):
    arrays = fake_dir(tmp_path / "fm", compress=compress)
    check_against_raw(load_dataset("fashion-mnist", tmp_path / "fm"), arrays)


def test_env_var_and_parent_dir(tmp_path, monkeypatch):
    arrays = fake_dir(tmp_path / "root" / "fashion-mnist", seed=1)
    monkeypatch.setenv("LOWBIT_DATA_DIR", str(tmp_path / "root"))
    check_against_raw(load_dataset("fmnist"), arrays)
    # an explicit data_dir wins over the environment
    other = fake_dir(tmp_path / "other", seed=2)
    check_against_raw(load_dataset("fmnist", str(tmp_path / "other")), other)


def test_missing_dir_message(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWBIT_DATA_DIR", raising=False)
    where = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("fashion-mnist", where)
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    for needle in (
        str(where),
        "make data",
        "apt-get install dataset-fashion-mnist",
        "--data-dir",
        "LOWBIT_DATA_DIR",
        "train-images-idx3-ubyte.gz",
    ):
        assert needle in msg, needle


def test_partial_dir_names_missing_file(tmp_path):
    fake_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\.gz"):
        load_dataset("fashion-mnist", tmp_path)


def test_corrupt_and_inconsistent_files(tmp_path):
    fake_dir(tmp_path / "a")
    p = tmp_path / "a" / "train-images-idx3-ubyte.gz"
    p.write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("fashion-mnist", tmp_path / "a")
    arrays = fake_dir(tmp_path / "b")
    write_idx(tmp_path / "b" / "train-labels-idx1-ubyte.gz", arrays[STEMS[1]][:-1])
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        load_dataset("fashion-mnist", tmp_path / "b")
    write_idx(tmp_path / "b" / "train-labels-idx1-ubyte.gz", np.full(30, 10, np.uint8))
    with pytest.raises(ValueError, match=r"label 10 outside 0\.\.9"):
        load_dataset("fashion-mnist", tmp_path / "b")


def test_cache_rereads_replaced_files(tmp_path):
    d = tmp_path / "fm"
    fake_dir(d, seed=3)
    fm.load_raw(str(d))
    hits = fm._load_raw_cached.cache_info().hits
    fm.load_raw(str(d))
    assert fm._load_raw_cached.cache_info().hits == hits + 1
    new = fake_dir(d, n_train=31, seed=4)
    os.utime(d / (STEMS[0] + ".gz"), ns=(1, 1))  # a different mtime even on coarse clocks
    assert np.array_equal(fm.load_raw(str(d))["train_images"], new[STEMS[0]])


def raw_idx(path: str, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(INSTALLED, s + ".gz")) for s in STEMS),
    reason=f"Fashion-MNIST not installed in {INSTALLED} (make data)",
)
def test_installed_fashion_mnist(monkeypatch):
    monkeypatch.delenv("LOWBIT_DATA_DIR", raising=False)
    s = load_dataset("fashion-mnist")
    xtr, ytr = s.train.tensors
    xte, yte = s.test.tensors
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert (s.in_channels, s.image_size, s.num_classes) == (1, 28, 10)
    for y, stem in ((ytr, STEMS[1]), (yte, STEMS[3])):
        raw = raw_idx(os.path.join(INSTALLED, stem + ".gz"), 8)
        assert np.array_equal(torch.bincount(y, minlength=10).numpy(), np.bincount(raw))
        assert np.array_equal(y.numpy(), raw)
    pix = raw_idx(os.path.join(INSTALLED, STEMS[0] + ".gz"), 16)
    assert s.mean == pytest.approx(pix.mean(dtype=np.float64) / 255, rel=1e-12)
    first = (pix[:784].astype(np.float32) / np.float32(255) - np.float32(s.mean)) / np.float32(
        s.std
    )
    assert np.array_equal(xtr[0, 0].numpy().ravel(), first)
    assert abs(float(xtr.double().mean())) < 1e-6 and abs(float(xtr.double().std()) - 1) < 1e-6
