"""lowbit.nn.checkpoint: safetensors round trips, bit for bit, with metadata and no pickle."""

from __future__ import annotations

import itertools
import json
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowbit
import lowbit.nn
from lowbit.models import build_model
from lowbit.nn import checkpoint as ck

DTYPE_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.int64: torch.int64,
              torch.float16: torch.int16, torch.bfloat16: torch.int16,
              torch.uint8: torch.uint8, torch.bool: torch.uint8}  # fmt: skip


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns (NaN payloads and -0.0 included)."""
    return t.contiguous().view(DTYPE_BITS[t.dtype])


def assert_state_bit_exact(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert torch.equal(bits(sa[k]), bits(sb[k])), k


def trained(name: str, seed: int = 0) -> nn.Module:
    """A few SGD steps in train mode, so BN running stats and num_batches_tracked move."""
    torch.manual_seed(seed)
    m = build_model(name, in_channels=1, num_classes=10, image_size=8)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        x = torch.randn(8, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


@pytest.mark.parametrize("name", ["resnet-small", "vit-tiny", "cnn-small", "mlp"])
def test_round_trip_outputs_and_state_bit_exact(tmp_path, name):
    m = trained(name, seed=0)
    path = tmp_path / "m.safetensors"
    ck.save(m, path)
    fresh = build_model(name, in_channels=1, num_classes=10, image_size=8).eval()
    torch.manual_seed(123)
    x = torch.randn(5, 1, 8, 8)
    assert not torch.equal(fresh(x), m(x))
    ck.load(fresh, path)
    assert_state_bit_exact(m, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))
    if name == "resnet-small":
        assert int(fresh.stem[1].num_batches_tracked) == 3


def test_special_values_nan_payload_negative_zero(tmp_path):
    m = build_model("resnet-small", in_channels=1, num_classes=10, image_size=8)
    bn = m.stem[1]
    payload = torch.tensor([0x7FC00001, 0xFFA00000 - 2**32, 0x7F800001], dtype=torch.int32)
    with torch.no_grad():
        bn.running_mean[:3] = payload.view(torch.float32)  # quiet/negative/signalling NaNs
        bn.running_mean[3] = -0.0
        bn.running_var[0] = float("inf")
        bn.num_batches_tracked.fill_(2**40 + 1)  # int64 bits, not a float detour
        m.fc.weight[0, 0] = -0.0
        m.fc.weight[0, 1] = 2.0**-149  # smallest subnormal
    path = tmp_path / "s.safetensors"
    ck.save(m, path)
    fresh = build_model("resnet-small", in_channels=1, num_classes=10, image_size=8)
    ck.load(fresh, path)
    assert_state_bit_exact(m, fresh)
    fbn = fresh.stem[1]
    assert torch.equal(fbn.running_mean[:3].view(torch.int32), payload)
    assert fbn.running_mean[3].view(torch.int32).item() == -(2**31)  # the sign bit alone
    assert fbn.num_batches_tracked.item() == 2**40 + 1


def test_non_contiguous_and_tied_tensors(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3, bias=False)
            self.b = nn.Linear(4, 3, bias=False)
            self.b.weight = self.a.weight  # tied: one tensor under two names
            self.c = nn.Linear(3, 5)

    m = Tied()
    with torch.no_grad():
        m.c.weight.data = torch.randn(3, 5).t()  # a non-contiguous (5, 3) view
    assert not m.c.weight.is_contiguous()
    path = tmp_path / "t.safetensors"
    ck.save(m, path)
    fresh = Tied()
    ck.load(fresh, path)
    assert_state_bit_exact(m, fresh)
    assert fresh.a.weight is fresh.b.weight  # still tied after loading


def test_metadata_round_trip_and_checks(tmp_path):
    m = nn.Linear(2, 2)
    path = tmp_path / "m.safetensors"
    user = {"epoch": "7", "note": "ünïcode ✓", "json": json.dumps({"lr": 0.1})}
    ck.save(m, path, metadata=user)
    meta = ck.load(nn.Linear(2, 2), path)
    assert meta == {**user, "format": "lowbit-checkpoint-v1", "lowbit_version": lowbit.__version__}
    assert ck.read_metadata(path) == meta
    with pytest.raises(TypeError, match="'epoch': 7"):
        ck.save(m, path, metadata={"epoch": 7})
    with pytest.raises(TypeError, match="str to str"):
        ck.save(m, path, metadata={1: "x"})
    with pytest.raises(TypeError, match="dict"):
        ck.save(m, path, metadata=[("a", "b")])
    with pytest.raises(ValueError, match="'format' is reserved"):
        ck.save(m, path, metadata={"format": "mine"})
    assert ck.read_metadata(path) == meta  # failed saves left the file alone


def test_file_is_safetensors_json_header_and_raw_bytes(tmp_path):
    m = trained("resnet-small")
    path = tmp_path / "m.safetensors"
    ck.save(m, path, metadata={"k": "v"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))  # JSON, not a pickle stream
    assert header.pop("__metadata__")["k"] == "v"
    state = m.state_dict()
    assert set(header) == set(state)
    spans = sorted(tuple(h["data_offsets"]) for h in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - n  # data fills the rest exactly
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    names = {torch.float32: "F32", torch.int64: "I64"}
    for k, h in header.items():
        t = state[k]
        assert h["dtype"] == names[t.dtype] and h["shape"] == list(t.shape)
        lo, hi = h["data_offsets"]
        assert raw[8 + n + lo : 8 + n + hi] == t.contiguous().numpy().tobytes()  # little-endian


def test_wrong_architecture_raises(tmp_path):
    path = tmp_path / "r.safetensors"
    ck.save(build_model("resnet-small", in_channels=1, num_classes=10, image_size=8), path)
    with pytest.raises(ValueError, match=r"missing .*unexpected"):
        ck.load(build_model("cnn-small", in_channels=1, num_classes=10, image_size=8), path)
    narrow = build_model(
        "resnet-small", in_channels=1, num_classes=10, image_size=8, widths=(8, 32, 64)
    )
    with pytest.raises(
        ValueError,
        match=r"'stem.0.weight' is torch.float32 \(16, 1, 3, 3\) in "
        r"the file but torch.float32 \(8, 1, 3, 3\)",
    ):
        ck.load(narrow, path, strict=False)  # shapes are checked even when not strict
    wide = build_model("resnet-small", in_channels=1, num_classes=10, image_size=8).double()
    with pytest.raises(ValueError, match=r"'stem\.0\.weight' is torch\.float32 .* torch\.float64"):
        ck.load(wide, path)
    deeper = build_model(
        "resnet-small", in_channels=1, num_classes=10, image_size=8, blocks_per_stage=(1, 1, 2)
    )
    before = {k: v.clone() for k, v in deeper.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing \['stages.2.1.conv1.weight'"):
        ck.load(deeper, path)
    assert all(torch.equal(before[k], v) for k, v in deeper.state_dict().items())  # untouched
    ck.load(deeper, path, strict=False)  # the common tensors load; the extra block keeps its own
    assert torch.equal(deeper.stages[2][1].conv1.weight, before["stages.2.1.conv1.weight"])
    assert not torch.equal(deeper.stem[0].weight, before["stem.0.weight"])


def test_missing_file_and_foreign_format(tmp_path):
    with pytest.raises(FileNotFoundError):
        ck.load(nn.Linear(2, 2), tmp_path / "none.safetensors")
    from safetensors.torch import save_file

    save_file(nn.Linear(2, 2).state_dict(), tmp_path / "x.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="'pt' is not 'lowbit-checkpoint-v1'"):
        ck.load(nn.Linear(2, 2), tmp_path / "x.safetensors")


class FakeConfig:
    """Stands in for lowbit.nn.QuantConfig: only to_json/from_json matter to checkpoints."""

    def __init__(self, spec: dict):
        self.spec = spec

    def to_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> FakeConfig:
        return cls(json.loads(s))


def test_quant_config_stored_and_reapplied(tmp_path, monkeypatch):
    m = nn.Linear(3, 2)
    m.lowbit_config = FakeConfig({"weight": "e4m3", "act": "e4m3"})
    path = tmp_path / "q.safetensors"
    ck.save(m, path)
    assert json.loads(ck.read_metadata(path)["quant_config"]) == {"weight": "e4m3", "act": "e4m3"}

    applied = []

    def fake_quantize_(model, config, filter_fn=None):
        applied.append(config.spec)
        model.lowbit_config = config
        return model

    monkeypatch.setattr(lowbit.nn, "QuantConfig", FakeConfig, raising=False)
    monkeypatch.setattr(lowbit.nn, "quantize_", fake_quantize_, raising=False)
    fresh = nn.Linear(3, 2)
    ck.load(fresh, path)
    assert applied == [{"weight": "e4m3", "act": "e4m3"}]
    assert_state_bit_exact(m, fresh)
    # an already quantized model is not quantized again ...
    ck.load(fresh, path)
    assert len(applied) == 1
    # ... and one quantized differently is refused unless strict=False
    other = nn.Linear(3, 2)
    other.lowbit_config = FakeConfig({"weight": "int8"})
    with pytest.raises(ValueError, match="different config"):
        ck.load(other, path)
    ck.load(other, path, strict=False)
    assert torch.equal(other.weight, m.weight) and len(applied) == 1


QUANT_CASES = [
    ("cnn-small", {"weight": "int8", "act": "int8", "granularity": "per_channel"}),
    ("cnn-small", {"weight": "int4", "act": "int8", "scaling": "lsq"}),  # learnable scales
    ("vit-tiny", "fp8"),  # MatMul modules swapped too
]


@pytest.mark.skipif(not hasattr(lowbit.nn, "quantize_"), reason="lowbit.nn.quantize_ not yet")
@pytest.mark.parametrize(("name", "cfg"), QUANT_CASES)
def test_real_quantize_round_trip(tmp_path, name, cfg):
    from lowbit.nn import QuantConfig, quantize_

    config = QuantConfig.from_recipe(cfg) if isinstance(cfg, str) else QuantConfig(**cfg)
    torch.manual_seed(0)
    m = build_model(name, in_channels=1, num_classes=10, image_size=8)
    quantize_(m, config)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    for _ in range(2):  # training steps move BN stats and initialise data-dependent scales
        opt.zero_grad()
        F.cross_entropy(m(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    m.eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        want = m(x)
    path = tmp_path / "q.safetensors"
    ck.save(m, path)
    torch.manual_seed(1)
    fresh = build_model(name, in_channels=1, num_classes=10, image_size=8).eval()
    meta = ck.load(fresh, path)
    assert QuantConfig.from_json(meta["quant_config"]) == config
    assert fresh.lowbit_config == config
    assert_state_bit_exact(m, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(x), want)
