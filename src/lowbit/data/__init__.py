"""Real data sets (layer 7): Fashion-MNIST (IDX), sklearn digits, a tiny synthetic set,
and the text corpora Moby Dick and SpamAssassin.

``load_dataset(name, data_dir=None, *, subset=None, seed=0) -> DataSplits`` and
``make_loader(ds, batch_size, *, shuffle, seed=0)``.
"""

from lowbit.data.errors import DataNotFoundError
from lowbit.data.idx import parse_idx, read_idx
from lowbit.data.loader import make_loader
from lowbit.data.registry import list_datasets, load_dataset
from lowbit.data.splits import DataSplits
from lowbit.data.text import data_home, load_moby_dick, load_spam_assassin

__all__ = [
    "DataNotFoundError",
    "DataSplits",
    "data_home",
    "list_datasets",
    "load_dataset",
    "load_moby_dick",
    "load_spam_assassin",
    "make_loader",
    "parse_idx",
    "read_idx",
]
