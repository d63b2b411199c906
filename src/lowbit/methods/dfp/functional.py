"""DFP-16 linear and conv2d as autograd functions: every GEMM is a DFP GEMM.

For ``y = x·Wᵀ + b`` (a convolution is the same GEMM on ``unfold(x)``), one training step is

    forward         x̂ = Q(x),  Ŵ = Q(W),      y = DFP_GEMM(x̂, Ŵᵀ) + b
    backward        Ĝ = Q_grad(dL/dy)
      data          dL/dx = DFP_GEMM(Ĝ, Ŵ)
      weight        dL/dW = DFP_GEMM(Ĝᵀ, x̂)
      bias          dL/db = Σ dL/dy           (fp32, unquantized: not a GEMM)

where ``Q`` is the DFP-P conversion of :func:`lowbit.arith.dfp.quantize` (RNE; ``Q_grad`` uses
``grad_mode``) and ``DFP_GEMM`` is :func:`lowbit.arith.dfp.matmul` (head-room shifts, INT32
chunk accumulators of proven-safe length, fp32 combination). The GEMM results are fp32; the
quantization passes no gradient of its own (the weight gradient goes to the fp32 master
weight, which the optimizer updates).

Convolution (groups = 1, zero padding) as GEMMs on the column matrix
``U = im2col(x̂)`` of shape ``(batch·Ho·Wo, kh·kw·C)`` (rows ``(b, ho, wo)``, columns
tap-major ``(i, j, c)``):

* forward: ``Y = U · Ŵ₂ᵀ`` with ``Ŵ₂[o, (i, j, c)] = Ŵ[o, c, i, j]``: the reduction runs over
  ``(i, j, c)`` in that order;
* backward-data: the transposed convolution as a GEMM: ``Ĝ`` with ``stride - 1`` zeros
  inserted between its elements, padded by ``dilation·(k-1) - padding`` (plus the rows the
  forward's stride dropped; a negative amount crops), turned into columns ``V`` with the
  forward's kernel and dilation at stride 1, and multiplied by the flipped, transposed weight
  ``W'[c, (i, j, o)] = Ŵ[o, c, kh-1-i, kw-1-j]``: the whole reduction over ``(i, j, o)`` stays
  inside the DFP GEMM (no fp32 ``col2im`` sums);
* weight-gradient: ``dW₂ = Ĝ₂ · U`` with ``Ĝ₂[o, (b, ho, wo)] = Ĝ[b, o, ho, wo]``: the
  reduction runs over ``(b, ho, wo)``. With ``headroom="auto"`` this GEMM keeps the
  forward's shift of ``x̂`` (and picks the fewest bits for ``Ĝ``), so the forward's columns
  are reused.

The operand maxima that decide each GEMM's plan are those of the GEMM operands (elements a
strided or dilated convolution skips do not count); head-room shifts are applied before the
columns are built (shifting commutes with copying elements).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lowbit.arith.dfp import DFPGemmStats, plan_chunks, planned_gemm, shift_values
from lowbit.arith.dfp.tensor import quantize_values
from lowbit.methods.dfp.settings import DFPSettings

GEMM_ROLES = ("forward", "grad_input", "grad_weight")


class DFPLayerStats:
    """Counters of one layer's DFP GEMMs, per role (``"forward"``, ``"grad_input"``,
    ``"grad_weight"``), accumulated over calls until :meth:`reset`.

    With ``audit = True`` (see :func:`lowbit.methods.dfp.audit_unchunked`) every GEMM is
    also run, on the same DFP-16 operands, the naive way: one INT32 accumulator per output
    and no head-room shifts (simulated step by step: slow, for a demonstration batch), and
    ``unchunked_overflow_count`` / ``unchunked_max_abs_sum`` (largest exact dot product)
    record what that would have done; the layer's outputs do not change.

    Attributes (dicts role -> value):
        calls: GEMMs run.
        overflow_count: accumulator overflows (0 when every plan was safe: proven).
        max_abs_chunk_sum: largest exact INT32 chunk sum seen.
        max_bound: largest proven bound ``chunk · max|I_a| · max|I_b|`` (≤ 2**31 - 1 if safe).
        min_chunk: shortest chunk used (at most K); min_k_max: smallest proven safe chunk
            length; max_shift: largest total head-room shift (bits).
        last: the last :class:`DFPGemmStats`.
    """

    def __init__(self) -> None:
        self.audit = False
        self.reset()

    def reset(self) -> None:
        self.calls = dict.fromkeys(GEMM_ROLES, 0)
        self.overflow_count = dict.fromkeys(GEMM_ROLES, 0)
        self.max_abs_chunk_sum = dict.fromkeys(GEMM_ROLES, 0)
        self.max_bound = dict.fromkeys(GEMM_ROLES, 0)
        self.min_chunk: dict[str, int | None] = dict.fromkeys(GEMM_ROLES, None)
        self.min_k_max: dict[str, int | None] = dict.fromkeys(GEMM_ROLES, None)
        self.max_shift = dict.fromkeys(GEMM_ROLES, 0)
        self.unsafe_calls = dict.fromkeys(GEMM_ROLES, 0)
        self.last: dict[str, DFPGemmStats | None] = dict.fromkeys(GEMM_ROLES, None)
        self.unchunked_overflow_count = dict.fromkeys(GEMM_ROLES, 0)
        self.unchunked_max_abs_sum = dict.fromkeys(GEMM_ROLES, 0)
        self.audit_calls = dict.fromkeys(GEMM_ROLES, 0)

    def record(self, role: str, st: DFPGemmStats) -> None:
        self.calls[role] += 1
        self.overflow_count[role] += st.overflow_count
        self.max_abs_chunk_sum[role] = max(self.max_abs_chunk_sum[role], st.max_abs_chunk_sum)
        self.max_bound[role] = max(self.max_bound[role], st.bound)
        mc = self.min_chunk[role]
        if st.k > 0:
            self.min_chunk[role] = st.chunk if mc is None else min(mc, st.chunk)
            mk = self.min_k_max[role]
            self.min_k_max[role] = st.k_max if mk is None else min(mk, st.k_max)
        self.max_shift[role] = max(self.max_shift[role], st.shift_a + st.shift_b)
        self.unsafe_calls[role] += 0 if st.safe else 1
        self.last[role] = st

    def record_audit(self, role: str, st: DFPGemmStats) -> None:
        """Counters of the what-if GEMM (one INT32 accumulator per output, no head-room)."""
        self.audit_calls[role] += 1
        self.unchunked_overflow_count[role] += st.overflow_count
        self.unchunked_max_abs_sum[role] = max(
            self.unchunked_max_abs_sum[role], st.max_abs_chunk_sum
        )

    @property
    def total_overflows(self) -> int:
        return sum(self.overflow_count.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of the counters."""
        return {
            "calls": dict(self.calls),
            "overflow_count": dict(self.overflow_count),
            "max_abs_chunk_sum": dict(self.max_abs_chunk_sum),
            "max_bound": dict(self.max_bound),
            "min_chunk": dict(self.min_chunk),
            "min_k_max": dict(self.min_k_max),
            "max_shift": dict(self.max_shift),
            "unsafe_calls": dict(self.unsafe_calls),
            "audit_calls": dict(self.audit_calls),
            "unchunked_overflow_count": dict(self.unchunked_overflow_count),
            "unchunked_max_abs_sum": dict(self.unchunked_max_abs_sum),
        }

    def __repr__(self) -> str:
        return (
            f"DFPLayerStats(calls={self.calls}, overflow_count={self.overflow_count}, "
            f"max_abs_chunk_sum={self.max_abs_chunk_sum})"
        )


