"""The output contract of ``lowbit.round``: same backend, dtype, shape and device as the input,
values equal to the oracle's; Python float in, float out; clear errors for bad dtypes and bad
mode / format / overflow names."""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest

import lowbit as lb
from oracle import FloatOracle, assert_same_bits

X = np.array([[0.1, -2.7, 300.0, 1e-9], [-0.0, 7.5, -1e6, 0.33]])


@functools.cache
def _expected(name: str, mode: str) -> np.ndarray:
    o = FloatOracle(lb.get_format(name))
    return np.array([o.round(float(v), mode) for v in X.reshape(-1)]).reshape(X.shape)


NP_DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16]


@pytest.mark.parametrize("impl", ["reference", "auto"])
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_dtype_shape_kept(dtype, impl):
    with np.errstate(over="ignore"):  # -1e6 is -inf in fp16
        x = X.astype(dtype)
    for name, mode in (("e4m3fn", "rne"), ("e2m1", "rtz"), ("e5m2", "ru")):
        got = lb.round(x, name, mode, impl=impl)
        assert type(got) is np.ndarray and got.dtype == np.dtype(dtype) and got.shape == X.shape
        o = FloatOracle(lb.get_format(name))
        want = np.array([o.round(float(v), mode) for v in x.astype(np.float64).reshape(-1)])
        with np.errstate(over="ignore"):
            want = want.astype(dtype).astype(np.float64)
        assert_same_bits(got.astype(np.float64), want, x.astype(np.float64), f"{name} {dtype}")
    for shape in [(), (0,), (3, 0), (2, 3, 4)]:
        z = np.full(shape, 1.3, dtype=dtype)
        r = lb.round(z, "e4m3fn", impl=impl)
        assert r.shape == shape and r.dtype == np.dtype(dtype)
    strided = x[:, ::2]  # non-contiguous input
    r = lb.round(strided, "e4m3fn", impl=impl)
    assert r.shape == strided.shape
    assert_same_bits(r, lb.round(np.ascontiguousarray(strided), "e4m3fn", impl=impl), strided)


def test_numpy_out_argument():
    x = X.astype(np.float32)
    out = np.empty_like(x)
    res = lb.round(x, "e4m3fn", out=out)
    assert res is out
    assert_same_bits(out, lb.round(x, "e4m3fn"), x)
    with pytest.raises(ValueError):
        lb.round(x, "e4m3fn", out=np.empty((3, 3), np.float32))
    with pytest.raises(ValueError):
        lb.round(x, "e4m3fn", out=np.empty(x.shape, np.float64))


def test_python_scalars_and_lists():
    r = lb.round(0.1, "bf16")
    assert isinstance(r, float) and r == 0.10009765625
    r = lb.round(-0.0, "fp16")
    assert isinstance(r, float) and r == 0 and np.signbit(r)
    r = lb.round(3, "e2m1")  # an int is a number too
    assert isinstance(r, float) and r == 3.0
    r = lb.round([0.1, 2.6], "e2m1")
    assert isinstance(r, np.ndarray) and r.dtype == np.float64 and r.tolist() == [0.0, 3.0]
    r = lb.round(np.float32(0.1), "bf16")
    assert isinstance(r, np.float32) and float(r) == 0.10009765625


TORCH_DTYPES = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_dtype_shape_device_kept(dtype):
    torch = pytest.importorskip("torch")
    tdt = getattr(torch, dtype)
    x = torch.from_numpy(X).to(tdt)
    for name, mode in (("e4m3fn", "rne"), ("e2m1", "rtz"), ("e5m2", "ru")):
        got = lb.round(x, name, mode)
        assert isinstance(got, torch.Tensor)
        assert got.dtype == tdt and got.shape == x.shape and got.device == x.device
        o = FloatOracle(lb.get_format(name))
        want = (
            torch.tensor(
                [o.round(float(v), mode) for v in x.double().reshape(-1).tolist()],
                dtype=torch.float64,
            )
            .to(tdt)
            .double()
            .numpy()
        )
        assert_same_bits(got.double().numpy().reshape(-1), want, x.double().numpy())
    xt = x.t()  # non-contiguous
    r = lb.round(xt, "e4m3fn")
    assert r.shape == xt.shape
    assert_same_bits(
        r.double().numpy(),
        lb.round(xt.contiguous(), "e4m3fn").double().numpy(),
        xt.double().numpy(),
    )
    g = x.clone().requires_grad_(True) if tdt.is_floating_point else x
    assert lb.round(g, "e4m3fn").shape == x.shape
    out = torch.empty_like(x)
    assert lb.round(x, "e4m3fn", out=out) is out


