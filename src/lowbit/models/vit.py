"""A tiny Vision Transformer (Dosovitskiy et al. 2021): patch embedding, pre-norm transformer
blocks, mean pooling, linear head. The attention's two weightless matmuls are
``lowbit.nn.MatMul`` modules (``score``: q @ kᵀ, ``mix``: attn @ v) so ``quantize_`` can swap
them."""

from __future__ import annotations

import torch
from torch import nn

from lowbit.models._checks import positive_int
from lowbit.nn.matmul import MatMul


class Attention(nn.Module):
    """Multi-head self-attention: ``qkv`` Linear, ``score`` and ``mix`` MatMuls, ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.score = MatMul()
        self.mix = MatMul()
        self.proj = nn.Linear(dim, dim)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``softmax(q kᵀ · scale) v`` for (B, heads, N, head_dim) tensors."""
        s = self.score(q, k.transpose(-2, -1)) * self.scale
        return self.mix(s.softmax(dim=-1), v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = self.attend(qkv[0], qkv[1], qkv[2])  # (B, heads, N, head_dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, *, attn: Attention | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn if attn is not None else Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTTiny(nn.Module):
    """``patch_embed`` (a strided Conv2d), learned ``pos_embed``, ``blocks``, final ``norm``,
    mean pooling over patches, ``head``.

    Args:
        in_channels: image channels.
        num_classes: output logits.
        image_size: input height = width; must be a multiple of ``patch_size``.
        patch_size: patch side; default 2 for images up to 16 pixels (8×8 → 16 patches), else
            4 (28×28 → 49 patches).
        dim: embedding width.
        depth: number of transformer blocks.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: hidden width of the block MLP is ``mlp_ratio * dim``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        patch_size: int | None = None,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("num_classes", num_classes)
        positive_int("image_size", image_size)
        if patch_size is None:
            patch_size = 2 if image_size <= 16 else 4
        positive_int("patch_size", patch_size)
        for name, v in (("dim", dim), ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio)):
            positive_int(name, v)
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of patch_size={patch_size}"
            )
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio * dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, dim)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))
