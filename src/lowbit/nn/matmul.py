"""``MatMul``: ``torch.matmul`` as a module, so that ``quantize_`` can find and swap it.

Models write the matmuls that have no weight (attention scores ``q @ k^T``, ``attn @ v``) as
``MatMul`` submodules; in a float model it is exactly ``torch.matmul``.
"""

from __future__ import annotations

import torch
from torch import nn


class MatMul(nn.Module):
    """``forward(a, b) = torch.matmul(a, b)``; replaced by a quantized matmul by ``quantize_``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)
