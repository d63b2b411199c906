"""A small character-level transformer language model (GPT-style, decoder only).

Token and learned position embeddings, pre-norm causal transformer blocks, a final LayerNorm
and a linear head over the vocabulary. The attention's two weightless matmuls are
``lowbit.nn.MatMul`` modules (``score``: q @ kᵀ, ``mix``: attn @ v), as in ``ViTTiny``, so
``quantize_`` can swap them. The model runs in whatever dtype its parameters have (fp32, or
bf16 after ``model.to(torch.bfloat16)``): nothing in it forces fp32, which is what a
bf16-only training scheme such as Collage needs.

It does not fit ``build_model``'s image-classifier signature (``in_channels``, ``num_classes``,
``image_size``), so it has its own builder, ``build_charlm``.
"""

from __future__ import annotations

import torch
from torch import nn

from lowbit.models._checks import positive_int
from lowbit.models.vit import Attention, Block


class CausalSelfAttention(Attention):
    """Multi-head self-attention in which position ``i`` attends to positions ``<= i`` only.

    The mask is applied to the scores before the softmax (``-inf`` above the diagonal), so the
    attention weights of future positions are exactly 0 in every dtype.
    """

    def __init__(self, dim: int, heads: int, context: int) -> None:
        super().__init__(dim, heads)
        mask = torch.ones(context, context, dtype=torch.bool).tril()
        self.register_buffer("mask", mask, persistent=False)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[-2]
        s = self.score(q, k.transpose(-2, -1)) * self.scale
        s = s.masked_fill(~self.mask[:n, :n], float("-inf"))
        return self.mix(s.softmax(dim=-1), v)


class CausalBlock(Block):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``, attention causal."""

    def __init__(self, dim: int, heads: int, context: int, mlp_dim: int) -> None:
        # LayerNorms draw no random numbers, so building the attention first keeps the
        # parameter initialisation of Block's order (attention, then MLP).
        super().__init__(dim, heads, mlp_dim, attn=CausalSelfAttention(dim, heads, context))


class CharTransformerLM(nn.Module):
    """Decoder-only transformer over characters: ``forward(idx) -> logits``.

    Args:
        vocab: number of distinct tokens (characters).
        dim: embedding width.
        depth: number of transformer blocks.
        heads: attention heads (must divide ``dim``).
        context: the longest sequence the model accepts (size of the position table).
        mlp_ratio: hidden width of the block MLP is ``mlp_ratio * dim``.

    Shapes: ``idx`` is a (B, T) integer tensor with ``T <= context`` and values in
    ``[0, vocab)``; the output is (B, T, vocab), in the parameters' dtype, where position ``t``
    depends on ``idx[:, :t + 1]`` only (next-token logits).

    Raises:
        ValueError: a non-positive size, ``dim`` not divisible by ``heads``.
    """

    def __init__(
        self,
        vocab: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        context: int = 64,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        for name, v in (
            ("vocab", vocab),
            ("dim", dim),
            ("depth", depth),
            ("heads", heads),
            ("context", context),
            ("mlp_ratio", mlp_ratio),
        ):
            positive_int(name, v)
        self.vocab = vocab
        self.context = context
        self.tok_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, context, dim))
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(
            *(CausalBlock(dim, heads, context, mlp_ratio * dim) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2:
            raise ValueError(f"idx must be a (batch, time) tensor, got shape {tuple(idx.shape)}")
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        t = idx.shape[1]
        if not 1 <= t <= self.context:
            raise ValueError(f"sequence length {t} is outside [1, context={self.context}]")
        x = self.tok_embed(idx) + self.pos_embed[:, :t]
        return self.head(self.norm(self.blocks(x)))


def build_charlm(vocab: int, **kw: int) -> CharTransformerLM:
    """Build a :class:`CharTransformerLM`; initial weights come from torch's global RNG.

    Args:
        vocab: number of distinct characters.
        **kw: ``dim``, ``depth``, ``heads``, ``context``, ``mlp_ratio``.

    Raises:
        ValueError: a bad size. TypeError: an option the model does not take.
    """
    return CharTransformerLM(vocab, **kw)


__all__ = ["CausalBlock", "CausalSelfAttention", "CharTransformerLM", "build_charlm"]
