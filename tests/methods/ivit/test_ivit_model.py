"""I-ViT networks: the integer path equals the fake-quant graph exactly, with integers only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowbit.methods import ivit
from lowbit.methods.ivit import IViTConfig
from lowbit.models.minilm import BertConfig, MiniLM
from lowbit.models.vit import ViTTiny

MEAN, STD = 0.29, 0.35


def _vit_data(n: int = 24, seed: int = 0) -> tuple[ViTTiny, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    vit = ViTTiny(1, 10, 8, dim=16, depth=2, heads=2, mlp_ratio=2).eval()
    imgs = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    # the data set's normalisation, as lowbit.data builds it (float32)
    xf = (imgs.float() / 255 - MEAN) / STD
    return vit, imgs, xf


def _check_integer_trace(trace: dict) -> None:
    assert trace, "the integer path recorded nothing"
    for name, rec in trace.items():
        assert rec["dtype"] in ("int8", "int16", "int32", "int64"), (name, rec)


@pytest.mark.parametrize(
    "cfg",
    [IViTConfig(), IViTConfig(softmax_bits=8, gelu_symmetric=True, gelu_n=15, sqrt_iters=None)],
)
def test_vit_integer_path_equals_fake_quant_exactly(cfg: IViTConfig) -> None:
    vit, imgs, xf = _vit_data()
    net = ivit.convert(
        vit, [(xf[:12], None), (xf[12:], None)], config=cfg, input_mean=MEAN, input_std=STD
    )
    with torch.no_grad():
        fake_logits = net(xf)
    trace: dict = {}
    codes = net.run_int(imgs.numpy(), trace=trace)
    assert codes.dtype == torch.int64
    assert torch.equal(fake_logits, codes.to(torch.float64) * net.output_scale)
    _check_integer_trace(trace)
    assert trace["patches"]["dtype"] == "int8"
    assert torch.equal(net.predict_int(imgs, batch_size=5), codes.argmax(dim=1))
    # the integer model tracks the float model it came from
    with torch.no_grad():
        ref = vit(xf)
    assert torch.corrcoef(torch.stack([ref.flatten().double(), fake_logits.flatten()]))[0, 1] > 0.9


def test_vit_qat_steps_keep_the_paths_equal() -> None:
    vit, imgs, xf = _vit_data(32, seed=1)
    y = torch.randint(0, 10, (32,))
    net = ivit.convert(vit, [(xf, y)], input_mean=MEAN, input_std=STD)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(net(xf), y)
        opt.zero_grad()
        loss.backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
    net.eval()
    assert not torch.equal(before["blocks.0.fc1.weight"], net.state_dict()["blocks.0.fc1.weight"])
    assert not torch.equal(before["add_pos.max_val"], net.state_dict()["add_pos.max_val"])
    with torch.no_grad():
        fake_logits = net(xf)
    assert torch.equal(fake_logits, net.run_int(imgs).double() * net.output_scale)


def test_patch_embedding_trains_at_the_float_models_scale() -> None:
    # the normalisation is folded into the patch embedding in every forward, so its
    # parameters (and their gradients) stay those of the float conv: an optimizer step of
    # the same size moves both models alike
    vit, _, xf = _vit_data(32, seed=4)
    y = torch.randint(0, 10, (32,))
    net = ivit.convert(vit, [xf], input_mean=MEAN, input_std=STD)
    assert torch.equal(net.patch.weight, vit.patch_embed.weight.detach().reshape(16, -1))
    torch.nn.functional.cross_entropy(net(xf), y).backward()
    torch.nn.functional.cross_entropy(vit(xf), y).backward()
    g_q = net.patch.weight.grad.flatten().double()
    g_f = vit.patch_embed.weight.grad.flatten().double()
    assert torch.nn.functional.cosine_similarity(g_q, g_f, dim=0) > 0.9
    assert 0.5 < float(g_q.norm() / g_f.norm()) < 2.0


def test_vit_rejects_float_images_in_run_int_and_bad_models() -> None:
    vit, imgs, xf = _vit_data(4)
    net = ivit.convert(vit, [xf], input_mean=MEAN, input_std=STD)
    with pytest.raises(TypeError):
        net.run_int(xf)
    with pytest.raises(ValueError):
        net.run_int(imgs[:, :, :4, :4])
    with pytest.raises(ValueError):
        ivit.convert(torch.nn.Linear(3, 3), [xf])
    with pytest.raises(ValueError):
        ivit.convert(vit, [])


def _tiny_bert() -> tuple[MiniLM, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    bert = MiniLM(cfg).eval()
    ids = torch.randint(1, 60, (5, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[4, 3:] = 0
    ids[mask == 0] = 0
    return bert, ids, mask


@pytest.mark.parametrize("symmetric", [False, True])
def test_bert_integer_path_equals_fake_quant_exactly(symmetric: bool) -> None:
    bert, ids, mask = _tiny_bert()
    cfg = IViTConfig(gelu_symmetric=symmetric, gelu_n=15 if symmetric else 23)
    net = ivit.convert(bert, [(ids, mask)], config=cfg)
    assert isinstance(net, ivit.IBert)
    with torch.no_grad():
        hidden = net(ids, mask)
    trace: dict = {}
    codes = net.run_int(ids, mask, trace=trace)
    assert torch.equal(hidden, codes.double() * net.output_scale)
    _check_integer_trace(trace)
    # padding is masked exactly: a sentence alone equals it inside a padded batch
    alone = net.run_int(ids[4:5, :3], mask[4:5, :3])
    assert torch.equal(alone[0], codes[4, :3])
    # pooled integer sums, normalised, approximate the float sentence embeddings
    pooled = net.pool_int(codes, mask).double()
    emb = pooled / pooled.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        ref = bert(ids, mask).double()
    assert (emb * ref).sum(-1).min() > 0.8


def test_config_round_trip_and_validation() -> None:
    cfg = IViTConfig(softmax_bits=8, sqrt_iters=None, gelu_symmetric=True)
    assert IViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({"act_bits": 9}, {"sqrt_iters": 0}, {"momentum": 1.0}, {"gelu_symmetric": 1}):
        with pytest.raises((TypeError, ValueError)):
            IViTConfig(**bad)
    with pytest.raises(ValueError):
        IViTConfig.from_dict({"bits": 8})
    assert ivit.ivit_recipe() == IViTConfig()
    sym = ivit.ivit_recipe("symmetric-gelu", softmax_bits=8)
    assert (sym.gelu_symmetric, sym.gelu_n, sym.softmax_bits) == (True, 15, 8)
    with pytest.raises(ValueError):
        ivit.ivit_recipe("fp8")


def test_loading_a_state_dict_re_records_integer_constants() -> None:
    vit, imgs, xf = _vit_data(8, seed=3)
    a = ivit.convert(vit, [xf], input_mean=MEAN, input_std=STD)
    b = ivit.convert(vit, [xf[:2]], input_mean=MEAN, input_std=STD)
    b.run_int(imgs)  # records b's own constants
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.run_int(imgs), a.run_int(imgs))


def test_calibration_sets_ema_ranges() -> None:
    vit, _, xf = _vit_data(16)
    net = ivit.IViT(vit, input_mean=MEAN, input_std=STD)
    with pytest.raises(RuntimeError):
        _ = net.add_pos.scale
    assert ivit.calibrate(net, [xf[:8], xf[8:]]) == 2
    act = net.add_pos
    assert bool(act.initialized)
    # EMA: first batch sets the range, the second moves it by 5 %
    net2 = ivit.IViT(vit, input_mean=MEAN, input_std=STD)
    ivit.calibrate(net2, [xf[:8]])
    lo1, hi1 = float(net2.add_pos.min_val), float(net2.add_pos.max_val)
    net3 = ivit.IViT(vit, input_mean=MEAN, input_std=STD)
    ivit.calibrate(net3, [xf[8:]])
    lo2, hi2 = float(net3.add_pos.min_val), float(net3.add_pos.max_val)
    assert np.isclose(float(act.max_val), 0.95 * hi1 + 0.05 * hi2)
    assert np.isclose(float(act.min_val), 0.95 * lo1 + 0.05 * lo2)