class _Q:
    """A quantized operand: DFP integers held as floats, exponent, exact max|I|."""

    __slots__ = ("exp", "max", "q")

    def __init__(
        self, x: torch.Tensor, s: DFPSettings, mode: str = "rne", seed: int = 0, name: str = "x"
    ) -> None:
        self.q, self.exp, self.max = quantize_values(x, s.bits, mode, seed, name=name)


def _plan(s: DFPSettings, max_a: int, max_b: int, k: int) -> Any:
    return plan_chunks(
        max_a,
        max_b,
        k,
        acc_bits=s.acc_bits,
        chunk=s.chunk,
        headroom=s.headroom,
        min_chunk=s.min_chunk,
    )


def _audit(
    stats: Any,
    s: DFPSettings,
    role: str,
    a: torch.Tensor,
    max_a: int,
    b: torch.Tensor,
    max_b: int,
    *,
    b_transposed: bool = False,
) -> None:
    """The what-if GEMM of :class:`DFPLayerStats` (unshifted integer operands)."""
    if stats is None or not stats.audit:
        return
    plan = plan_chunks(max_a, max_b, a.shape[1], acc_bits=s.acc_bits, chunk=None, headroom=0)
    _, st = planned_gemm(
        shift_values(a, 0), shift_values(b, 0), plan, 0, b_transposed=b_transposed, shifted=True
    )
    stats.record_audit(role, st)


