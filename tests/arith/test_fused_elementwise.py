"""The fused elementwise kernel (``lowbit.kernels.arith_numba``) against the plain path.

Arrays of at least ``_FAST_MIN`` elements go through the fused numba kernel; shorter ones
through the plain numpy path (``lowbit.arith.ops``), whose results the exhaustive Fraction
tests of ``test_ops_oracle.py`` hold. Here the same operands are rounded both ways, the plain
way in chunks shorter than ``_FAST_MIN`` with matching ``offset``s, so every mode (stochastic
ones included: the draw of element i depends only on seed and offset + i) must agree bit for
bit, for each of the kernel's specialised loops (RNE, SR) and its generic one.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowbit as lb
from lowbit import arith
from lowbit.arith.ops import _FAST_MIN
from oracle import assert_same_bits

MODES = ["rne", "rna", "rnz", "rtz", "ru", "rd", "ro", "sr", "sr_equal", "sr_bits"]


def _operands(name: str, n: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    fmt = lb.get_format(name)
    rng = np.random.default_rng(11)
    e = rng.integers(fmt.emin - fmt.man_bits, fmt.emax + 1, size=(2, n))
    v = rng.uniform(1, 2, size=(2, n)) * np.ldexp(1.0, e) * rng.choice([-1, 1], size=(2, n))
    x, y = v[0], v[1]
    k = n // 8
    y[:k] = -x[:k]  # exact zeros
    y[k : 2 * k] = x[k : 2 * k] * fmt.eps / 2  # ties
    x[2 * k : 3 * k] = fmt.max  # overflow neighbours
    x[3 * k : 3 * k + 8] = [np.inf, -np.inf, np.nan, -0.0, 0.0, np.inf, -0.0, 1.0]
    y[3 * k : 3 * k + 8] = [1.0, np.inf, 1.0, -0.0, -0.0, -np.inf, 0.0, np.nan]
    return x.astype(dtype), y.astype(dtype)  # not yet format values: inputs="round" rounds


@pytest.mark.parametrize("name", ["bf16", "fp16", "e4m3", "e4m3fnuz", "e5m2"])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_equals_plain_path(name: str, op: str, dtype: type) -> None:
    n = 3 * _FAST_MIN
    x, y = _operands(name, n, dtype)
    f = getattr(arith, op)
    step = _FAST_MIN - 1
    for mode in MODES:
        kw = {"seed": 5, "rand_bits": 8} if mode == "sr_bits" else {"seed": 5}
        fused = np.asarray(f(x, y, name, mode, inputs="round", offset=3, **kw), np.float64)
        plain = np.concatenate(
            [
                np.asarray(
                    f(
                        x[c : c + step],
                        y[c : c + step],
                        name,
                        mode,
                        inputs="round",
                        offset=3 + c,
                        **kw,
                    ),
                    np.float64,
                )
                for c in range(0, n, step)
            ]
        )
        assert_same_bits(fused, plain, x, f"{op} {name} {mode} {np.dtype(dtype).name}")
