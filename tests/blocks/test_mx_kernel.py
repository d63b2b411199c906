"""The fused numba MX kernel is bit-for-bit equal to the float64 reference; backends agree."""

from __future__ import annotations

import numpy as np
import pytest
from _mx_oracle import ELEMS

from lowbit.blocks import mx_encode, quantize_mx
from lowbit.blocks.mx import _kernel_ok, _resolve_format, _run_kernel
from lowbit.rounding.modes import RoundMode

MX_NAMES = list(ELEMS)
DET_MODES = ["rne", "rna", "rnz", "rtz", "ru", "rd", "ro"]


def _data(seed: int) -> np.ndarray:
    """fp32 rows of 96 spanning every regime: normal, huge, tiny, subnormal, ties, specials."""
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in ((-3, 3), (-40, 40), (100, 127), (-149, -120), (-130, -100)):
        r = rng.standard_normal((6, 96)) * 2.0 ** rng.integers(lo, hi, (6, 96))
        rows.append(r)
    # a tie-rich row: small integers times powers of two, so x / X often lands on midpoints
    rows.append(rng.integers(-64, 64, (6, 96)) * 2.0 ** rng.integers(-6, 3, (6, 1)))
    x = np.concatenate(rows).astype(np.float32)
    x[0, 5] = np.nan
    x[1, 70] = -np.inf
    x[2, :32] = 0.0
    x[3, 33] = -0.0
    x[4, 64:] = np.float32(3.4e38)  # amax next to fp32's max
    x[5, 64:] = -np.float32(2.0**-149)  # the smallest subnormal
    return x


@pytest.mark.parametrize("name", MX_NAMES)
@pytest.mark.parametrize("rule", ["floor", "ceil"])
def test_kernel_equals_reference(name: str, rule: str) -> None:
    x = _data(hash((name, rule)) % 2**32)
    for mode in DET_MODES:
        with np.errstate(over="ignore"):
            ref = quantize_mx(x, name, mode=mode, scale_rule=rule, impl="reference")
        got = quantize_mx(x, name, mode=mode, scale_rule=rule, impl="kernel")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(
            got.view(np.uint32), ref.view(np.uint32), err_msg=f"{name} {rule} {mode}"
        )


@pytest.mark.parametrize("name", MX_NAMES)
def test_kernel_scales_partial_blocks(name: str) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((7, 45)) * 2.0 ** rng.integers(-60, 60, (7, 1))).astype(np.float32)
    f = _resolve_format(name)
    for blk in (32, 8, 45, 7):
        out, scales = _run_kernel(x, f, blk, "floor", RoundMode.RNE)
        t = mx_encode(x, name, block=blk)
        np.testing.assert_array_equal(scales, t.scales)
        ref = quantize_mx(x, name, block=blk, impl="reference")
        np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))


def test_kernel_dispatch_rules() -> None:
    f = _resolve_format("mxfp8_e4m3")
    x = np.ones((4, 32), np.float32)
    assert _kernel_ok(x, f, 1, RoundMode.RNE, "saturate")
    assert not _kernel_ok(x, f, 0, RoundMode.RNE, "saturate")  # not the last axis
    assert not _kernel_ok(x.T, f, 1, RoundMode.RNE, "saturate")  # not contiguous
    assert not _kernel_ok(x.astype(np.float64), f, 1, RoundMode.RNE, "saturate")
    for mode in RoundMode:  # every mode, the stochastic ones included
        assert _kernel_ok(x, f, 1, mode, "saturate"), mode
    assert not _kernel_ok(x, f, 1, RoundMode.RNE, "nan")


