"""Fused kernels per backend (numba on CPU, jax), each held bit-for-bit against the reference.

numba threading layer: lowbit asks numba for ``tbb`` first, then ``workqueue``, and never
OpenMP, unless ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` is set.

- ``tbb`` (the ``tbb`` wheel, a lowbit dependency on Linux x86-64) is fork-safe and
  thread-safe, and its workers do not spin beside torch's. It launches a parallel kernel fast
  enough that 1e6-element calls reach 0.8x ``np.copyto``.
- numba's ``omp`` layer shares GNU OpenMP with torch's CPU build. A process that forks after
  using it, such as a torch ``DataLoader`` worker, is killed on its first parallel call
  ("fork() called from a process already using GNU OpenMP"), and ``torch.set_num_threads``
  stops being the only setting of torch's pool.
- ``workqueue`` is the fallback when TBB cannot be loaded. It wakes its threads on every call
  (1e6-element calls run at about 0.5x copy) and refuses concurrent launches from several
  Python threads.

pip puts ``libtbb.so.12`` in ``<prefix>/lib``, which is not on the loader path outside conda,
so lowbit loads it by its installed path before numba looks for it by name.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys


def _preload_tbb() -> bool:
    """Load the tbb wheel's shared library globally; True when it is now loadable by name."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return False
    for f in files:
        if f.name == "libtbb.so.12":
            try:
                ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return False
            return True
    return False


_preload_tbb()  # also when the user names tbb, which numba would otherwise not find

if "NUMBA_THREADING_LAYER" not in os.environ and (
    "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ
):
    import numba

    # numba walks this list at its first parallel launch and takes the first layer that loads;
    # it insists on a permutation of all three, so OpenMP goes last, where it is never reached.
    numba.config.THREADING_LAYER = "default"
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]
