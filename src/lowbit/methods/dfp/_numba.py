"""numba im2col of the DFP convolution (imported on first use; cached on disk): an exact copy
of input elements (and zeros for padding) into the tap-major column matrix."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def im2col_cl(
    x: np.ndarray,
    out: np.ndarray,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    ho: int,
    wo: int,
) -> None:  # pragma: no cover
    """``out[(b, oh, ow), (i, j, c)] = x[b, oh·sh - ph + i·dh, ow·sw - pw + j·dw, c]`` (0
    outside), for a channels-last ``x`` of shape (B, H, W, C)."""
    nb, h, w, c = x.shape
    r = 0
    for b in range(nb):
        for oh in range(ho):
            for ow in range(wo):
                col = 0
                for i in range(kh):
                    hh = oh * sh - ph + i * dh
                    for j in range(kw):
                        ww = ow * sw - pw + j * dw
                        if 0 <= hh < h and 0 <= ww < w:
                            for ch in range(c):
                                out[r, col + ch] = x[b, hh, ww, ch]
                        else:
                            for ch in range(c):
                                out[r, col + ch] = 0.0
                        col += c
                r += 1
