"""Zero-copy numpy views of CPU tensors and back, for running the numpy kernels on torch data.

bfloat16 has no numpy dtype of its own in torch's eyes, so it crosses through its int16 bits
and ml_dtypes' ``bfloat16`` view; every other float dtype maps directly. Importing this module
imports torch: only the torch dispatch path does.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import torch


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """The numpy array over ``t``'s memory (strides kept; no copy)."""
    t = t.detach().resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def as_torch(a: np.ndarray) -> Any:
    """The tensor over ``a``'s memory (no copy)."""
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)