def _gemm(
    a: torch.Tensor,
    ea: int,
    b: torch.Tensor,
    eb: int,
    plan: Any,
    stats: Any,
    role: str,
    *,
    b_transposed: bool = False,
    shifted: bool = False,
    audit: tuple[Any, ...] | None = None,
) -> torch.Tensor:
    """One DFP GEMM of integer-valued operands; the plan's head-room shifts are applied here
    (whole operands, float64) unless ``shifted`` (then they are float64 and shifted).
    ``audit = (settings, max_a, max_b)`` runs the what-if GEMM on the unshifted operands."""
    if audit is not None and not shifted:
        _audit(stats, audit[0], role, a, audit[1], b, audit[2], b_transposed=b_transposed)
    if not shifted:
        a, b = shift_values(a, plan.shift_a), shift_values(b, plan.shift_b)
    out, st = planned_gemm(
        a, b, plan, ea + eb + plan.shift_a + plan.shift_b, b_transposed=b_transposed, shifted=True
    )
    if stats is not None:
        stats.record(role, st)
    return out


def _absmax(t: torch.Tensor) -> int:
    return int(t.abs().max()) if t.numel() else 0


# ---- linear --------------------------------------------------------------------------------------
class DFPLinearFunction(torch.autograd.Function):
    """``y = x·Wᵀ + b`` with DFP GEMMs forward and backward (module docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        settings: DFPSettings,
        stats: Any,
        grad_seed: int,
    ) -> torch.Tensor:
        s = settings
        x2 = x.reshape(-1, x.shape[-1])
        xq = _Q(x2, s, name="input")
        wq = _Q(weight, s, name="weight")
        plan = _plan(s, xq.max, wq.max, x2.shape[1])
        y = _gemm(
            xq.q,
            xq.exp,
            wq.q,
            wq.exp,
            plan,
            stats,
            "forward",
            b_transposed=True,
            audit=(s, xq.max, wq.max),
        )
        if bias is not None:
            y = y + bias.to(y.dtype)
        ctx.save_for_backward(xq.q, wq.q)
        ctx.meta = (xq.exp, xq.max, wq.exp, wq.max, s, stats, grad_seed, x.shape, bias is not None)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        xq, wq = ctx.saved_tensors
        xe, xm, we, wm, s, stats, seed, xshape, has_bias = ctx.meta
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        gq = _Q(g2, s, s.grad_mode, seed, name="grad_output")
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            plan = _plan(s, gq.max, wm, g2.shape[1])
            dx = _gemm(
                gq.q, gq.exp, wq, we, plan, stats, "grad_input", audit=(s, gq.max, wm)
            ).reshape(xshape)
        if ctx.needs_input_grad[1]:
            plan = _plan(s, gq.max, xm, g2.shape[0])
            dw = _gemm(gq.q.t(), gq.exp, xq, xe, plan, stats, "grad_weight", audit=(s, gq.max, xm))
        if has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db, None, None, None


def dfp_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    settings: DFPSettings | None = None,
    stats: DFPLayerStats | None = None,
    grad_seed: int = 0,
) -> torch.Tensor:
    """Functional DFP linear layer (float32 output); ``stats`` collects the GEMM counters."""
    return DFPLinearFunction.apply(x, weight, bias, settings or DFPSettings(), stats, grad_seed)


# ---- conv2d --------------------------------------------------------------------------------------
_MASKS: dict[tuple[Any, ...], torch.Tensor | None] = {}


def _coverage(
    h: int,
    w: int,
    kernel: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    stride: tuple[int, int],
) -> torch.Tensor | None:
    """Bool mask (h, w) of the input positions some window of the unfold reads; None when
    every position is read (the usual case). Cached per geometry."""
    key = (h, w, kernel, dilation, padding, stride)
    if key not in _MASKS:
        ones = torch.ones(1, 1, h, w, dtype=torch.float64)
        cols = F.unfold(ones, kernel, dilation=dilation, padding=padding, stride=stride)
        back = F.fold(cols, (h, w), kernel, dilation=dilation, padding=padding, stride=stride)
        mask = back[0, 0] > 0
        _MASKS[key] = None if bool(mask.all()) else mask
    return _MASKS[key]


def _covered_max(
    t: torch.Tensor,
    known_max: int,
    kernel: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    stride: tuple[int, int],
) -> int:
    """max|t| over the positions the unfold reads (``known_max`` when it reads them all)."""
    mask = _coverage(t.shape[-2], t.shape[-1], kernel, dilation, padding, stride)
    if mask is None:
        return known_max
    return _absmax(t[..., mask.to(t.device)])


def _grad_input_operand(
    gq: torch.Tensor,
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[torch.Tensor, bool]:
    """``Ĝ`` with zeros inserted (stride) and padded/cropped so that a stride-1 unfold with
    the forward's kernel and dilation gives the transposed convolution's columns; second
    item: whether the padding cropped some of ``Ĝ`` (``padding > dilation·(k-1)``)."""
    b, c, ho, wo = gq.shape
    sh, sw = stride
    if sh > 1 or sw > 1:
        gd = gq.new_zeros((b, c, (ho - 1) * sh + 1, (wo - 1) * sw + 1))
        gd[:, :, ::sh, ::sw] = gq
    else:
        gd = gq
    pads = []
    for ax in (1, 0):  # F.pad order: last dim first
        size, k, s, p, d = in_hw[ax], kernel[ax], stride[ax], padding[ax], dilation[ax]
        rem = (size + 2 * p - d * (k - 1) - 1) % s
        lo = d * (k - 1) - p
        pads += [lo, lo + rem]
    return F.pad(gd, pads), min(pads) < 0


def _im2col(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Columns of a convolution as a ``(batch·Ho·Wo, kh·kw·C)`` matrix: rows in ``(b, ho, wo)``
    order, columns tap-major ``(i, j, c)``. An exact copy (numba on CPU, strided torch copies
    on other devices)."""
    b, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if x.device.type == "cpu":
        from lowbit.methods.dfp._numba import im2col_cl

        out = torch.empty((b * ho * wo, kh * kw * c), dtype=x.dtype)
        im2col_cl(
            x.permute(0, 2, 3, 1).contiguous().numpy(),
            out.numpy(),
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            ho,
            wo,
        )
        return out
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    xcl = xp.permute(0, 2, 3, 1).contiguous()
    buf = x.new_empty((b, ho, wo, kh, kw, c))
    for i in range(kh):
        for j in range(kw):
            buf[:, :, :, i, j, :] = xcl[
                :,
                i * dh : i * dh + sh * (ho - 1) + 1 : sh,
                j * dw : j * dw + sw * (wo - 1) + 1 : sw,
                :,
            ]
    return buf.reshape(b * ho * wo, kh * kw * c)


