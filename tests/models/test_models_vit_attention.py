"""vit-tiny's attention against torch's own attention implementations (float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.models import build_model
from lowbit.nn.matmul import MatMul


def vit(dtype=torch.float64):
    torch.manual_seed(0)
    m = build_model("vit-tiny", in_channels=1, num_classes=10, image_size=8)
    return m.to(dtype).eval()


def test_attend_equals_sdpa():
    attn = vit().blocks[0].attn
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 16, 16, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    got = attn.attend(q, k, v)
    want = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_attention_module_equals_multihead_attention():
    attn = vit().blocks[1].attn
    mha = nn.MultiheadAttention(64, 4, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    mha.eval()
    x = torch.randn(3, 16, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want, _ = mha(x, x, x, need_weights=False)
    torch.testing.assert_close(attn(x), want, rtol=1e-12, atol=1e-12)


def test_block_and_model_are_pre_norm_transformer():
    m = vit()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    # the whole forward written out with functional torch ops from the same weights
    h = F.conv2d(x, m.patch_embed.weight, m.patch_embed.bias, stride=2)
    h = h.flatten(2).transpose(1, 2) + m.pos_embed
    mha = nn.MultiheadAttention(64, 4, batch_first=True, dtype=torch.float64).eval()
    for blk in m.blocks:
        with torch.no_grad():
            mha.in_proj_weight.copy_(blk.attn.qkv.weight)
            mha.in_proj_bias.copy_(blk.attn.qkv.bias)
            mha.out_proj.weight.copy_(blk.attn.proj.weight)
            mha.out_proj.bias.copy_(blk.attn.proj.bias)
        a = F.layer_norm(h, (64,), blk.norm1.weight, blk.norm1.bias)
        h = h + mha(a, a, a, need_weights=False)[0]
        b = F.layer_norm(h, (64,), blk.norm2.weight, blk.norm2.bias)
        fc1, fc2 = blk.mlp[0], blk.mlp[2]
        h = h + F.linear(F.gelu(F.linear(b, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    h = F.layer_norm(h, (64,), m.norm.weight, m.norm.bias).mean(1)
    want = F.linear(h, m.head.weight, m.head.bias)
    torch.testing.assert_close(m(x), want, rtol=1e-12, atol=1e-12)


def test_score_and_mix_are_matmul_modules_that_run():
    m = vit(torch.float32)
    calls = []
    for name, mod in m.named_modules():
        if name.endswith(("attn.score", "attn.mix")):
            assert type(mod) is MatMul
            mod.register_forward_hook(lambda mod, inp, out, name=name: calls.append(name))
    m(torch.randn(1, 1, 8, 8))
    assert calls == ["blocks.0.attn.score", "blocks.0.attn.mix",
                     "blocks.1.attn.score", "blocks.1.attn.mix"]  # fmt: skip
    # a swapped-in module changes the result: the forward really goes through them
    before = m(torch.ones(1, 1, 8, 8))

    class Zero(nn.Module):
        def forward(self, a, b):
            return torch.zeros_like(torch.matmul(a, b))

    m.blocks[0].attn.mix = Zero()
    assert not torch.equal(m(torch.ones(1, 1, 8, 8)), before)
