"""Export to int8 safetensors: lossless round trip, and switching from the file gives the
weights the training-time evaluation used, bit for bit, at every width."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from _dr_tiny import TinyNet  # noqa: E402

from lowbit.methods import double_rounding as dr  # noqa: E402


def _bits_equal(a, b) -> bool:
    """Bitwise equality (also tells -0.0 from +0.0 and compares NaN payloads)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
        return torch.equal(a.view(view), b.view(view))
    return torch.equal(a, b)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    _, res = trained
    path = tmp_path_factory.mktemp("dr") / "model-int8.safetensors"
    dr.export(res.model, path, metadata={"note": "test"})
    return res.model, path


def test_switch_from_file_equals_training_time_weights(exported):
    model, path = exported
    ckpt = dr.load_int8(path)
    layers = dr.dr_layers(model)
    assert set(ckpt.layers) == set(layers) == {"block.conv1", "block.conv2"}
    for method in ("round", "floor"):
        for b in model.dr_bits:
            dr.set_bits(model, b, method=method)
            for n, m in layers.items():
                used = m.quantized_weight().detach()  # what forward multiplies with
                w_l = dr.switch(ckpt.codes[n], 8, b, method)
                assert w_l.dtype == torch.int8
                assert torch.equal(w_l, m.int_weight())
                assert _bits_equal(ckpt.weight(n, b, method), used), (n, b, method)
                assert _bits_equal(dr.dequantize(w_l, ckpt.scales[n], 8 - b), used)
    dr.set_bits(model, 8, method="round")


def test_round_trip_is_lossless(exported):
    model, path = exported
    ckpt = dr.load_int8(path)
    state = model.state_dict()
    layers = dr.dr_layers(model)
    for n, m in layers.items():
        assert torch.equal(ckpt.codes[n], m.weight_quant.codes(m.weight))
        assert _bits_equal(ckpt.scales[n], m.weight_quant.scale.detach())
        assert ckpt.codes[n].abs().max() > 0
    expected = {
        k for k in state if not any(k in (f"{n}.weight", f"{n}.weight_quant.scale") for n in layers)
    }
    assert set(ckpt.state) == expected
    for k in expected:
        assert _bits_equal(ckpt.state[k], state[k]), k
    meta = ckpt.metadata
    assert meta["format"] == dr.FORMAT and meta["note"] == "test"
    assert json.loads(meta["bits"]) == [8, 6, 4, 2] and ckpt.h == 8
    # a second export of the loaded file writes the same tensors
    fresh = dr.convert(TinyNet(), (8, 6, 4, 2))
    ckpt.load_into(fresh)
    again = dr.load_int8(dr.export(fresh, path.with_name("again.safetensors")))
    for n in layers:
        assert torch.equal(again.codes[n], ckpt.codes[n])
        assert _bits_equal(again.scales[n], ckpt.scales[n])
    for k in expected:
        assert _bits_equal(again.state[k], ckpt.state[k]), k


def test_loaded_model_computes_the_same_outputs_at_every_width(exported, digits):
    model, path = exported
    fresh = dr.convert(TinyNet(), (8, 6, 4, 2))
    dr.load_int8(path).load_into(fresh)
    model.eval()
    fresh.eval()
    x = next(iter(digits[1]))[0][:64]
    with torch.no_grad():
        for method in ("round", "floor"):
            for b in (8, 6, 4, 2):
                dr.set_bits(model, b, method=method)
                dr.set_bits(fresh, b, method=method)
                for n, m in dr.dr_layers(fresh).items():
                    assert torch.equal(m.int_weight(), dr.dr_layers(model)[n].int_weight())
                assert torch.equal(fresh(x), model(x)), (b, method)
    dr.set_bits(model, 8, method="round")


def test_load_into_checks_the_model(exported, tmp_path):
    _, path = exported
    ckpt = dr.load_int8(path)
    with pytest.raises(ValueError, match="converted for bits=\\(8, 4\\)"):
        ckpt.load_into(dr.convert(TinyNet(), (8, 4)))
    other = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="switchable layers"):
        ckpt.load_into(dr.convert(other, (8, 6, 4, 2)))
    with pytest.raises(ValueError, match="no such file"):
        dr.load_int8(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a Double Rounding export"):
        dr.load_int8(tmp_path / "plain.safetensors")


def test_export_leaves_the_model_alone(trained, tmp_path):
    _, res = trained
    before = copy.deepcopy(res.model.state_dict())
    dr.export(res.model, tmp_path / "m.safetensors")
    after = res.model.state_dict()
    assert all(_bits_equal(before[k], after[k]) for k in before)
