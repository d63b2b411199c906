"""CharTransformerLM: shapes, dtype, causality (exact), parameter count from the architecture's
formula, bad inputs, and a few Collage training steps in bf16."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lowbit.methods.collage import collage_plus, param_dtype
from lowbit.models import CharTransformerLM, build_charlm
from lowbit.nn.matmul import MatMul


def lm(dtype: torch.dtype = torch.float32, **kw: int) -> CharTransformerLM:
    torch.manual_seed(0)
    args = dict(dim=16, depth=2, heads=4, context=12) | kw
    return build_charlm(11, **args).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shapes_and_dtype(dtype):
    m = lm(dtype)
    idx = torch.randint(0, 11, (3, 12))
    with torch.no_grad():
        out = m(idx)
        short = m(idx[:, :5])
    assert out.shape == (3, 12, 11) and out.dtype == dtype and torch.isfinite(out).all()
    assert short.shape == (3, 5, 11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal(dtype):
    """Changing the token at position t leaves the logits before t bit-identical (the masked
    attention weights are exactly 0) and changes those from t on."""
    m = lm(dtype)
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = m(idx)
        for t in (0, 4, 11):
            idx2 = idx.clone()
            idx2[:, t] = (idx2[:, t] + 1) % 11
            out = m(idx2)
            assert torch.equal(out[:, :t], base[:, :t])
            assert not torch.equal(out[:, t], base[:, t])
        # the prefix alone gives the first positions' logits (other shapes may reorder the
        # matmuls' sums: equal up to torch's default tolerance of the dtype)
        torch.testing.assert_close(m(idx[:, :7]), base[:, :7])


def test_parameter_count_and_matmul_modules():
    vocab, d, depth, ctx, ratio = 11, 16, 3, 12, 2
    m = build_charlm(vocab, dim=d, depth=depth, heads=4, context=ctx, mlp_ratio=ratio)
    h = ratio * d
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    expected = vocab * d + ctx * d + depth * block + 2 * d + (d * vocab + vocab)
    assert sum(p.numel() for p in m.parameters()) == expected
    assert sum(isinstance(x, MatMul) for x in m.modules()) == 2 * depth


def test_bad_inputs():
    m = lm()
    with pytest.raises(ValueError, match="context=12"):
        m(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="batch, time"):
        m(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        build_charlm(11, dim=10, heads=4)
    with pytest.raises(ValueError, match="vocab"):
        build_charlm(0)


def test_a_few_collage_plus_steps_fit_a_repeating_string():
    """bf16 weights, bf16 compute, Collage-plus: the loss on a periodic string falls."""
    text = "abcabdabe" * 30
    ids = torch.tensor([ord(c) - ord("a") for c in text])
    m = build_charlm(5, dim=16, depth=1, heads=2, context=16).to(param_dtype("plus"))
    opt = collage_plus(m.parameters(), lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        starts = torch.randint(0, len(ids) - 17, (8,), generator=g)
        x = torch.stack([ids[s : s + 16] for s in starts])
        y = torch.stack([ids[s + 1 : s + 17] for s in starts])
        loss = F.cross_entropy(m(x).flatten(0, 1).float(), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
