"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files: 60000 train, 10000 test, 28×28."""

from __future__ import annotations

import functools
import os

import numpy as np

from lowbit.data.errors import DataNotFoundError
from lowbit.data.idx import read_idx
from lowbit.data.splits import DataSplits, normalised_splits

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "LOWBIT_DATA_DIR"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
INSTALL_HINT = (
    "Install Fashion-MNIST with `make data` (runs `apt-get install dataset-fashion-mnist`, which "
    f"puts the files in {DEFAULT_DIR}), or download the four files "
    f"{', '.join(f + '.gz' for f in FILES.values())} and pass `--data-dir DIR` "
    f"(Python: data_dir=DIR, or set {ENV_VAR}=DIR)."
)


def _file_in(directory: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def resolve_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
    """The directory holding the four IDX files.

    Looks in ``data_dir`` if given, else ``$LOWBIT_DATA_DIR``, else ``/usr/share/datasets/
    fashion-mnist``; in each, the files may sit in the directory itself or in a
    ``fashion-mnist`` subdirectory (so ``LOWBIT_DATA_DIR`` can be a root of several data sets).

    Raises:
        DataNotFoundError: no complete set of files there (the message lists what is missing
            and how to install).
    """
    if data_dir is not None:
        base, origin = os.fspath(data_dir), "data_dir"
    elif os.environ.get(ENV_VAR):
        base, origin = os.environ[ENV_VAR], f"${ENV_VAR}"
    else:
        base, origin = DEFAULT_DIR, "the default directory"
    candidates = [base, os.path.join(base, "fashion-mnist")]
    for d in candidates:
        if all(_file_in(d, stem) for stem in FILES.values()):
            return os.path.abspath(d)
    if os.path.isdir(base):
        missing = [s + ".gz" for s in FILES.values() if _file_in(base, s) is None]
        what = f"{base} ({origin}) lacks {', '.join(missing)}"
    else:
        what = f"{base} ({origin}) does not exist"
    raise DataNotFoundError(f"Fashion-MNIST not found: {what}. {INSTALL_HINT}")


def load_raw(directory: str) -> dict[str, np.ndarray]:
    """The four decoded arrays (read-only uint8), cached in memory.

    The cache key is the directory plus each file's size and modification time, so a file
    replaced on disk is read again.

    Returns:
        ``{"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": ...,
        "test_labels": ...}``.

    Raises:
        DataNotFoundError: a file is missing.
        ValueError: a file is corrupt or the files disagree with each other.
    """
    signature = []
    for stem in FILES.values():
        path = _file_in(directory, stem)
        if path is None:
            raise DataNotFoundError(
                f"Fashion-MNIST: {stem}.gz missing in {directory}. " + INSTALL_HINT
            )
        st = os.stat(path)
        signature.append((path, st.st_size, st.st_mtime_ns))
    return dict(_load_raw_cached(os.path.abspath(directory), tuple(signature)))


@functools.lru_cache(maxsize=4)
def _load_raw_cached(
    directory: str, signature: tuple[tuple[str, int, int], ...]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, (path, _, _) in zip(FILES, signature, strict=True):
        arr = read_idx(path)
        want_ndim = 3 if key.endswith("images") else 1
        if arr.dtype != np.uint8 or arr.ndim != want_ndim:
            raise ValueError(
                f"{path}: expected uint8 with {want_ndim} dims, got {arr.dtype} {arr.shape}"
            )
        out[key] = arr
    for split in ("train", "test"):
        imgs, labels = out[f"{split}_images"], out[f"{split}_labels"]
        if imgs.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Fashion-MNIST {split}: {imgs.shape[0]} images but {labels.shape[0]} labels"
            )
        if labels.size and int(labels.max()) >= len(CLASSES):
            raise ValueError(
                f"Fashion-MNIST {split}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}"
            )
    if out["train_images"].shape[1:] != out["test_images"].shape[1:]:
        raise ValueError(
            f"Fashion-MNIST: train images {out['train_images'].shape[1:]} and test images "
            f"{out['test_images'].shape[1:]} differ in size"
        )
    return out


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> DataSplits:
    """Fashion-MNIST as ``DataSplits``: pixels/255, normalised by the train mean and std."""
    raw = load_raw(resolve_dir(data_dir))
    return normalised_splits(
        "fashion-mnist",
        raw["train_images"][:, None, :, :],
        raw["train_labels"],
        raw["test_images"][:, None, :, :],
        raw["test_labels"],
        num_classes=len(CLASSES),
        levels=255,
    )
