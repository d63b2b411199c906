"""Fused kernels per backend (numba on CPU, jax), each held bit-for-bit against the reference.

numba threading layer: lowbit picks ``workqueue`` unless ``NUMBA_THREADING_LAYER`` is set.
numba's default OpenMP layer keeps its worker threads spinning after a parallel kernel returns,
and on a small machine they starve torch's own threads: a torch training step measured 4-8x
slower after the first ``lb.round`` call. The workqueue layer does not spin, but it does not
allow parallel kernels to be launched from several Python threads at once; if you call lowbit
from threads, set ``NUMBA_THREADING_LAYER=omp`` (or ``tbb``) before importing it.
"""

from __future__ import annotations

import os

if "NUMBA_THREADING_LAYER" not in os.environ:
    import numba

    numba.config.THREADING_LAYER = "workqueue"
