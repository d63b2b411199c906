"""I-ViT models: a trained ViT (``lowbit.models.ViTTiny``) or BERT encoder (MiniLM) rebuilt on
the fake-quant modules of :mod:`lowbit.methods.ivit.fake`, with an integer-only twin path.

* ``forward`` — the QAT graph: float64 values that are integer codes × scale (trainable with
  any float optimizer; ``.train()`` updates the activation ranges).
* ``run_int`` — the same network on integer tensors only (torch ``int8``/``int16``/``int32``/
  ``int64``), using the weights, biases and dyadic multipliers that the last eval
  ``forward`` recorded (:meth:`refresh` runs one). Every intermediate goes through a check
  that raises ``TypeError`` on a floating dtype; pass ``trace={}`` to record each one's
  dtype and range. ``forward`` in eval mode equals ``run_int`` codes × ``output_scale``
  exactly.

Topology (the repo's ``vit_quant.py`` adapted to lowbit's pre-norm ViT without class token,
and to post-norm BERT): every Linear gets 8-bit inputs and returns an INT32 accumulator; the
residual stream is 16-bit (the repo's ``QuantAct(16)``); a residual add requantizes both
branches to the new 16-bit scale; ``LayerNorm → requant``; ``qkv → requant → q·kᵀ (scale
folded with 1/√d) → requant → Shiftmax → ·v → requant → proj``; ``fc1 → requant → ShiftGELU
→ requant → fc2``.

ViT input: ``run_int`` takes the uint8 pixel codes ``p``; the data set's normalisation
``(p/L − mean)/std`` is folded into the patch embedding (weights ÷ ``L·std``, the offset into
the bias, formed in each forward from the float conv's parameters: :class:`QPatchEmbed`),
whose integer input is ``p − (L+1)//2`` (int8 for ``L = 255``). ViT output:
mean pooling is a sum of the 8-bit token codes (the ``1/N`` goes into the head's scale); the
logits are requantized to 16 bits, so the class is the argmax of integers.

BERT input: token ids; the word and (position + token-type-0) tables are quantized to 16-bit
codes of one scale and the lookups added as integers. Output: 16-bit codes of the last
hidden states. The sentence embedding sums the codes over the real tokens in integers; only
its L2 normalisation is float (:meth:`IBert.encode_int`; the mean's ``1/count`` and the
per-tensor scale cancel in it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from lowbit.methods.ivit import _kernels, ops
from lowbit.methods.ivit.fake import (
    F64,
    QLayerNorm,
    QLinear,
    QShiftGELU,
    QShiftmax,
    QuantAct,
    qmatmul,
    round_ste,
    sym_quant,
)


@dataclass(frozen=True)
class IViTConfig:
    """Bit widths and operator constants of an I-ViT network (defaults: the authors' repo).

    Attributes:
        weight_bits: per-output-channel symmetric weights (8).
        act_bits: per-tensor activations feeding Linear layers and matmuls (8).
        bias_bits: Linear biases, scale ``S_w·S_in`` (32).
        residual_bits: the residual stream and LayerNorm inputs (the repo's ``QuantAct(16)``).
        softmax_bits: Shiftmax output bits, scale ``1/2^(bits−1)`` (the repo's
            ``IntSoftmax(16)``; the paper's text says 8).
        gelu_bits: bits of ShiftGELU's integer sigmoid (8).
        softmax_n: shift-exp precision of Shiftmax (15).
        gelu_n: shift-exp precision of ShiftGELU (23).
        gelu_symmetric: ShiftGELU's sigmoid without the row max (ours; False = the repo's,
            which breaks on rows with a large maximum, see :func:`ops.shiftgelu`).
        sqrt_iters: Newton steps of I-LayerNorm's integer square root (10 from ``2^16``, as
            the repo); None iterates to convergence (exact ``⌊√var⌋`` for every variance).
        momentum: EMA momentum of the activation ranges (0.95).
    """

    weight_bits: int = 8
    act_bits: int = 8
    bias_bits: int = 32
    residual_bits: int = 16
    softmax_bits: int = 16
    gelu_bits: int = 8
    softmax_n: int = 15
    gelu_n: int = 23
    gelu_symmetric: bool = False
    sqrt_iters: int | None = ops.SQRT_ITERS
    momentum: float = 0.95

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("weight_bits", 2, 16),
            ("act_bits", 2, 8),
            ("bias_bits", 8, 32),
            ("residual_bits", 2, 16),
            ("softmax_bits", 2, 16),
            ("gelu_bits", 2, 16),
            ("softmax_n", 1, 30),
            ("gelu_n", 1, 30),
        ):
            ops._check_bits(getattr(self, name), lo, hi, name)
        if not isinstance(self.gelu_symmetric, bool):
            raise TypeError(f"gelu_symmetric must be a bool, got {self.gelu_symmetric!r}")
        it = self.sqrt_iters
        if it is not None and (isinstance(it, bool) or not isinstance(it, int) or it < 1):
            raise ValueError(f"sqrt_iters={it!r}; accepted: an int >= 1 or None (converge)")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum}; accepted: 0 <= momentum < 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IViTConfig:
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ValueError(f"unknown IViTConfig keys {bad}; accepted: {sorted(names)}")
        return cls(**d)


#: Named configurations: the authors' repo settings, and ours for BERT-like FFNs.
RECIPES: dict[str, dict[str, Any]] = {
    "repo": {},
    "symmetric-gelu": {"gelu_symmetric": True, "gelu_n": 15},
}


def ivit_recipe(name: str = "repo", **changes: Any) -> IViTConfig:
    """A named :class:`IViTConfig`: ``"repo"`` (zkkli/I-ViT's bit widths and operators) or
    ``"symmetric-gelu"`` (the same with the row-max-free ShiftGELU sigmoid, n = 15, which
    BERT's FFN rows need); ``changes`` replace fields."""
    if name not in RECIPES:
        raise ValueError(f"unknown I-ViT recipe {name!r}; accepted: {', '.join(RECIPES)}")
    return IViTConfig(**{**RECIPES[name], **changes})


Emit = Callable[[str, Tensor], Tensor]


class _Tracer:
    """Checks every integer-path tensor (``TypeError`` on a float dtype) and optionally
    records ``name → (dtype, min, max, count)`` (merged over calls, e.g. over layers)."""

    def __init__(self, trace: dict[str, Any] | None) -> None:
        self.trace = trace

    def __call__(self, name: str, t: Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.dtype.is_floating_point or t.dtype.is_complex:
            what = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"integer path: {name} is {what}, not an integer tensor")
        if self.trace is not None and t.numel():
            lo, hi = int(t.min()), int(t.max())
            old = self.trace.get(name)
            if old is not None:
                lo, hi = min(lo, old["min"]), max(hi, old["max"])
            self.trace[name] = {
                "dtype": str(t.dtype).replace("torch.", ""),
                "min": lo,
                "max": hi,
                "count": (old["count"] + 1) if old else 1,
            }
        return t

    def sub(self, prefix: str) -> Emit:
        return lambda name, t: self(f"{prefix}.{name}", t)


def _narrow(t: Tensor, bits: int) -> Tensor:
    """An integer tensor known to hold ``bits``-bit codes, in the narrowest torch dtype (int8
    inputs take the int8 GEMM)."""
    return t.to(torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32)


def _int_tensor(x: Any, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    return t


class _IntModel(nn.Module):
    """Shared bookkeeping: the integer constants are recorded by an eval forward."""

    def __init__(self, config: IViTConfig) -> None:
        super().__init__()
        self.config = config
        self._int_ready = False
        self._recording = False

    def _dummy(self) -> tuple[Any, ...]:  # pragma: no cover - overridden
        raise NotImplementedError

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``; the integer constants are re-recorded on the next
        ``run_int``."""
        self._int_ready = False
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def refresh(self) -> None:
        """Record the integer constants (weights, biases, ``(b, c)``, ``x0``) from the current
        parameters and ranges: one eval forward. ``run_int`` calls it when a training-mode
        forward ran since the last one; call it yourself after editing parameters by hand."""
        was = self.training
        self.eval()
        self._recording = True
        try:
            self(*self._dummy())
        finally:
            self._recording = False
            self.train(was)
        self._int_ready = True

    def _ensure_int(self) -> None:
        if not self._int_ready:
            self.refresh()

    def _mark(self) -> None:
        if self.training:
            self._int_ready = False


def _lin(lin: nn.Linear, cfg: IViTConfig) -> QLinear:
    return QLinear.from_linear(lin, cfg.weight_bits, cfg.bias_bits)


class IViTBlock(nn.Module):
    """One pre-norm ViT block on I-ViT operators (see module doc for the topology)."""

    def __init__(self, blk: nn.Module, cfg: IViTConfig) -> None:
        super().__init__()
        attn = blk.attn
        self.heads = int(attn.heads)
        self.head_dim = int(attn.head_dim)
        self.attn_scale = float(attn.scale)
        ab, rb, m = cfg.act_bits, cfg.residual_bits, cfg.momentum
        self.act_bits = ab
        self.norm1 = QLayerNorm(blk.norm1, cfg.sqrt_iters)
        self.act_norm1 = QuantAct(ab, m)
        self.qkv = _lin(attn.qkv, cfg)
        self.act_qkv = QuantAct(ab, m)
        self.act_score = QuantAct(ab, m)
        self.softmax = QShiftmax(cfg.softmax_bits, cfg.softmax_n)
        self.act_ctx = QuantAct(ab, m)
        self.proj = _lin(attn.proj, cfg)
        self.add_attn = QuantAct(rb, m)
        self.norm2 = QLayerNorm(blk.norm2, cfg.sqrt_iters)
        self.act_norm2 = QuantAct(ab, m)
        fc1, fc2 = blk.mlp[0], blk.mlp[2]
        self.fc1 = _lin(fc1, cfg)
        self.act_fc1 = QuantAct(ab, m)
        self.gelu = QShiftGELU(cfg.gelu_bits, cfg.gelu_n, cfg.gelu_symmetric)
        self.act_gelu = QuantAct(ab, m)
        self.fc2 = _lin(fc2, cfg)
        self.add_mlp = QuantAct(rb, m)

    def _split(self, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = a.shape
        qkv = a.reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = x.shape
        h, sh = self.act_norm1(*self.norm1(x, s))
        a, sa = self.act_qkv(*self.qkv(h, sh))
        q, k, v = self._split(a)
        sc, ssc = qmatmul(q, sa, k.transpose(-2, -1), sa)
        sc, ssc = self.act_score(sc * self.attn_scale, ssc * self.attn_scale)
        p, sp = self.softmax(sc, ssc)
        ctx, sctx = qmatmul(p, sp, v, sa)
        ctx, sctx = self.act_ctx(ctx.transpose(1, 2).reshape(b, n, d), sctx)
        o, so = self.proj(ctx, sctx)
        x, s = self.add_attn(o, so, identity=x, s_id=s)
        h, sh = self.act_norm2(*self.norm2(x, s))
        f, sf = self.act_fc1(*self.fc1(h, sh))
        g, sg = self.act_gelu(*self.gelu(f, sf))
        o, so = self.fc2(g, sg)
        return self.add_mlp(o, so, identity=x, s_id=s)

    def int_forward(self, x: Tensor, emit: Emit) -> Tensor:
        b, n, d = x.shape
        ab = self.act_bits
        h = emit("norm1", self.norm1.int_forward(x))
        h = emit("act_norm1", _narrow(self.act_norm1.int_forward(h), ab))
        a = emit("qkv", self.qkv.int_forward(h))
        a = emit("act_qkv", self.act_qkv.int_forward(a))
        q, k, v = self._split(a)
        q, k, v = (_narrow(t, ab) for t in (q, k, v))
        sc = emit("score", _kernels.matmul(q, k.transpose(-2, -1)))
        sc = emit("act_score", self.act_score.int_forward(sc))
        p = emit("softmax", self.softmax.int_forward(sc))
        ctx = emit("ctx", _kernels.matmul(p, v).transpose(1, 2).reshape(b, n, d))
        ctx = emit("act_ctx", _narrow(self.act_ctx.int_forward(ctx), ab))
        o = emit("proj", self.proj.int_forward(ctx))
        x = emit("add_attn", self.add_attn.int_forward(o, x))
        h = emit("norm2", self.norm2.int_forward(x))
        h = emit("act_norm2", _narrow(self.act_norm2.int_forward(h), ab))
        f = emit("fc1", self.fc1.int_forward(h))
        f = emit("act_fc1", self.act_fc1.int_forward(f))
        g = emit("gelu", self.gelu.int_forward(f))
        g = emit("act_gelu", _narrow(self.act_gelu.int_forward(g), ab))
        o = emit("fc2", self.fc2.int_forward(g))
        return emit("add_mlp", self.add_mlp.int_forward(o, x))


class QPatchEmbed(QLinear):
    """The patch-embedding ``Conv2d`` as a :class:`QLinear` on flattened patches of integer
    pixel codes ``p − offset``, with the data set's normalisation folded in:
    ``W' = W·scale``, ``b' = b + shift·Σ W`` (``scale = 1/(L·std)``, ``shift = (offset/L −
    mean)/std``). The parameters stay the float conv's ``W`` and ``b`` (flattened), so QAT
    moves them at the float model's scale — Adam's steps are scale-free, and on the folded
    ``W'`` (≈ 90× smaller for Fashion-MNIST) the same learning rate is a 90× larger step."""

    def __init__(
        self, conv: nn.Conv2d, *, scale: float, shift: float, w_bits: int = 8, b_bits: int = 32
    ) -> None:
        w = conv.weight.detach()
        b = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
        super().__init__(w.reshape(w.shape[0], -1), b, w_bits, b_bits)
        self.fold_scale = float(scale)
        self.fold_shift = float(shift)

    def effective(self) -> tuple[Tensor, Tensor | None]:
        w = self.weight.to(F64)
        assert self.bias is not None
        return w * self.fold_scale, self.bias.to(F64) + self.fold_shift * w.sum(dim=1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, fold_scale={self.fold_scale:.6g}, "
            f"fold_shift={self.fold_shift:.6g}"
        )


class IViT(_IntModel):
    """I-ViT version of a ``lowbit.models.ViTTiny`` (build with :func:`convert`).

    Args:
        vit: the trained float ViT (its parameters are copied).
        config: bit widths (:class:`IViTConfig`).
        input_mean, input_std: the normalisation the float model was trained with,
            ``x = (p/L − mean)/std`` (``DataSplits.mean``/``.std``).
        pixel_levels: ``L``, the largest pixel code (255).
    """

    def __init__(
        self,
        vit: nn.Module,
        config: IViTConfig | None = None,
        *,
        input_mean: float = 0.0,
        input_std: float = 1.0,
        pixel_levels: int = 255,
    ) -> None:
        super().__init__(config or IViTConfig())
        cfg = self.config
        conv = vit.patch_embed
        if (
            not isinstance(conv, nn.Conv2d)
            or conv.kernel_size != conv.stride
            or conv.padding not in (0, (0, 0))
            or conv.kernel_size[0] != conv.kernel_size[1]
        ):
            raise ValueError(
                "IViT: patch_embed must be a Conv2d with square kernel = stride and no padding"
            )
        if not (input_std > 0 and math.isfinite(input_std) and math.isfinite(input_mean)):
            raise ValueError(f"input_std={input_std} must be positive and finite")
        if (
            isinstance(pixel_levels, bool)
            or not isinstance(pixel_levels, int)
            or not 1 <= pixel_levels <= 255
        ):
            raise ValueError(f"pixel_levels={pixel_levels!r}; accepted: an int in 1..255")
        self.patch_size = int(conv.kernel_size[0])
        self.in_channels = int(conv.in_channels)
        self.num_patches = int(vit.pos_embed.shape[1])
        self.grid = math.isqrt(self.num_patches)
        self.image_size = self.grid * self.patch_size
        self.input_mean, self.input_std = float(input_mean), float(input_std)
        self.pixel_levels = pixel_levels
        self.pixel_offset = (pixel_levels + 1) // 2
        self.patch = QPatchEmbed(
            conv,
            scale=1.0 / (pixel_levels * self.input_std),
            shift=(self.pixel_offset / pixel_levels - self.input_mean) / self.input_std,
            w_bits=cfg.weight_bits,
            b_bits=cfg.bias_bits,
        )
        self.pos_embed = nn.Parameter(vit.pos_embed.detach().clone().float())
        self.add_pos = QuantAct(cfg.residual_bits, cfg.momentum)
        self.blocks = nn.ModuleList(IViTBlock(blk, cfg) for blk in vit.blocks)
        self.norm = QLayerNorm(vit.norm, cfg.sqrt_iters)
        self.act_norm = QuantAct(cfg.act_bits, cfg.momentum)
        self.head = _lin(vit.head, cfg)
        self.act_out = QuantAct(cfg.residual_bits, cfg.momentum)
        self.pos_int: Tensor | None = None

    # -- inputs ---------------------------------------------------------------------------------
    def pixel_codes(self, images: Any) -> Tensor:
        """The integer input ``p − offset`` (int64) of uint8 pixel codes ``p``, or of images
        normalised as the float model saw them (``p`` is recovered by rounding)."""
        t = torch.as_tensor(images)
        if t.dtype.is_floating_point:
            lv = self.pixel_levels
            p = torch.round(t.to(F64) * (self.input_std * lv) + self.input_mean * lv)
            return p.clamp(0, lv).to(torch.int64) - self.pixel_offset
        t = _int_tensor(t, "images")
        return t.to(torch.int64) - self.pixel_offset

    def _patches(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) → (B, N, C·p·p)``, the order of ``Conv2d`` weights and tokens."""
        b, c, h, w = x.shape
        if c != self.in_channels or h != self.image_size or w != self.image_size:
            raise ValueError(
                f"images must be (B, {self.in_channels}, {self.image_size}, "
                f"{self.image_size}), got {tuple(x.shape)}"
            )
        p, g = self.patch_size, self.grid
        x = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    def _pos(self) -> tuple[Tensor, Tensor]:
        rb = self.config.residual_bits
        pos = self.pos_embed.to(F64)
        s = ops.symmetric_scale(pos.detach().min(), pos.detach().max(), rb)
        codes = sym_quant(pos, s, rb)
        self.pos_int = codes.detach().to(torch.int64)
        return codes * s, s

    def _dummy(self) -> tuple[Any, ...]:
        z = torch.zeros(1, self.in_channels, self.image_size, self.image_size, dtype=torch.uint8)
        return (z.to(self.pos_embed.device),)

    # -- fake-quant path ------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """Logits (float64) of the fake-quant graph: 16-bit codes × :attr:`output_scale`."""
        self._mark()
        x = self._patches(self.pixel_codes(images).to(F64).to(self.pos_embed.device))
        one = torch.ones((), dtype=F64, device=x.device)
        a, sa = self.patch(x, one)
        pos, s_pos = self._pos()
        x, s = self.add_pos(a, sa, identity=pos, s_id=s_pos)
        for blk in self.blocks:
            x, s = blk(x, s)
        h, sh = self.act_norm(*self.norm(x, s))
        s_pool = sh / h.shape[1]
        pooled = round_ste(h / sh).sum(dim=1)
        lo, sl = self.head(pooled * s_pool, s_pool)
        out, _ = self.act_out(lo, sl)
        return out

    @property
    def output_scale(self) -> float:
        """Real value of one step of the logit codes ``run_int`` returns."""
        return float(self.act_out.scale)

    # -- integer path ---------------------------------------------------------------------------
    @torch.no_grad()
    def run_int(self, images: Any, trace: dict[str, Any] | None = None) -> Tensor:
        """Integer-only inference: uint8 pixel codes ``(B, C, H, W)`` → int64 logit codes
        ``(B, classes)`` (real logits = codes × :attr:`output_scale`).

        Args:
            images: uint8 (any integer dtype) pixel codes, numpy or torch.
            trace: a dict to fill with every intermediate's dtype and integer range.

        Raises:
            TypeError: ``images`` is a float array (normalised images go to ``forward``).
        """
        self._ensure_int()
        emit = _Tracer(trace)
        t = _int_tensor(images, "images").to(self.pos_embed.device)
        x = emit("input", self._patches(self.pixel_codes(t)))
        x = emit("patches", _narrow(x, 8))
        a = emit("patch_embed", self.patch.int_forward(x))
        assert self.pos_int is not None
        x = emit("add_pos", self.add_pos.int_forward(a, emit("pos_embed", self.pos_int)))
        for i, blk in enumerate(self.blocks):
            x = blk.int_forward(x, emit.sub(f"blocks.{i}"))
        h = emit("norm", self.norm.int_forward(x))
        h = emit("act_norm", self.act_norm.int_forward(h))
        pooled = emit("pool_sum", h.sum(dim=1))
        lo = emit("head", self.head.int_forward(pooled))
        return emit("logits", self.act_out.int_forward(lo)).to(torch.int64)

    @torch.no_grad()
    def predict_int(self, images: Any, batch_size: int = 256) -> Tensor:
        """Class indices from the integer path (argmax of integer logit codes), batched."""
        t = torch.as_tensor(images)
        outs = [
            self.run_int(t[i : i + batch_size]).argmax(dim=1)
            for i in range(0, t.shape[0], batch_size)
        ]
        return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.int64)


# ---- BERT ---------------------------------------------------------------------------------------


class IBertLayer(nn.Module):
    """One post-norm BERT layer on I-ViT operators.

    ``forward(x16, s16, x8, s8, mask)``: ``x16`` is the 16-bit residual copy of the previous
    LayerNorm's output, ``x8`` its 8-bit copy for the Linear layers; returns the same pair for
    this layer's output.
    """

    def __init__(self, layer: nn.Module, cfg: IViTConfig) -> None:
        super().__init__()
        sa = layer.attention.self
        self.heads = int(sa.heads)
        self.head_dim = int(sa.head_dim)
        self.attn_scale = 1.0 / math.sqrt(self.head_dim)
        ab, rb, m = cfg.act_bits, cfg.residual_bits, cfg.momentum
        self.act_bits, self.residual_bits = ab, rb
        self.query, self.key, self.value = (
            _lin(sa.query, cfg),
            _lin(sa.key, cfg),
            _lin(sa.value, cfg),
        )
        self.act_q, self.act_k, self.act_v = QuantAct(ab, m), QuantAct(ab, m), QuantAct(ab, m)
        self.act_score = QuantAct(ab, m)
        self.softmax = QShiftmax(cfg.softmax_bits, cfg.softmax_n)
        self.act_ctx = QuantAct(ab, m)
        self.dense = _lin(layer.attention.output.dense, cfg)
        self.add_attn = QuantAct(rb, m)
        self.ln_attn = QLayerNorm(layer.attention.output.LayerNorm, cfg.sqrt_iters)
        self.act_attn16, self.act_attn8 = QuantAct(rb, m), QuantAct(ab, m)
        self.fc1 = _lin(layer.intermediate.dense, cfg)
        self.act_fc1 = QuantAct(ab, m)
        self.gelu = QShiftGELU(cfg.gelu_bits, cfg.gelu_n, cfg.gelu_symmetric)
        self.act_gelu = QuantAct(ab, m)
        self.fc2 = _lin(layer.output.dense, cfg)
        self.add_ffn = QuantAct(rb, m)
        self.ln_ffn = QLayerNorm(layer.output.LayerNorm, cfg.sqrt_iters)
        self.act_out16, self.act_out8 = QuantAct(rb, m), QuantAct(ab, m)

    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x16: Tensor, s16: Tensor, x8: Tensor, s8: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b, n, d = x16.shape
        q, sq = self.act_q(*self.query(x8, s8))
        k, sk = self.act_k(*self.key(x8, s8))
        v, sv = self.act_v(*self.value(x8, s8))
        sc, ssc = qmatmul(self._split(q), sq, self._split(k).transpose(-1, -2), sk)
        sc, ssc = self.act_score(sc * self.attn_scale, ssc * self.attn_scale)
        p, sp = self.softmax(sc, ssc, mask)
        ctx, sctx = qmatmul(p, sp, self._split(v), sv)
        ctx, sctx = self.act_ctx(ctx.transpose(1, 2).reshape(b, n, d), sctx)
        o, so = self.dense(ctx, sctx)
        h, sh = self.add_attn(o, so, identity=x16, s_id=s16)
        a, sa = self.ln_attn(h, sh)
        a16, sa16 = self.act_attn16(a, sa)
        a8, sa8 = self.act_attn8(a, sa)
        f, sf = self.act_fc1(*self.fc1(a8, sa8))
        g, sg = self.act_gelu(*self.gelu(f, sf))
        o, so = self.fc2(g, sg)
        h, sh = self.add_ffn(o, so, identity=a16, s_id=sa16)
        y, sy = self.ln_ffn(h, sh)
        return (*self.act_out16(y, sy), *self.act_out8(y, sy))

    def int_forward(
        self, x16: Tensor, x8: Tensor, mask: Tensor, emit: Emit
    ) -> tuple[Tensor, Tensor]:
        b, n, d = x16.shape
        ab = self.act_bits
        q = emit("act_q", self.act_q.int_forward(emit("query", self.query.int_forward(x8))))
        k = emit("act_k", self.act_k.int_forward(emit("key", self.key.int_forward(x8))))
        v = emit("act_v", self.act_v.int_forward(emit("value", self.value.int_forward(x8))))
        q, k, v = (self._split(_narrow(t, ab)) for t in (q, k, v))
        sc = emit("score", _kernels.matmul(q, k.transpose(-1, -2)))
        sc = emit("act_score", self.act_score.int_forward(sc))
        p = emit("softmax", self.softmax.int_forward(sc, mask))
        ctx = emit("ctx", _kernels.matmul(p, v).transpose(1, 2).reshape(b, n, d))
        ctx = emit("act_ctx", _narrow(self.act_ctx.int_forward(ctx), ab))
        o = emit("dense", self.dense.int_forward(ctx))
        h = emit("add_attn", self.add_attn.int_forward(o, x16))
        a = emit("ln_attn", self.ln_attn.int_forward(h))
        a16 = emit("act_attn16", self.act_attn16.int_forward(a))
        a8 = emit("act_attn8", _narrow(self.act_attn8.int_forward(a), ab))
        f = emit("act_fc1", self.act_fc1.int_forward(emit("fc1", self.fc1.int_forward(a8))))
        g = emit("gelu", self.gelu.int_forward(f))
        g = emit("act_gelu", _narrow(self.act_gelu.int_forward(g), ab))
        o = emit("fc2", self.fc2.int_forward(g))
        h = emit("add_ffn", self.add_ffn.int_forward(o, a16))
        y = emit("ln_ffn", self.ln_ffn.int_forward(h))
        return (
            emit("act_out16", self.act_out16.int_forward(y)),
            emit("act_out8", _narrow(self.act_out8.int_forward(y), ab)),
        )


class IBert(_IntModel):
    """I-ViT operators on a BERT encoder (``lowbit.models.minilm.MiniLM``; build with
    :func:`convert`). ``forward(input_ids, attention_mask)`` returns the last hidden states
    (float64 codes × scale); :meth:`run_int` the int64 codes; :meth:`encode_int` and
    :meth:`encode_fake` the L2-normalised mean-pooled sentence embeddings."""

    def __init__(self, bert: nn.Module, config: IViTConfig | None = None) -> None:
        super().__init__(config or IViTConfig())
        cfg = self.config
        emb = bert.embeddings
        rb, ab, m = cfg.residual_bits, cfg.act_bits, cfg.momentum
        self.word = nn.Parameter(emb.word_embeddings.weight.detach().clone().float())
        tt = emb.token_type_embeddings.weight.detach()[0]
        self.pos = nn.Parameter((emb.position_embeddings.weight.detach() + tt).clone().float())
        self.act_emb = QuantAct(rb, m)
        self.ln_emb = QLayerNorm(emb.LayerNorm, cfg.sqrt_iters)
        self.act_emb16, self.act_emb8 = QuantAct(rb, m), QuantAct(ab, m)
        self.layers = nn.ModuleList(IBertLayer(layer, cfg) for layer in bert.encoder.layer)
        self._tokenize = getattr(bert, "tokenize", None)
        self.word_int: Tensor | None = None
        self.pos_int: Tensor | None = None

    def _dummy(self) -> tuple[Any, ...]:
        ids = torch.zeros(1, 2, dtype=torch.int64, device=self.word.device)
        return ids, torch.ones_like(ids)

    @staticmethod
    def _mask(attention_mask: Tensor | None, ids: Tensor) -> Tensor:
        m = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
        return (m != 0)[:, None, None, :].to(ids.device)

    def _embed(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        rb = self.config.residual_bits
        lo, hi = ops.signed_range(rb)
        n = ids.shape[1]
        word, pos = self.word[ids].to(F64), self.pos[:n].to(F64)
        if self.training:
            self.act_emb._observe((word + pos).detach())
        s = self.act_emb.scale.to(ids.device)
        codes = (sym_quant(word, s, rb) + sym_quant(pos, s, rb)).clamp(lo, hi)
        if self._recording:
            with torch.no_grad():
                self.word_int = _narrow(sym_quant(self.word, s, rb).to(torch.int64), rb)
                self.pos_int = _narrow(sym_quant(self.pos, s, rb).to(torch.int64), rb)
        return codes * s, s

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Last hidden states ``(B, N, H)`` of the fake-quant graph (16-bit codes × scale)."""
        self._mark()
        ids = _int_tensor(input_ids, "input_ids").to(self.word.device).long()
        mask = self._mask(attention_mask, ids)
        e, se = self._embed(ids)
        y, sy = self.ln_emb(e, se)
        x16, s16 = self.act_emb16(y, sy)
        x8, s8 = self.act_emb8(y, sy)
        for layer in self.layers:
            x16, s16, x8, s8 = layer(x16, s16, x8, s8, mask)
        return x16

    @property
    def output_scale(self) -> float:
        """Real value of one step of the hidden-state codes ``run_int`` returns."""
        return float(self.layers[-1].act_out16.scale)

    @torch.no_grad()
    def run_int(
        self, input_ids: Any, attention_mask: Any = None, trace: dict[str, Any] | None = None
    ) -> Tensor:
        """Integer-only encoder: token ids ``(B, N)`` → int64 16-bit hidden codes
        ``(B, N, H)`` (real values = codes × :attr:`output_scale`)."""
        self._ensure_int()
        emit = _Tracer(trace)
        ids = _int_tensor(input_ids, "input_ids").to(self.word.device).long()
        mask = self._mask(attention_mask, ids)
        assert self.word_int is not None and self.pos_int is not None
        lo, hi = ops.signed_range(self.config.residual_bits)
        e = emit(
            "embed", (self.word_int[ids].long() + self.pos_int[: ids.shape[1]].long()).clamp(lo, hi)
        )
        y = emit("ln_emb", self.ln_emb.int_forward(e))
        x16 = emit("act_emb16", self.act_emb16.int_forward(y))
        x8 = emit("act_emb8", _narrow(self.act_emb8.int_forward(y), self.config.act_bits))
        for i, layer in enumerate(self.layers):
            x16, x8 = layer.int_forward(x16, x8, mask, emit.sub(f"layers.{i}"))
        return x16.to(torch.int64)

    @staticmethod
    def pool_int(codes: Tensor, attention_mask: Any) -> Tensor:
        """Integer sums of the hidden codes over the real tokens ``(B, H)``."""
        m = torch.as_tensor(attention_mask).to(codes.device).long()
        return (codes * m[..., None]).sum(dim=1)

    def _batches(
        self,
        texts: Sequence[str],
        batch_size: int,
        max_length: int,
        progress: bool,
        fn: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        if self._tokenize is None:
            raise ValueError("this IBert has no tokenizer (convert a MiniLM from load_minilm())")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.word.shape[1], dtype=F64)
        starts: Any = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encode", unit="batch")
        for s in starts:
            idx = order[s : s + batch_size]
            ids, mask = self._tokenize([texts[i] for i in idx], max_length)
            out[idx] = fn(ids, mask).to(F64).cpu()
        return out

    def encode_int(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        max_length: int = 128,
        progress: bool = False,
    ) -> Tensor:
        """Sentence embeddings from the integer path: integer token sums, then float division
        by their L2 norm (the mean's ``1/count`` and the scale cancel)."""

        def fn(ids: Tensor, mask: Tensor) -> Tensor:
            pooled = self.pool_int(self.run_int(ids, mask), mask).to(F64)
            return pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-300)

        return self._batches(texts, batch_size, max_length, progress, fn)

    @torch.no_grad()
    def encode_fake(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        max_length: int = 128,
        progress: bool = False,
    ) -> Tensor:
        """Sentence embeddings from the fake-quant graph (mean over real tokens, L2 norm)."""

        def fn(ids: Tensor, mask: Tensor) -> Tensor:
            h = self(ids, mask)
            m = mask.to(h.device)[..., None].to(F64)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            return pooled / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-300)

        return self._batches(texts, batch_size, max_length, progress, fn)


__all__ = [
    "RECIPES",
    "IBert",
    "IBertLayer",
    "IViT",
    "IViTBlock",
    "IViTConfig",
    "QPatchEmbed",
    "ivit_recipe",
]
