"""IDX files (the MNIST / Fashion-MNIST container), read with numpy; gzip or plain.

Layout: a 4-byte magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes,
then the row-major data, big-endian. See http://yann.lecun.com/exdb/mnist/ (bottom of page).
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt gzip stream ({e})") from e


def parse_idx(buf: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX byte string.

    Args:
        buf: the file's bytes, header included.
        source: name used in error messages (usually the path).

    Returns:
        A read-only array in native byte order with the header's shape and dtype.

    Raises:
        ValueError: bad magic, unknown dtype code, or a size that disagrees with the header.
    """
    if len(buf) < 4:
        raise ValueError(f"{source}: not an IDX file ({len(buf)} bytes, header needs 4)")
    if buf[0] != 0 or buf[1] != 0:
        raise ValueError(
            f"{source}: bad IDX magic {buf[:4].hex()} (expected 0000 followed by a dtype code "
            f"in {sorted(f'{c:02x}' for c in IDX_DTYPES)} and the number of dimensions)"
        )
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        raise ValueError(
            f"{source}: unknown IDX dtype code 0x{code:02x}; accepted: "
            f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{source}: truncated IDX header ({len(buf)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    n = int(np.prod(shape, dtype=np.int64))
    expected = header + n * dtype.itemsize
    if len(buf) != expected:
        raise ValueError(
            f"{source}: IDX size mismatch: header says shape {shape} of {dtype.str} "
            f"({expected} bytes with header) but the data has {len(buf)} bytes"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=n, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    arr.flags.writeable = False
    return arr


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, detected from its first bytes).

    Args:
        path: the file.

    Returns:
        A read-only numpy array (native byte order) with the shape in the header.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid IDX file (the message names the path).
    """
    path = os.fspath(path)
    return parse_idx(_read_bytes(path), source=path)