class DFPConv2dFunction(torch.autograd.Function):
    """Conv2d (groups = 1, zero padding) with DFP GEMMs forward and backward."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        settings: DFPSettings,
        stats: Any,
        grad_seed: int,
    ) -> torch.Tensor:
        s = settings
        bsz, _, h, w = x.shape
        cout, cin, kh, kw = weight.shape
        kernel = (kh, kw)
        xq = _Q(x, s, name="input")
        wq = _Q(weight, s, name="weight")
        xm = _covered_max(xq.q, xq.max, kernel, dilation, padding, stride)
        k = cin * kh * kw
        plan = _plan(s, xm, wq.max, k)
        # the shift commutes with im2col (which copies elements): shift the small tensor
        u2 = _im2col(shift_values(xq.q, plan.shift_a), kernel, stride, padding, dilation)
        w2 = shift_values(wq.q.permute(0, 2, 3, 1).reshape(cout, k), plan.shift_b)
        y = _gemm(u2, xq.exp, w2, wq.exp, plan, stats, "forward", b_transposed=True, shifted=True)
        if stats is not None and stats.audit:
            _audit(
                stats,
                s,
                "forward",
                _im2col(xq.q.double(), kernel, stride, padding, dilation),
                xm,
                wq.q.permute(0, 2, 3, 1).reshape(cout, k),
                wq.max,
                b_transposed=True,
            )
        ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        y = y.reshape(bsz, ho, wo, cout).permute(0, 3, 1, 2)
        if bias is not None:
            y = y + bias.to(y.dtype).reshape(1, -1, 1, 1)
        ctx.save_for_backward(xq.q, wq.q, u2)
        ctx.meta = (
            xq.exp,
            xm,
            plan.shift_a,
            wq.exp,
            wq.max,
            stride,
            padding,
            dilation,
            s,
            stats,
            grad_seed,
            bias is not None,
        )
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        xq, wq, u2 = ctx.saved_tensors
        xe, xm, xshift, we, wm, stride, padding, dilation, s, stats, seed, has_bias = ctx.meta
        bsz, cin, h, w = xq.shape
        cout, _, kh, kw = wq.shape
        kernel = (kh, kw)
        gq = _Q(grad_out, s, s.grad_mode, seed, name="grad_output")
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            gd, cropped = _grad_input_operand(gq.q, (h, w), kernel, stride, padding, dilation)
            gm = _covered_max(
                gd, _absmax(gd) if cropped else gq.max, kernel, dilation, (0, 0), (1, 1)
            )
            k = cout * kh * kw
            plan = _plan(s, gm, wm, k)
            v2 = _im2col(shift_values(gd, plan.shift_a), kernel, (1, 1), (0, 0), dilation)
            wt = shift_values(wq.flip(2, 3).permute(1, 2, 3, 0).reshape(cin, k), plan.shift_b)
            dx = _gemm(
                v2, gq.exp, wt, we, plan, stats, "grad_input", b_transposed=True, shifted=True
            )
            if stats is not None and stats.audit:
                _audit(
                    stats,
                    s,
                    "grad_input",
                    _im2col(gd.double(), kernel, (1, 1), (0, 0), dilation),
                    gm,
                    wq.flip(2, 3).permute(1, 2, 3, 0).reshape(cin, k),
                    wm,
                    b_transposed=True,
                )
            dx = dx.reshape(bsz, h, w, cin).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            g2 = gq.q.permute(1, 0, 2, 3).reshape(cout, -1)  # (C_out, (b, ho, wo))
            if s.headroom == "auto":  # keep the forward's shift of x: reuse its columns
                plan = plan_chunks(
                    gq.max,
                    xm,
                    g2.shape[1],
                    acc_bits=s.acc_bits,
                    chunk=s.chunk,
                    headroom=("auto", xshift),
                    min_chunk=s.min_chunk,
                )
            else:
                plan = _plan(s, gq.max, xm, g2.shape[1])
            if plan.shift_b != xshift:
                u2 = _im2col(shift_values(xq, plan.shift_b), kernel, stride, padding, dilation)
            dw = _gemm(
                shift_values(g2, plan.shift_a),
                gq.exp,
                u2,
                xe,
                plan,
                stats,
                "grad_weight",
                shifted=True,
            )
            if stats is not None and stats.audit:
                _audit(
                    stats,
                    s,
                    "grad_weight",
                    g2,
                    gq.max,
                    _im2col(xq.double(), kernel, stride, padding, dilation),
                    xm,
                )
            dw = dw.reshape(cout, kh, kw, cin).permute(0, 3, 1, 2)
        if has_bias and ctx.needs_input_grad[2]:
            db = grad_out.sum((0, 2, 3))
        return dx, dw, db, None, None, None, None, None, None


def dfp_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    settings: DFPSettings | None = None,
    stats: DFPLayerStats | None = None,
    grad_seed: int = 0,
) -> torch.Tensor:
    """Functional DFP conv2d (groups = 1, zero padding, float32 output)."""
    if x.dim() != 4:
        raise ValueError(f"dfp_conv2d takes (batch, C, H, W) input, got shape {tuple(x.shape)}")
    return DFPConv2dFunction.apply(
        x,
        weight,
        bias,
        _pair(stride),
        _pair(padding),
        _pair(dilation),
        settings or DFPSettings(),
        stats,
        grad_seed,
    )


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


__all__ = [
    "GEMM_ROLES",
    "DFPConv2dFunction",
    "DFPLayerStats",
    "DFPLinearFunction",
    "dfp_conv2d",
    "dfp_linear",
]