def test_torch_gpu_keeps_device():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.from_numpy(X).float().cuda()
    r = lb.round(x, "e4m3fn", "rne")
    assert r.device == x.device and r.dtype == torch.float32
    assert_same_bits(r.cpu().double().numpy(), _expected("e4m3fn", "rne"), X)
    s = lb.round(x, "bf16", "sr", seed=3)
    assert torch.equal(s.cpu(), lb.round(x.cpu(), "bf16", "sr", seed=3))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_dtype_shape_kept(dtype):
    jnp = pytest.importorskip("jax.numpy")
    import jax

    jdt = getattr(jnp, dtype)
    x = jnp.asarray(X, dtype=jdt)
    for name, mode in (("e4m3fn", "rne"), ("e2m1", "rtz"), ("e5m2", "ru")):
        got = lb.round(x, name, mode)
        assert isinstance(got, jax.Array) and got.dtype == jdt and got.shape == X.shape
        xn = np.asarray(x, dtype=np.float64)
        o = FloatOracle(lb.get_format(name))
        want = np.array([o.round(float(v), mode) for v in xn.reshape(-1)], dtype=np.float32)
        want = np.asarray(jnp.asarray(want).astype(jdt), dtype=np.float64)
        assert_same_bits(np.asarray(got, dtype=np.float64).reshape(-1), want, xn)


# ---- errors -------------------------------------------------------------------------------

ACCEPTED = ("float64", "float32", "float16", "bfloat16")


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8, np.int64, np.bool_, np.complex64])
def test_bad_numpy_dtype_is_type_error_naming_accepted(dtype):
    with pytest.raises(TypeError) as err:
        lb.round(np.zeros(3, dtype=dtype), "e4m3fn")
    assert all(a in str(err.value) for a in ACCEPTED)


def test_bad_torch_and_jax_dtypes():
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    for t in (
        torch.zeros(3, dtype=torch.int32),
        torch.zeros(3, dtype=torch.uint8),
        torch.zeros(3, dtype=torch.bool),
    ):
        with pytest.raises(TypeError) as err:
            lb.round(t, "e4m3fn")
        assert all(a in str(err.value) for a in ACCEPTED)
    with pytest.raises(TypeError) as err:
        lb.round(jnp.zeros(3, dtype=jnp.int32), "e4m3fn")
    assert all(a in str(err.value) for a in ACCEPTED)


def test_bad_input_types():
    with pytest.raises(TypeError):
        lb.round(True, "fp16")
    with pytest.raises(TypeError):
        lb.round("1.0", "fp16")
    with pytest.raises(TypeError):
        lb.round({1.0}, "fp16")


def test_bad_mode_is_value_error_listing_modes():
    with pytest.raises(ValueError) as err:
        lb.round(1.0, "fp16", "nearest-ish")
    for m in ("rne", "rna", "rnz", "rtz", "ru", "rd", "ro", "sr", "sr_equal", "sr_bits"):
        assert m in str(err.value)
    with pytest.raises(TypeError):
        lb.round(1.0, "fp16", 3)


def test_mode_aliases_and_enum():
    assert lb.round(2.5, "e2m1", lb.RoundMode.RNE) == lb.round(2.5, "e2m1", "nearest") == 2.0
    assert lb.round(2.5, "e2m1", "rna") == lb.round(2.5, "e2m1", "ties_away") == 3.0
    assert lb.round(2.9, "e2m1", "truncate") == lb.round(2.9, "e2m1", "TRUNCATE") == 2.0


def test_mode_names_are_case_insensitive():
    assert lb.round(2.5, "e2m1", "RNA") == 3.0


def test_bad_format_is_value_error_listing_names():
    with pytest.raises(ValueError) as err:
        lb.round(1.0, "fp12x")
    assert "fp16" in str(err.value) and "e4m3fn" in str(err.value)
    with pytest.raises(ValueError):
        lb.round(1.0, "mxfp8_e4m3")  # a block format is not element-wise
    with pytest.raises(TypeError):
        lb.round(1.0, 16)


@pytest.mark.parametrize(
    ("name", "bad", "accepted"),
    [
        ("fp16", "nan", ("inf", "saturate")),
        ("e4m3fn", "inf", ("nan", "saturate")),
        ("e2m1", "nan", ("saturate",)),
        ("int8", "clip", ("saturate", "wrap")),
        ("e5m2", "wrap", ("inf", "saturate")),
    ],
)
def test_bad_overflow_is_value_error_listing_options(name, bad, accepted):
    with pytest.raises(ValueError) as err:
        lb.round(1.0, name, overflow=bad)
    assert all(a in str(err.value) for a in accepted)


def test_other_bad_options():
    with pytest.raises(ValueError):
        lb.round(1.0, "fp16", "sr_bits")  # needs rand_bits
    with pytest.raises(ValueError):
        lb.round(1.0, "fp16", "sr", rand_bits=0)
    with pytest.raises(ValueError):
        lb.round(1.0, "fp16", "sr", rand_bits=33)
    with pytest.raises(TypeError):
        lb.round(1.0, "fp16", "sr", rand_bits=2.0)
    with pytest.raises(ValueError):
        lb.round(1.0, "fp16", offset=-1)
    with pytest.raises(ValueError):
        lb.round(1.0, "fp16", impl="fast")
    with pytest.raises(TypeError):
        lb.round(1.0, "fp16", subnormals="no")
    with pytest.raises((TypeError, ValueError)):
        lb.round(1.0, "fp16", "sr", seed=-1)
