"""IDX reader against files the test builds byte by byte with ``struct`` (not numpy)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from lowbit.data import parse_idx, read_idx


def idx_bytes(code: int, shape: tuple[int, ...], fmt: str, values: list) -> bytes:
    """Header ``00 00 code ndim`` + big-endian dims + big-endian values, via struct."""
    head = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return head + struct.pack(f">{len(values)}{fmt}", *values)


@pytest.mark.parametrize("compress", [False, True])
def test_ubyte_images(tmp_path, compress):
    values = [(7 * i + 3) % 256 for i in range(2 * 3 * 4)]
    buf = idx_bytes(0x08, (2, 3, 4), "B", values)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    path.write_bytes(gzip.compress(buf) if compress else buf)
    a = read_idx(path)
    assert a.dtype == np.uint8 and a.shape == (2, 3, 4)
    # row-major: element [i, j, k] is value number (i * 3 + j) * 4 + k
    for i in range(2):
        for j in range(3):
            for k in range(4):
                assert a[i, j, k] == values[(i * 3 + j) * 4 + k]
    assert not a.flags.writeable


@pytest.mark.parametrize(
    ("code", "fmt", "values", "dtype"),
    [
        (0x09, "b", [-128, -1, 0, 1, 127, 5], np.int8),
        (0x0B, "h", [-32768, -2, 0, 258, 32767, 1], np.int16),
        (0x0C, "i", [-(2**31), -2, 0, 65536 + 3, 2**31 - 1, 7], np.int32),
        (0x0D, "f", [-1.5, 0.0, 3.25, 1e30, -(2.0**-126), 0.1], np.float32),
        (0x0E, "d", [-1.5, 0.0, 3.25, 1e300, -(2.0**-1074), 0.1], np.float64),
    ],
)
def test_big_endian_types_become_native(code, fmt, values, dtype):
    a = parse_idx(idx_bytes(code, (3, 2), fmt, values))
    assert a.dtype == np.dtype(dtype) and a.dtype.isnative and a.shape == (3, 2)
    # struct's own round trip of each value is the oracle (0.1 as float32 is not 0.1)
    want = [struct.unpack(f">{fmt}", struct.pack(f">{fmt}", v))[0] for v in values]
    assert a.ravel().tolist() == want


def test_labels_1d_and_empty():
    assert parse_idx(idx_bytes(0x08, (5,), "B", [9, 0, 3, 3, 1])).tolist() == [9, 0, 3, 3, 1]
    assert parse_idx(idx_bytes(0x08, (0, 28, 28), "B", [])).shape == (0, 28, 28)


@pytest.mark.parametrize(
    ("buf", "msg"),
    [
        (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),
        (b"\x08\x03\x00\x00" + b"\x00" * 20, "bad IDX magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX dtype code 0x07"),
        (b"\x00\x00", "not an IDX file"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (idx_bytes(0x08, (2, 3), "B", [1] * 6)[:-1], "size mismatch"),
        (idx_bytes(0x08, (2, 3), "B", [1] * 6) + b"\x00", "size mismatch"),
    ],
)
def test_bad_files_raise_valueerror_naming_file(tmp_path, buf, msg):
    path = tmp_path / "bad-idx"
    path.write_bytes(buf)
    with pytest.raises(ValueError, match=msg) as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(0x08, (100,), "B", list(range(100))))
    path = tmp_path / "trunc.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt gzip") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")
