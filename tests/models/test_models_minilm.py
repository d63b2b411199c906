"""MiniLM's BERT encoder against torch's own TransformerEncoderLayer (an independent oracle)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit.data.errors import DataNotFoundError
from lowbit.models.minilm import BertConfig, MiniLM, load_minilm
from lowbit.nn import MatMul

CFG = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=24,
    max_position_embeddings=12,
)


def _model(seed: int = 0) -> MiniLM:
    torch.manual_seed(seed)
    m = MiniLM(CFG).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def _torch_layer(layer: nn.Module) -> nn.TransformerEncoderLayer:
    """The same weights in torch's post-norm encoder layer with exact GELU."""
    t = (
        nn.TransformerEncoderLayer(
            CFG.hidden_size,
            CFG.num_attention_heads,
            CFG.intermediate_size,
            dropout=0.0,
            activation="gelu",
            layer_norm_eps=CFG.layer_norm_eps,
            batch_first=True,
            norm_first=False,
        )
        .double()
        .eval()
    )
    a = layer.attention
    with torch.no_grad():
        t.self_attn.in_proj_weight.copy_(
            torch.cat([a.self.query.weight, a.self.key.weight, a.self.value.weight])
        )
        t.self_attn.in_proj_bias.copy_(
            torch.cat([a.self.query.bias, a.self.key.bias, a.self.value.bias])
        )
        t.self_attn.out_proj.weight.copy_(a.output.dense.weight)
        t.self_attn.out_proj.bias.copy_(a.output.dense.bias)
        t.norm1.load_state_dict(a.output.LayerNorm.state_dict())
        t.linear1.load_state_dict(layer.intermediate.dense.state_dict())
        t.linear2.load_state_dict(layer.output.dense.state_dict())
        t.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
    return t


def test_encoder_matches_torch_transformer_layers() -> None:
    m = _model()
    ids = torch.randint(0, CFG.vocab_size, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ours = m.hidden_states(ids, mask)
    x = m.embeddings(ids)
    for layer in m.encoder.layer:
        x = _torch_layer(layer)(x, src_key_padding_mask=mask == 0)
    real = mask.bool()
    torch.testing.assert_close(ours[real], x[real], rtol=1e-10, atol=1e-10)


def test_padding_does_not_change_a_sentence_embedding() -> None:
    m = _model(1)
    ids = torch.randint(1, CFG.vocab_size, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    batched = m(ids, mask)
    alone = m(ids[1:, :5])
    torch.testing.assert_close(batched[1:], alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(2, dtype=torch.float64))


def test_attention_matmuls_are_lowbit_matmul_modules() -> None:
    names = [n for n, mod in _model().named_modules() if isinstance(mod, MatMul)]
    assert names == [
        f"encoder.layer.{i}.attention.self.{w}" for i in range(2) for w in ("qk", "av")
    ]


def test_bad_inputs_raise() -> None:
    m = _model()
    with pytest.raises(ValueError, match="input_ids"):
        m.hidden_states(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="tokenizer"):
        m.encode(["a"])
    with pytest.raises(ValueError, match="num_attention_heads"):
        BertConfig(hidden_size=10, num_attention_heads=4)


def test_pretrained_weights_load_when_installed() -> None:
    try:
        m = load_minilm()
    except DataNotFoundError:
        pytest.skip("MiniLM-L6 not installed (make data)")
    e = m.encode(["a cat sat on the mat", "a cat sat on a mat", "stock markets fell"])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2]
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