def test_torch_and_jax_match_numpy() -> None:
    torch = pytest.importorskip("torch")
    x = _data(11)
    x[~np.isfinite(x)] = 1.0
    for name in ("mxfp8_e4m3", "mxfp4", "mxint8"):
        ref = quantize_mx(x, name)
        t = quantize_mx(torch.from_numpy(x.copy()), name)  # CPU fp32: the kernel path
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        np.testing.assert_array_equal(t.numpy().view(np.uint32), ref.view(np.uint32))
        tt = quantize_mx(torch.from_numpy(x.copy()).T, name, axis=0)  # reference path
        np.testing.assert_array_equal(tt.T.numpy().view(np.uint32), ref.view(np.uint32))
        xb = torch.from_numpy(x.copy()).to(torch.bfloat16)
        gb = quantize_mx(xb, name)
        assert gb.dtype == torch.bfloat16
        refb = quantize_mx(xb.to(torch.float64).numpy(), name)
        np.testing.assert_array_equal(
            gb.to(torch.float64).numpy(),
            torch.from_numpy(refb).to(torch.bfloat16).to(torch.float64).numpy(),
        )
        sr = quantize_mx(torch.from_numpy(x.copy()), name, mode="sr", seed=3)
        np.testing.assert_array_equal(sr.numpy(), quantize_mx(x, name, mode="sr", seed=3))
    jnp = pytest.importorskip("jax.numpy")
    for name in ("mxfp8_e5m2", "mxfp6_e3m2"):
        ref = quantize_mx(x, name)
        j = quantize_mx(jnp.asarray(x), name)
        assert j.dtype == jnp.float32 and j.shape == x.shape
        np.testing.assert_array_equal(np.asarray(j).view(np.uint32), ref.view(np.uint32))


def test_jax_cpu_float32_uses_the_kernel_view() -> None:
    jnp = pytest.importorskip("jax.numpy")
    from lowbit.blocks.mx import _kernel_view

    x = _data(12)
    view, wrap = _kernel_view(jnp.asarray(x))
    assert isinstance(view, np.ndarray) and wrap is not None
    assert _kernel_view(jnp.asarray(x, dtype=jnp.bfloat16))[0] is None


def test_out_parameter() -> None:
    x = _data(13)
    ref = quantize_mx(x, "mxfp4")
    out = np.empty_like(x)
    assert quantize_mx(x, "mxfp4", out=out) is out
    np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
    out64 = np.empty(x.shape)
    x64 = x.astype(np.float64)
    assert quantize_mx(x64, "mxfp4", out=out64) is out64  # reference path
    np.testing.assert_array_equal(out64, quantize_mx(x64, "mxfp4"))
    with pytest.raises(ValueError, match="out"):
        quantize_mx(x, "mxfp4", out=np.empty(3, np.float32))
    torch = pytest.importorskip("torch")
    tx = torch.from_numpy(x.copy())
    tout = torch.empty_like(tx)
    assert quantize_mx(tx, "mxfp4", out=tout) is tout
    np.testing.assert_array_equal(tout.numpy().view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("name", MX_NAMES)
def test_kernel_on_random_bit_patterns(name: str) -> None:
    """Arbitrary fp32 patterns (NaN payloads, infs, subnormals, anything), blocks of 4 so that
    many blocks stay finite, and exponent-limited patterns so that most do."""
    rng = np.random.default_rng(len(name))
    bits = rng.integers(0, 2**32, (64, 64), dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    narrow = (bits & np.uint32(0x80FFFFFF)) | (
        rng.integers(100, 150, bits.shape).astype(np.uint32) << np.uint32(23)
    )
    for data in (x, narrow.view(np.float32)):
        for mode in ("rne", "rtz", "ru"):
            for rule in ("floor", "ceil"):
                with np.errstate(over="ignore"):
                    ref = quantize_mx(
                        data, name, block=4, mode=mode, scale_rule=rule, impl="reference"
                    )
                got = quantize_mx(data, name, block=4, mode=mode, scale_rule=rule, impl="kernel")
                nan = np.isnan(ref)
                assert (np.isnan(got) == nan).all()
                np.testing.assert_array_equal(got.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])
