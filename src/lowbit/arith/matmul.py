"""``lowbit.matmul`` / ``lowbit.dot``: matrix products with emulated multiplier, accumulator, order.

Semantics (what the reference below computes, and the numba kernel reproduces bit for bit)
------------------------------------------------------------------------------------------
For ``C = matmul(A, B)`` with A of shape (..., M, K) and B of shape (..., K, N) (batch dims
broadcast as in ``np.matmul``; a 1-D A is a row, a 1-D B a column, removed afterwards):

1. **Operands.** With ``mult`` set, A and B are rounded elementwise to ``mult`` once
   (``mult_mode``; RNE by default) — the multiplier's input format. ``mult=None`` uses the
   operands' values as given (fp16/bf16/fp32 arrays, or float64 arrays holding any values).
   ``mult="lmulN"`` (N = 1..23) is the L-Mul multiplier (:mod:`lowbit.arith.approx`): the
   operands are rounded to ``FloatFormat(8, N)`` (``mult_mode``) and subnormal results flushed
   to ±0.
2. **Products.** Each term ``t_k = a_ik * b_kj`` is exact when ``prod=None`` (the tensor-core
   model: fp8/bf16/fp16/fp32 products are exact in float64; float64 operands give an exact
   double-double pair from Dekker's ``two_prod``), else rounded once to ``prod``
   (``prod_mode``). With ``mult="lmulN"`` the product is the L-Mul product
   ``lowbit.arith.approx.lmul(a, b, N)`` (carry form: integer addition of the bit fields;
   below 2^-126 it is ±0, from 2^128 ±inf), an e8mN number, then treated as an exact
   product (``prod`` rounding and every order/accumulator apply unchanged).
3. **Accumulation** into ``acc`` (``acc_mode``); ``acc=None`` means float64 with RNE. Every
   rounding is one correct rounding of an exact value (error-free transformations from
   :mod:`lowbit.arith.eft` and round-to-odd, see below). The accumulator starts empty: its
   first contribution is rounded on its own, not added to a zero.

   * ``order="sequential"``: ``c = round(t_0)``, then ``c = round(c + t_k)`` for k = 1..K-1.
     ``fma=True`` names the case where the product is not rounded separately (it requires
     ``prod=None``, and is then what ``fma=False, prod=None`` computes too).
   * ``order="pairwise"``: a balanced tree pairing neighbours level by level (an odd last
     element moves up unpaired); every internal node is ``round(left + right)`` — a single
     rounding of the exact sum of its two children (a leaf is an exact or ``prod``-rounded
     product). K = 1 gives ``round(t_0)``.
   * ``order="blocked"`` with ``block_k``: terms are taken in groups of ``block_k`` whose sum
     is computed **exactly**. With ``fma=False`` (the tensor-core model of NVIDIA's fp8 path:
     partial sums promoted into an fp32 accumulator) the group sum is rounded to ``acc`` once
     and then added to the running accumulator with a second rounding,
     ``c = round(c + round(sum_g))``. With ``fma=True`` (a "block FMA": the accumulator joins
     the exact sum) it is one rounding per group, ``c = round(c + sum_g)``.
   * ``acc="quire"`` (a Kulisch accumulator, as posit hardware has): the K terms are summed
     **exactly** and the exact sum is rounded once, to ``out`` in ``out_mode`` (a float,
     posit or fixed-point format; ``out=None``: float64 RNE). No order, ``block_k``, ``fma``
     or ``acc_mode`` applies. The kernel bins every term by exponent range with error-free
     extractions and sums each bin exactly in float64 (plan and proof in :func:`quire_plan`),
     then rounds the exact sum of the bins to float64 by round-to-odd; a column with
     non-finite terms is summed by Shewchuk's expansion instead. Rounding that round-to-odd
     value once more gives the correctly rounded exact sum for every format whose values
     and rounding boundaries (midpoints, posit regime/exponent cut points, saturation
     bounds) have at most 52 significant bits: the round-to-odd value lies strictly between
     the same two such numbers as the exact sum, or equals it (Boldo & Melquiond 2008) —
     so ``out`` may have at most 51 significant bits; stochastic ``out_mode`` needs
     p + rand_bits <= 52 and is not offered for posits.
4. **Output.** With ``out`` set, each accumulator is rounded once to ``out`` (``out_mode``).

Signed zeros follow IEEE 754 §6.3, generalised to several terms: an exact zero sum is −0 when
every term is −0, or under RD unless every term is +0; otherwise +0. An exact sum with a NaN,
or with +inf and −inf, is NaN; with one kind of infinity, that infinity. NaN results are the
canonical quiet NaN.

Stochastic rounding draws come from the counter-based hash of :mod:`lowbit.kernels.randbits`,
so they are reproducible for a given ``seed`` on every backend and independent of threading.
Each stage has its own stream ``seed_s = stream_seed(seed, s)`` (:func:`stream_seed`) and a
draw index; with ``n_out`` the number of output elements and ``o`` the flat C-order index of
the output element (batch included):

=========== ====== ===================================================================
stage       stream index
=========== ====== ===================================================================
mult A, B   1, 2   flat index of the operand element (before broadcasting)
prod        3      ``k * n_out + o``
acc         4      ``step * n_out + o``: sequential step = k; pairwise step = m - 1 for the
                   node whose right child starts at term m (0 for K = 1); blocked step = g
                   (``fma=True``) or 2g for the group rounding and 2g + 1 for the addition
out         5      ``o``
=========== ====== ===================================================================

Exactness. Two-term sums are ``two_sum`` then round-to-odd to float64 (``odd53``); sums of
more terms use Shewchuk's expansion (``math.fsum``) for the correctly rounded value plus the
sign of the exact residual. Rounding the round-to-odd float64 to a format of precision
p <= 51 gives the correctly rounded result in every deterministic mode (Boldo & Melquiond,
IEEE TC 2008), so ``prod``/``acc`` formats may have at most 50 mantissa bits; ``"fp64"``
(or ``None``) is the exception, with RNE only. Stochastic ``sr``/``sr_bits`` need
p + rand_bits <= 52; ``rand_bits=None`` picks ``min(32, 52 - p)`` per stage.
Products of values with at most 26 significant bits in [2^-500, 2^500] (every fp32, bf16,
fp16, fp8 value) are exact in float64. For general float64 operands (``mult=None``) the product
is the exact pair of Dekker's ``two_prod``, exact unless |a·b| < 2^-969 (underflow of the low
part) or |a|, |b| > 2^995 (overflow of the splitting); such operands are outside what this
module guarantees.

Backends: numpy; torch (CPU or any device, computed on the host) with autograd; jax through
``jax.pure_callback`` on the host with a ``jax.custom_vjp``. The backward of ``C = A @ B`` is
``grad_A = G @ B'ᵀ`` and ``grad_B = A'ᵀ @ G`` computed by this same emulated matmul with the
``bwd`` configuration (default: the forward one), where A', B' are the operands after the
``mult`` rounding (the straight-through estimator: the rounding's derivative is taken as 1).
Gradients over broadcast batch dimensions are then summed in float64 and cast to the operand's
dtype.

Implementations (``impl=``): ``"auto"``/``"kernel"`` run the numba kernels of
:mod:`lowbit.kernels.matmul_numba` (parallel over output rows, vectorized over columns, cache
blocked; compiled on first use and cached on disk; ``acc="quire"`` runs the binned exact sum
``gemm_quire``); ``"reference"`` runs :func:`gemm_reference`, a plain loop over k vectorized
over the outputs (the quire: every term, then Shewchuk's exact sum per output). The two are
bit-identical (tests hold them to zero tolerance, NaN made canonical). With few columns
(matrix-vector products) the kernel works on the transposed problem; float32/float16/bfloat16
operands are read as float32 without a float64 copy, and the result is stored in the operands'
dtype when it holds the result format.

Note: ``lowbit.arith`` exports the function ``matmul``, which hides this module's name as an
attribute of the package; import the module's other names with
``from lowbit.arith.matmul import ...`` (or ``importlib.import_module``).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import ml_dtypes
import numpy as np

from lowbit.arith import context as _context
from lowbit.arith.eft import odd53, two_prod, two_sum
from lowbit.formats import FloatFormat, Format, PositFormat, get_element_format
from lowbit.kernels.randbits import seed_keys
from lowbit.rounding.api import round as _round
from lowbit.rounding.backend import backend_of as _backend
from lowbit.rounding.modes import RoundMode, as_mode

ORDERS = ("sequential", "pairwise", "blocked")
QUIRE = "quire"  # acc="quire": exact accumulation, one rounding (to out)
_LMUL_RE = re.compile(r"lmul([0-9]+)")
_TINY32 = 2.0**-126  # L-Mul operands below this are flushed to zero
_MAX_BINS = 40
IMPLS = ("auto", "kernel", "reference")
MAX_MAN_BITS = 50  # prod/acc formats: p <= 51 for the round-to-odd bridge
_MODE_IDS = {m: i for i, m in enumerate(RoundMode)}
_FMT_FIELDS = ("mult", "prod", "acc", "out")
_MODE_FIELDS = ("mult_mode", "prod_mode", "acc_mode", "out_mode")
_BF16 = np.dtype(ml_dtypes.bfloat16)
_FLOAT_DTYPES = (np.dtype(np.float16), _BF16, np.dtype(np.float32), np.dtype(np.float64))
_JB = 512  # column chunk of the kernels (accumulators and products stay in L1)

FormatLike = str | Format


class _Unset:
    """Marker for "keyword not given" (so that ``None`` can override a preset)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


# =============================================================================================
# configuration
# =============================================================================================
def _is_fp64(f: Format) -> bool:
    return (
        isinstance(f, FloatFormat)
        and f.exp_bits == 11
        and f.man_bits == 52
        and f.bias == 1023
        and f.special == "ieee"
        and f.signed
        and f.has_zero
    )


def _norm_format(value: Any, what: str) -> FormatLike | None:
    """A format field as stored: None, the canonical name, or the object when no name fits."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = FloatFormat(**value)
    try:
        f = get_element_format(value)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{what}: {err}") from None
    try:
        if get_element_format(f.name) == f:
            return f.name
    except (ValueError, TypeError):
        pass
    return f


def _parse_lmul(value: str) -> int:
    """N of a multiplier name ``"lmulN"`` (1 <= N <= 23)."""
    m = _LMUL_RE.fullmatch(value.strip().lower())
    n = int(m.group(1)) if m else 0
    if not 1 <= n <= 23:
        raise ValueError(
            f"mult={value!r}; L-Mul multipliers are 'lmul1' .. 'lmul23' (operands "
            "rounded to e8mN, products by integer addition)"
        )
    return n


def lmul_bits(cfg: GemmConfig) -> int | None:
    """N when ``cfg.mult`` is the L-Mul multiplier ``"lmulN"``, else None."""
    m = cfg.mult
    return int(m[4:]) if isinstance(m, str) and m.startswith("lmul") else None


def _out_precision(f: Format) -> int:
    """Largest number of significant bits of a value of an output format."""
    if isinstance(f, FloatFormat):
        return f.precision
    if isinstance(f, PositFormat):
        return max(f.n - 2 - f.es, 1)
    return int(f.bits)


def _accum_format(value: FormatLike | None, what: str) -> FloatFormat | None:
    """Validate a ``prod``/``acc`` format; ``None`` stands for float64 (native RNE)."""
    if value is None:
        return None
    f = get_element_format(value)
    if not isinstance(f, FloatFormat):
        raise ValueError(
            f"{what}={f.name!r}: products and accumulators must be float formats "
            f"(posit/fixed-point grids are available for mult= and out=)"
        )
    if _is_fp64(f):
        return None
    if not f.signed or not f.has_zero:
        raise ValueError(f"{what}={f.name!r}: an accumulator format needs a sign and a zero")
    if f.man_bits > MAX_MAN_BITS:
        raise ValueError(
            f"{what}={f.name!r} has {f.man_bits} mantissa bits; at most "
            f"{MAX_MAN_BITS} are supported (or 'fp64' with RNE)"
        )
    if f.emin - f.man_bits < -1074 or f.emax > 1023:
        raise ValueError(f"{what}={f.name!r}: its values are not all float64 numbers")
    return f


@dataclass(frozen=True)
class GemmConfig:
    """The arithmetic of one emulated matrix product (see the module docstring).

    Attributes:
        mult: format the operands are rounded to before multiplying (``None``: as given), or
            ``"lmulN"``: L-Mul products of operands rounded to e8mN.
        mult_mode: rounding mode of the operand rounding.
        prod: format each product is rounded to (``None``: exact products).
        prod_mode: rounding mode of the products.
        acc: accumulator format (``None`` or ``"fp64"``: float64, RNE), or ``"quire"``: the
            exact sum, rounded once to ``out``.
        acc_mode: rounding mode of every accumulation step (any :class:`RoundMode`).
        order: ``"sequential"``, ``"pairwise"`` or ``"blocked"``; ``None`` picks
            ``"blocked"`` when ``block_k`` is given, else ``"sequential"``.
        block_k: group size of ``order="blocked"`` (groups are summed exactly).
        fma: sequential: the product is not rounded on its own (needs ``prod=None``);
            blocked: the accumulator joins the exact group sum (one rounding per group).
        out: format of the result (rounded once at the end; ``None``: left in ``acc``).
        out_mode: rounding mode of the final rounding.
        overflow: ``None`` (each format's default: inf for IEEE formats, NaN for OCP fp8) or
            ``"saturate"`` (every rounding clamps to ±max).
        rand_bits: random bits of stochastic modes (``None``: 32, or ``52 - p`` when a
            ``prod``/``acc`` format of precision p needs fewer; required for ``sr_bits``).
    """

    mult: FormatLike | None = None
    mult_mode: str = "rne"
    prod: FormatLike | None = None
    prod_mode: str = "rne"
    acc: FormatLike | None = None
    acc_mode: str = "rne"
    order: str | None = None
    block_k: int | None = None
    fma: bool = False
    out: FormatLike | None = None
    out_mode: str = "rne"
    overflow: str | None = None
    rand_bits: int | None = None

    def __post_init__(self) -> None:
        for name in _FMT_FIELDS:
            v = getattr(self, name)
            if name == "mult" and isinstance(v, str) and v.strip().lower().startswith("lmul"):
                object.__setattr__(self, name, f"lmul{_parse_lmul(v)}")
                continue
            if name == "acc" and isinstance(v, str) and v.strip().lower() == QUIRE:
                object.__setattr__(self, name, QUIRE)
                continue
            object.__setattr__(self, name, _norm_format(v, name))
        for name in _MODE_FIELDS:
            object.__setattr__(self, name, as_mode(getattr(self, name)).value)
        if self.block_k is not None:
            if isinstance(self.block_k, bool) or not isinstance(self.block_k, (int, np.integer)):
                raise TypeError(f"block_k must be an int, got {self.block_k!r}")
            if self.block_k < 1:
                raise ValueError(f"block_k must be >= 1, got {self.block_k}")
            object.__setattr__(self, "block_k", int(self.block_k))
        order = self.order
        if order is None:
            order = "blocked" if self.block_k is not None else "sequential"
            object.__setattr__(self, "order", order)
        if order not in ORDERS:
            raise ValueError(f"order={order!r}; accepted: {', '.join(ORDERS)}")
        if order == "blocked" and self.block_k is None:
            raise ValueError("order='blocked' needs block_k (e.g. block_k=32)")
        if order != "blocked" and self.block_k is not None:
            raise ValueError(
                f"block_k={self.block_k} is only meaningful with order='blocked' "
                f"(got order={order!r})"
            )
        if not isinstance(self.fma, (bool, np.bool_)):
            raise TypeError(f"fma must be a bool, got {self.fma!r}")
        object.__setattr__(self, "fma", bool(self.fma))
        if self.fma and order == "pairwise":
            raise ValueError(
                "fma=True has no meaning for order='pairwise' (every node adds two "
                "sums); use order='sequential' or 'blocked'"
            )
        if self.fma and self.prod is not None:
            raise ValueError(
                f"fma=True keeps each product exact; it cannot be combined with prod={self.prod!r}"
            )
        if self.overflow not in (None, "saturate"):
            raise ValueError(
                f"overflow={self.overflow!r}; accepted: None (each format's default) or 'saturate'"
            )
        if self.rand_bits is not None:
            if isinstance(self.rand_bits, bool) or not isinstance(
                self.rand_bits, (int, np.integer)
            ):
                raise TypeError(f"rand_bits must be an int, got {self.rand_bits!r}")
            if not 1 <= self.rand_bits <= 32:
                raise ValueError(f"rand_bits={self.rand_bits} is out of range; accepted: 1..32")
            object.__setattr__(self, "rand_bits", int(self.rand_bits))
        if self.acc == QUIRE:
            self._check_quire()
        for fname, mname in (("prod", "prod_mode"), ("acc", "acc_mode")):
            if fname == "acc" and self.acc == QUIRE:
                continue
            f = _accum_format(getattr(self, fname), fname)
            mode = as_mode(getattr(self, mname))
            if f is None:
                if fname == "acc" and mode is not RoundMode.RNE:
                    raise ValueError(
                        f"acc=None/'fp64' accumulates in float64 with RNE only; "
                        f"got acc_mode={mode.value!r} (pick an acc format)"
                    )
                if (
                    fname == "prod"
                    and getattr(self, fname) is not None
                    and mode is not RoundMode.RNE
                ):
                    raise ValueError(f"prod='fp64' supports RNE only; got {mode.value!r}")
                continue
            self._stage_rand_bits(f, mode, fname)
        for mname in ("mult_mode", "out_mode"):
            if as_mode(getattr(self, mname)) is RoundMode.SR_BITS and self.rand_bits is None:
                raise ValueError(f"{mname}='sr_bits' needs rand_bits")

    def _check_quire(self) -> None:
        """acc='quire': no order, no accumulator mode; the one rounding (to out) must be
        exact through the round-to-odd float64 of the exact sum."""
        if self.order != "sequential" or self.block_k is not None or self.fma:
            raise ValueError(
                "acc='quire' sums every product exactly (no order): leave order, "
                f"block_k and fma unset (got order={self.order!r}, "
                f"block_k={self.block_k!r}, fma={self.fma!r})"
            )
        if as_mode(self.acc_mode) is not RoundMode.RNE:
            raise ValueError(
                f"acc='quire' has no rounding of its own; got "
                f"acc_mode={self.acc_mode!r} (the one rounding is out_mode)"
            )
        if self.out is None:
            if as_mode(self.out_mode) is not RoundMode.RNE:
                raise ValueError(
                    "acc='quire' with out=None rounds the exact sum to float64 "
                    f"with RNE only; got out_mode={self.out_mode!r} (set out)"
                )
            return
        f = get_element_format(self.out)
        mode = as_mode(self.out_mode)
        if _is_fp64(f):
            if mode is not RoundMode.RNE:
                raise ValueError(f"out='fp64' supports RNE only; got {mode.value!r}")
            return
        p = _out_precision(f)
        if p > MAX_MAN_BITS + 1:
            raise ValueError(
                f"out={f.name!r} has {p} significant bits; acc='quire' rounds "
                f"through float64 round-to-odd and supports at most "
                f"{MAX_MAN_BITS + 1} (or 'fp64' with RNE)"
            )
        if mode.stochastic:
            if isinstance(f, PositFormat):
                raise ValueError(
                    f"acc='quire' with a posit out={f.name!r} supports "
                    f"out_mode='rne' only; got {mode.value!r}"
                )
            if mode is RoundMode.SR_BITS and self.rand_bits is None:
                raise ValueError("out_mode='sr_bits' needs rand_bits")
            if self.rand_bits is not None and p + self.rand_bits > 52:
                raise ValueError(
                    f"stochastic rounding of the quire to {f.name} with rand_bits="
                    f"{self.rand_bits} needs p + rand_bits <= 52; use rand_bits "
                    f"<= {52 - p}"
                )

    def _stage_rand_bits(self, f: FloatFormat, mode: RoundMode, what: str) -> int:
        """rand_bits of a prod/acc stage (validated: p + rand_bits <= 52 for sr/sr_bits)."""
        if mode not in (RoundMode.SR, RoundMode.SR_BITS):
            return self.rand_bits or 32
        limit = 52 - f.precision
        if self.rand_bits is None:
            if mode is RoundMode.SR_BITS:
                raise ValueError(f"{what}_mode='sr_bits' needs rand_bits")
            return min(32, limit)
        if self.rand_bits > limit:
            raise ValueError(
                f"stochastic rounding of {what} to {f.name} with rand_bits="
                f"{self.rand_bits} needs p + rand_bits <= 52 to be exact through "
                f"the round-to-odd bridge; use rand_bits <= {limit}"
            )
        return self.rand_bits

    @property
    def stochastic(self) -> bool:
        """Whether any stage draws random bits."""
        return any(
            RoundMode(getattr(self, m)).stochastic and getattr(self, f) is not None
            for f, m in zip(_FMT_FIELDS, _MODE_FIELDS, strict=True)
        )

    def replace(self, **changes: Any) -> GemmConfig:
        """A copy with some fields changed (validated again).

        Giving ``block_k`` without ``order`` selects ``order="blocked"``; giving
        ``order="sequential"``/``"pairwise"`` without ``block_k`` clears ``block_k``; giving
        ``acc="quire"`` clears ``order``, ``block_k`` and ``fma`` unless they are given too.
        """
        if changes.get("acc") == QUIRE:
            changes.setdefault("order", None)
            changes.setdefault("block_k", None)
            changes.setdefault("fma", False)
        if changes.get("block_k") is not None and "order" not in changes:
            changes["order"] = "blocked"
        if changes.get("order") in ("sequential", "pairwise") and "block_k" not in changes:
            changes["block_k"] = None
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (format objects without a parseable name become field dicts)."""
        d = asdict(self)
        for name in _FMT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, FloatFormat):
                d[name] = {
                    "exp_bits": v.exp_bits,
                    "man_bits": v.man_bits,
                    "bias": v.bias,
                    "special": v.special,
                    "signed": v.signed,
                    "has_zero": v.has_zero,
                }
            elif v is not None and not isinstance(v, str):
                raise ValueError(
                    f"{name}={v!r} has no name that lowbit.get_format parses; it "
                    "cannot be serialised"
                )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GemmConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ``ValueError``)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown GemmConfig keys {extra}; accepted: {sorted(known)}")
        return cls(**d)


_PRESETS: dict[str, GemmConfig] = {
    # plain float64: exact products, correctly rounded (RNE) float64 sums
    "fp64": GemmConfig(),
    # IEEE single precision throughout, sequential (a plain fp32 BLAS loop with FMA)
    "fp32": GemmConfig(mult="fp32", acc="fp32"),
    # NVIDIA TF32 tensor cores: tf32 inputs, exact products, fp32 accumulation
    "tf32": GemmConfig(mult="tf32", acc="fp32"),
    # bf16/fp16 tensor cores with fp32 accumulation (operands as given / rounded first)
    "fp32-acc": GemmConfig(acc="fp32"),
    "bf16-fp32acc": GemmConfig(mult="bf16", acc="fp32"),
    "fp16-fp32acc": GemmConfig(mult="fp16", acc="fp32"),
    # half-precision accumulation (fp16 inputs and accumulator, RNE)
    "fp16-acc": GemmConfig(mult="fp16", acc="fp16"),
    "bf16-acc": GemmConfig(mult="bf16", acc="bf16"),
    # chop-style emulation: every multiply and every add rounded to fp16
    "fp16-chop": GemmConfig(mult="fp16", prod="fp16", acc="fp16"),
    # fp8 tensor cores: e4m3/e5m2 inputs, exact products, exact sums of 32 products promoted
    # into an fp32 accumulator
    "fp8-e4m3-fp32acc": GemmConfig(mult="e4m3", acc="fp32", order="blocked", block_k=32),
    "fp8-e5m2-fp32acc": GemmConfig(mult="e5m2", acc="fp32", order="blocked", block_k=32),
}
_PRESETS["fp8-tensorcore"] = _PRESETS["fp8-e4m3-fp32acc"]
# posit arithmetic with a quire (PositNN): posit operands, exact sums, one posit rounding
_PRESETS["posit8-quire"] = GemmConfig(mult="posit8", acc="quire", out="posit8")
_PRESETS["posit16-quire"] = GemmConfig(mult="posit16", acc="quire", out="posit16")
# L-Mul products (Luo & Sun 2024) accumulated in fp32, sequentially
_PRESETS["lmul3-fp32acc"] = GemmConfig(mult="lmul3", acc="fp32")
_PRESETS["lmul4-fp32acc"] = GemmConfig(mult="lmul4", acc="fp32")


def gemm_presets() -> dict[str, GemmConfig]:
    """Name -> :class:`GemmConfig` of every named accelerator configuration."""
    return dict(_PRESETS)


def get_gemm_config(preset: str | GemmConfig | None) -> GemmConfig:
    """A preset by name, a config passed through, or the default config for ``None``."""
    if preset is None:
        return GemmConfig()
    if isinstance(preset, GemmConfig):
        return preset
    if isinstance(preset, str):
        key = preset.strip().lower()
        if key in _PRESETS:
            return _PRESETS[key]
        raise ValueError(
            f"unknown GemmConfig preset {preset!r}; known: {', '.join(sorted(_PRESETS))}"
        )
    raise TypeError(f"preset must be a name or a GemmConfig, got {type(preset).__name__}")


def stream_seed(seed: int, stream: int) -> int:
    """The seed of one stage's draws (a 64-bit int derived from ``seed`` and the stream)."""
    k0, k1 = seed_keys(seed, stream)
    return (k1 << 32) | k0


# =============================================================================================
# stages: the parameters of one kind of rounding
# =============================================================================================
@dataclass(frozen=True)
class _Stage:
    """A prod/acc rounding stage: ``fmt=None`` with ``native`` means float64 RNE."""

    fmt: FloatFormat | None
    native: bool
    mode: RoundMode
    overflow: str | None
    rand_bits: int
    seed: int

    def kernel_tuple(self) -> tuple[Any, ...]:
        """(kind, man_bits, emin, fmax, overflow value, mode id, fnuz, rand_bits, k0, k1,
        qmax = emax - man_bits + 1)."""
        from lowbit.kernels import matmul_numba as nk

        k0, k1 = seed_keys(self.seed)
        if self.fmt is None:
            kind = nk.NATIVE if self.native else nk.NONE
            return (kind, 0, 0, 0.0, 0.0, 0, False, 32, k0, k1, 0)
        f = self.fmt
        if self.overflow == "saturate" or not f.has_nan:
            infv = f.max
        else:
            infv = math.inf if f.has_inf else math.nan
        return (
            nk.EMUL,
            f.man_bits,
            f.emin,
            f.max,
            infv,
            _MODE_IDS[self.mode],
            f.special == "fnuz",
            self.rand_bits,
            k0,
            k1,
            f.emax - f.man_bits + 1,
        )

    def round(self, v: np.ndarray, step: int, n_out: int) -> np.ndarray:
        """Reference: round the round-to-odd values ``v`` (draws ``step * n_out + o``)."""
        if self.fmt is None:
            return v
        return _round(
            v,
            self.fmt,
            self.mode,
            overflow=self.overflow,
            seed=self.seed,
            rand_bits=self.rand_bits,
            offset=step * n_out,
            impl="reference",
        )


def _acc_format(cfg: GemmConfig) -> FloatFormat | None:
    """The accumulator format (None: float64, and for the quire)."""
    return None if cfg.acc == QUIRE else _accum_format(cfg.acc, "acc")


def _stages(cfg: GemmConfig, seed: int) -> tuple[_Stage, _Stage]:
    prod = _accum_format(cfg.prod, "prod")
    acc = _acc_format(cfg)
    pm, am = as_mode(cfg.prod_mode), as_mode(cfg.acc_mode)
    P = _Stage(
        prod,
        cfg.prod is not None and prod is None,
        pm,
        cfg.overflow,
        cfg._stage_rand_bits(prod, pm, "prod") if prod else 32,
        stream_seed(seed, 3),
    )
    Q = _Stage(
        acc,
        acc is None,
        am,
        cfg.overflow,
        cfg._stage_rand_bits(acc, am, "acc") if acc else 32,
        stream_seed(seed, 4),
    )
    return P, Q


# =============================================================================================
# the plain reference (vectorized over the outputs, a loop over k)
# =============================================================================================
def _fsum_odd(xs: list[float]) -> tuple[float, float]:
    """(RN, residual) of the exact sum of finite or non-finite doubles (one output element)."""
    if not all(math.isfinite(x) for x in xs):
        if any(math.isnan(x) for x in xs) or (math.inf in xs and -math.inf in xs):
            return math.nan, 0.0
        return (math.inf if math.inf in xs else -math.inf), 0.0
    hi = math.fsum(xs)  # correctly rounded (RNE) value of the exact sum
    return hi, math.fsum([*xs, -hi])  # the exact residual's sign (RN keeps sign and zero)


def _exact_sum(
    terms: list[tuple[np.ndarray, np.ndarray | None]], rd: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(RN, round-to-odd) float64 values of the exact sum of the terms (hi + lo each).

    Zero results carry the sign rule of the module docstring; it looks at the terms' hi parts
    (a product whose hi is zero is zero).
    """
    shape = np.broadcast_shapes(*(h.shape for h, _ in terms))
    pieces = [np.broadcast_to(h, shape) for h, _ in terms]
    pieces += [
        np.broadcast_to(lo, shape) for _, lo in terms if lo is not None and bool(np.any(lo != 0))
    ]
    with np.errstate(all="ignore"):
        if len(pieces) == 1:
            hi = odd = np.array(pieces[0], dtype=np.float64)
        elif len(pieces) == 2:
            hi, err = two_sum(pieces[0], pieces[1])
            odd = odd53(hi, err)
        else:
            flat = [p.reshape(-1) for p in pieces]
            pairs = [_fsum_odd([float(p[t]) for p in flat]) for t in range(flat[0].size)]
            hi = np.array([h for h, _ in pairs], dtype=np.float64).reshape(shape)
            res = np.array([r for _, r in pairs], dtype=np.float64).reshape(shape)
            odd = odd53(hi, res)
    negz = np.ones(shape, dtype=bool)
    posz = np.ones(shape, dtype=bool)
    for h, _ in terms:
        negz &= (h == 0) & np.signbit(h)
        posz &= (h == 0) & ~np.signbit(h)
    zero = np.where(negz | (rd & ~posz), -0.0, 0.0)
    return np.where(hi == 0, zero, hi), np.where(hi == 0, zero, odd)


def gemm_reference(
    A3: np.ndarray, B3: np.ndarray, ia: np.ndarray, ib: np.ndarray, cfg: GemmConfig, seed: int
) -> np.ndarray:
    """The plain reference on batched float arrays; returns float64 of shape (len(ia), M, N).

    ``C[t] = emulated(A3[ia[t]] @ B3[ib[t]])`` with the operands already rounded to ``mult``.
    Readable rather than fast: a Python loop over k (or over the tree levels / groups), each
    step vectorized over all outputs, every rounding done by ``lowbit.round`` (reference path)
    on an exactly computed round-to-odd value.
    """
    A = np.asarray(A3, dtype=np.float64)[ia]
    B = np.asarray(B3, dtype=np.float64)[ib]
    nb, M, K = A.shape
    N = B.shape[2]
    n_out = nb * M * N
    P, Q = _stages(cfg, seed)
    rd = Q.mode is RoundMode.RD
    nl = lmul_bits(cfg)

    def term(k: int) -> tuple[np.ndarray, np.ndarray | None]:
        with np.errstate(all="ignore"):
            if nl is not None:  # L-Mul products of the (e8mN, flushed) operands: exact doubles
                from lowbit.arith.approx.lmul import lmul_prepared_numpy

                ph = lmul_prepared_numpy(
                    A[:, :, k, None].astype(np.float32), B[:, None, k, :].astype(np.float32), nl
                )
                ph = ph.astype(np.float64)
                pl = np.zeros_like(ph)
            else:
                ph, pl = two_prod(A[:, :, k, None], B[:, None, k, :])
                pl = np.where(np.isfinite(ph), pl, 0.0)
        if P.native:
            return ph, None
        if P.fmt is not None:
            with np.errstate(invalid="ignore"):
                v = odd53(ph, pl)
            return P.round(v, k, n_out), None
        return ph, pl

    def acc(terms: list[tuple[np.ndarray, np.ndarray | None]], step: int) -> np.ndarray:
        hi, odd = _exact_sum(terms, rd)
        return hi if Q.native else Q.round(odd, step, n_out)

    c: np.ndarray | None = None
    if cfg.acc == QUIRE:
        if K:
            hi, odd = _exact_sum([term(k) for k in range(K)], _quire_rd(cfg))
            c = hi if _quire_native(cfg) else odd
    elif cfg.order == "sequential":
        for k in range(K):
            t = term(k)
            c = acc([t] if c is None else [(c, None), t], k)
    elif cfg.order == "pairwise":
        # (first term index, value, low part) per element of the current level
        level = [(k, *term(k)) for k in range(K)]
        if K == 1:
            c = acc([level[0][1:]], 0)
        while len(level) > 1:
            nxt = []
            for q in range(0, len(level) - 1, 2):
                (s0, h0, l0), (s1, h1, l1) = level[q], level[q + 1]
                nxt.append((s0, acc([(h0, l0), (h1, l1)], s1 - 1), None))
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
            c = level[0][1]
    else:
        bk = int(cfg.block_k)  # type: ignore[arg-type]
        for g, k0 in enumerate(range(0, K, bk)):
            group = [term(k) for k in range(k0, min(K, k0 + bk))]
            if cfg.fma:
                c = acc(group if c is None else [(c, None), *group], g)
            else:
                gv = acc(group, 2 * g)
                c = gv if c is None else acc([(c, None), (gv, None)], 2 * g + 1)
    if c is None:
        return np.zeros((nb, M, N))
    return np.array(np.broadcast_to(c, (nb, M, N)), dtype=np.float64)


def _quire_native(cfg: GemmConfig) -> bool:
    """Whether the quire's one rounding is float64 RNE (out None or fp64)."""
    return cfg.out is None or _is_fp64(get_element_format(cfg.out))


def _quire_rd(cfg: GemmConfig) -> bool:
    """Whether an exact zero quire sum takes the RD sign rule (the out rounding is RD)."""
    return not _quire_native(cfg) and as_mode(cfg.out_mode) is RoundMode.RD


def quire_plan(
    stats_a: tuple[bool, bool, int, float],
    stats_b: tuple[bool, bool, int, float],
    K: int,
    exact: bool,
    lmul: int | None = None,
    prod: FloatFormat | None = None,
    saturate: bool = False,
) -> tuple[np.ndarray, int]:
    """The bins of the exact (quire) accumulation: ``(sig, nbin)``; ``nbin = 0``: no plan.

    Inputs: operand statistics (:func:`lowbit.kernels.matmul_numba.operand_stats`: short,
    finite, exponent of the lowest set bit, largest magnitude), the number of products K,
    whether products are single doubles (``exact``; else ``two_prod`` pairs, 2K terms), the
    L-Mul mantissa bits and the product rounding format.

    Why the binned sum is exact. Every term t (product, or its low part) is a multiple of
    2^L — L = lsb(A) + lsb(B) for exact products and two_prod pairs (the exact product is a
    multiple of 2^L and so is its RN value, whose quantum is coarser when it is inexact), one
    less per L-Mul mantissa bit for L-Mul products (a product of exponent E >= ea + eb is a
    multiple of 2^(E - N)), and the product format's smallest quantum 2^(emin - m) when
    products are rounded (always a lower bound; saturation to ±max can break the other) —
    and |t| <= T = 16·max|A|·max|B| (L-Mul overestimates by less than 8×, a rounding by 2×).
    Let n be the number of terms and c = max(ceil(log2 n), 2). Bin b covers the terms'
    remaining magnitude bound 2^(t_b) (t_0 = ceil(log2 T)) with quantum u = 2^a,
    a = c + t_b - 53, and σ = 1.5·2^(a+52):

    * |t| <= 2^(t_b) <= 2^(a+51) (c >= 2), so σ + t lies in [2^(a+52), 2^(a+53)], whose floats
      are exactly the multiples of 2^a: fl(σ + t) = σ + h with h = t rounded to a multiple of
      2^a, and fl(fl(σ + t) - σ) = h exactly (a difference of two such multiples, in range);
      the remainder t - h is a float (Rump, Ogita & Oishi 2008, ExtractScalar, Lemma 3.3),
      a multiple of 2^L (so are t and h), of magnitude <= 2^(a-1) = 2^(t_(b+1)).
    * each h is a multiple of 2^a with |h| <= 2^(t_b) (a multiple of 2^a itself), so every
      partial sum of the bin is a multiple of 2^a of magnitude <= n·2^(t_b) <= 2^(a+53):
      exact in float64.
    * the first bin with a <= L is the last: its inputs are multiples of 2^L >= 2^a with
      magnitude <= 2^(t_b), so its plain float64 sum is exact by the same bound.

    Hence the exact sum of the terms equals the exact sum of the nbin bin values, which the
    kernel rounds with Shewchuk's expansion (correctly rounded RN and round-to-odd). Each bin
    resolves 54 - c bits, so posit8/posit16 products need 1-3 bins. No plan (``nbin = 0``,
    every column summed by the partials algorithm) when σ would leave the normal float64
    range or more than 40 bins would be needed.
    """
    if not (stats_a[3] > 0.0 and stats_b[3] > 0.0):
        return np.zeros(0), 1  # every finite term is zero
    nterm = K if exact else 2 * K
    c = max(math.ceil(math.log2(max(nterm, 1))), 2)
    with np.errstate(over="ignore"):
        T = 16.0 * stats_a[3] * stats_b[3]
    if not math.isfinite(T):
        return np.zeros(0), 0
    t = math.frexp(T)[1]  # T < 2^t
    L = stats_a[2] + stats_b[2] - (lmul or 0)
    if prod is not None:
        q = prod.emin - prod.man_bits
        L = q if saturate else max(L, q)
    sig: list[float] = []
    while True:
        a = c + t - 53
        if a <= L:
            break
        if a + 52 > 1022 or a + 52 < -1022 or len(sig) >= _MAX_BINS:
            return np.zeros(0), 0
        sig.append(1.5 * 2.0 ** (a + 52))
        t = a - 1
    return np.array(sig, dtype=np.float64), len(sig) + 1


def _block_sums_exact(
    sa: tuple[bool, bool, int, float], sb: tuple[bool, bool, int, float], bk: int
) -> bool:
    """Whether every partial sum of <= bk products is exact in float64, from operand stats.

    Products are multiples of q = 2^(lsb(A) + lsb(B)) bounded by max|A|·max|B|; partial sums
    are then multiples of q below bk·max|A|·max|B|, exact when that is below 2^53·q.
    """
    if not (sa[1] and sb[1]):
        return False
    if sa[3] == 0.0 or sb[3] == 0.0:
        return True
    return math.log2(bk) + math.log2(sa[3]) + math.log2(sb[3]) < 52 + sa[2] + sb[2]


def gemm_kernel(
    A3: np.ndarray,
    B3: np.ndarray,
    ia: np.ndarray,
    ib: np.ndarray,
    cfg: GemmConfig,
    seed: int,
    exact: bool = True,
) -> np.ndarray:
    """The numba kernel on the same inputs as :func:`gemm_reference` (bit-identical result).

    Products are taken as exact float64 products (no ``two_prod``) when every operand value has
    at most 26 significant bits in a moderate range (checked here; ``exact=False`` forces the
    general path, for tests). L-Mul products (``mult="lmulN"``) are always single doubles. The
    result has A3's dtype (float64 for ``acc="quire"``).
    """
    from lowbit.kernels import matmul_numba as nk

    M, K = A3.shape[1], A3.shape[2]
    N = B3.shape[2]
    quire = cfg.acc == QUIRE
    out_dt = np.float64 if quire else A3.dtype
    if ia.size * M * N == 0:
        return np.zeros((ia.size, M, N), dtype=out_dt)
    nl = lmul_bits(cfg)
    lmc = 0 if nl is None else nk.lmul_constant64(nl)
    bk = int(cfg.block_k or 1)
    want_plain = cfg.prod is None and cfg.order == "blocked" and nl is None
    if A3.dtype == np.float32 and not want_plain and not quire:  # fp32 products: exact
        sa = sb = (True, True, 0, 0.0)
    else:
        sa = nk.operand_stats(A3)
        sb = nk.operand_stats(B3)
    exact = (exact and sa[0] and sb[0]) or nl is not None
    P, Q = _stages(cfg, seed)
    plain = exact and want_plain and _block_sums_exact(sa, sb, bk)
    # Few columns: the kernels vectorize over columns, so compute C^T = B^T A^T instead (each
    # element's arithmetic is unchanged: exact products commute, and the output-index strides
    # keep every random draw of the original element). Not for inexact (two_prod) products,
    # whose error term depends on the operand order.
    # (The quire's exact sums do not depend on the order at all: it swaps whenever that gives
    # longer column loops.)
    swap = exact and ((N < 8 and M >= 2 * N) or (quire and N < _JB and M > N))
    if swap:
        A3, B3, ia, ib = (
            np.ascontiguousarray(np.swapaxes(B3, 1, 2)),
            np.ascontiguousarray(np.swapaxes(A3, 1, 2)),
            ib,
            ia,
        )
        C = np.empty((ia.size, N, M), dtype=out_dt)
        si, sj = 1, N
    else:
        C = np.empty((ia.size, M, N), dtype=out_dt)
        si, sj = N, 1
    jb = max(1, min(C.shape[2], _JB))
    args = (A3, B3, ia, ib, C, bool(exact), P.kernel_tuple(), Q.kernel_tuple(), jb, si, sj, lmc)
    if K == 0:
        C.fill(0.0)
    elif quire:
        pf = _accum_format(cfg.prod, "prod")
        sat = pf is not None and (cfg.overflow == "saturate" or not pf.has_nan)
        sig, nbin = quire_plan(sa, sb, K, bool(exact), nl, pf, sat)
        nk.gemm_quire(
            A3,
            B3,
            ia,
            ib,
            C,
            bool(exact),
            P.kernel_tuple(),
            jb,
            si,
            sj,
            lmc,
            sig,
            nbin,
            _quire_rd(cfg),
            _quire_native(cfg),
        )
    elif cfg.order == "sequential":
        nk.gemm_sequential(*args)
    elif cfg.order == "pairwise":
        nk.gemm_pairwise(*args)
    else:
        nk.gemm_blocked(*args[:-1], bk, cfg.fma, plain, lmc)
    return np.ascontiguousarray(np.swapaxes(C, 1, 2)) if swap else C


# =============================================================================================
# the numpy front end shared by every backend
# =============================================================================================
def _check_dtype(dt: np.dtype, which: str) -> np.dtype:
    dt = np.dtype(dt)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(
            f"lowbit.matmul needs floating-point operands (float16, bfloat16, "
            f"float32, float64); {which} has dtype {dt}: convert it first, e.g. "
            f"{which}.astype(np.float64)"
        )
    return dt


def _holds(dt: np.dtype, f: Format | None) -> bool:
    """Whether every value of format ``f`` (None: float64) is a number of dtype ``dt``."""
    if not isinstance(f, FloatFormat):  # float64 accumulators, posit/fixed-point outputs
        return dt == np.float64
    fi = ml_dtypes.finfo(dt) if dt == _BF16 else np.finfo(dt)
    return (
        fi.nmant >= f.man_bits
        and fi.maxexp - 1 >= f.emax
        and fi.minexp <= f.emin
        and float(fi.smallest_subnormal) <= f.min_subnormal
    )


def _result_dtype(dts: list[np.dtype], final: Format | None) -> np.dtype:
    """The operands' common dtype when it holds the result format, else float32 or float64."""
    if all(d == dts[0] for d in dts):
        common = dts[0]
    else:
        common = np.dtype(np.float64) if np.dtype(np.float64) in dts else np.dtype(np.float32)
    for dt in (common, np.dtype(np.float32), np.dtype(np.float64)):
        if _holds(dt, final):
            return dt
    return np.dtype(np.float64)


def _final_format(cfg: GemmConfig) -> Format | None:
    if cfg.out is not None:
        f = get_element_format(cfg.out)
        return None if _is_fp64(f) else f
    return _acc_format(cfg)


def _out_rand_bits(cfg: GemmConfig) -> int | None:
    """rand_bits of the out rounding: as given; for a stochastic quire rounding without it,
    ``min(32, 52 - p)`` (the round-to-odd bridge needs p + rand_bits <= 52)."""
    if (
        cfg.rand_bits is not None
        or cfg.acc != QUIRE
        or cfg.out is None
        or not as_mode(cfg.out_mode).stochastic
    ):
        return cfg.rand_bits
    return min(32, 52 - _out_precision(get_element_format(cfg.out)))


def _round_operand(x: np.ndarray, cfg: GemmConfig, seed: int, stream: int, impl: str) -> np.ndarray:
    if cfg.mult is None:
        return x
    n = lmul_bits(cfg)
    f = FloatFormat(8, n) if n is not None else get_element_format(cfg.mult)
    if _is_fp64(f):
        return x
    if not _holds(x.dtype, f):
        x = x.astype(np.float64)
    mode = as_mode(cfg.mult_mode)
    r = _round(
        x,
        f,
        mode,
        overflow=cfg.overflow,
        seed=stream_seed(seed, stream),
        rand_bits=cfg.rand_bits,
        impl="reference" if impl == "reference" else "auto",
    )
    if n is not None:  # L-Mul operands: subnormals flushed to zero (lowbit.arith.approx)
        with np.errstate(invalid="ignore"):
            tiny = np.abs(r) < _TINY32
        if tiny.any():
            r = np.where(tiny, np.copysign(np.zeros((), r.dtype), r), r)
    return r


def _shapes(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...]
) -> tuple[tuple[int, ...], int, int, int]:
    """(batch shape, M, K, N) of A (..., M, K) @ B (..., K, N), with clear errors."""
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise AssertionError("operands are expanded to >= 2-D before this point")
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(
            f"matmul: shapes {a_shape} and {b_shape} are not aligned: "
            f"A has {a_shape[-1]} columns (dim -1) but B has {b_shape[-2]} rows "
            "(dim -2)"
        )
    try:
        batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: batch dimensions of shapes {a_shape} and {b_shape} do not "
            f"broadcast ({a_shape[:-2]} vs {b_shape[:-2]})"
        ) from None
    return batch, a_shape[-2], a_shape[-1], b_shape[-1]


def _batch_index(shape: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    idx = np.arange(n, dtype=np.int64).reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(idx, batch)).reshape(-1)


def _matmul_numpy(
    A: np.ndarray, B: np.ndarray, cfg: GemmConfig, seed: int, impl: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core on >= 2-D numpy operands: (result in the result dtype, rounded A, rounded B)."""
    da = _check_dtype(A.dtype, "A")
    db = _check_dtype(B.dtype, "B")
    batch, M, K, N = _shapes(A.shape, B.shape)
    # float32 storage (operands, kernel output) when it holds every value involved
    f32 = np.dtype(np.float32)
    fits = _holds(f32, _acc_format(cfg)) and (
        cfg.out is None or _holds(f32, get_element_format(cfg.out))
    )
    work = np.float64 if (np.float64 in (da, db) or not fits) else np.float32
    Aw = _round_operand(A.astype(work, copy=False), cfg, seed, 1, impl)
    Bw = _round_operand(B.astype(work, copy=False), cfg, seed, 2, impl)
    if Aw.dtype != Bw.dtype:
        Aw, Bw = Aw.astype(np.float64), Bw.astype(np.float64)
    A3 = np.ascontiguousarray(Aw.reshape(math.prod(Aw.shape[:-2]), M, K))
    B3 = np.ascontiguousarray(Bw.reshape(math.prod(Bw.shape[:-2]), K, N))
    ia = _batch_index(Aw.shape[:-2], batch)
    ib = _batch_index(Bw.shape[:-2], batch)
    if impl == "reference":
        C = gemm_reference(A3, B3, ia, ib, cfg, seed)
    else:
        C = gemm_kernel(A3, B3, ia, ib, cfg, seed)
    C = C.reshape((*batch, M, N))
    if cfg.out is not None and not _is_fp64(get_element_format(cfg.out)):
        C = _round(
            C,
            cfg.out,
            as_mode(cfg.out_mode),
            overflow=cfg.overflow,
            seed=stream_seed(seed, 5),
            rand_bits=_out_rand_bits(cfg),
            impl="reference" if impl == "reference" else "auto",
        )
    C[np.isnan(C)] = np.nan  # canonical quiet NaN (float64 or float32)
    dt = _result_dtype([da, db], _final_format(cfg))
    with np.errstate(all="ignore"):
        return C.astype(dt, copy=False), Aw, Bw


# =============================================================================================
# public API
# =============================================================================================
def _resolve(preset: str | GemmConfig | None, overrides: dict[str, Any]) -> GemmConfig:
    base = get_gemm_config(preset)
    given = {k: v for k, v in overrides.items() if v is not _UNSET}
    ctx = _context.current()
    if (
        preset is None
        and ctx is not None
        and not any(k in given for k in ("mult", "prod", "acc", "out"))
    ):
        # inside lb.precision(fmt, mode): every product and every addition rounded (chop)
        return GemmConfig(
            **{
                "prod": ctx.fmt,
                "prod_mode": ctx.mode,
                "acc": ctx.fmt,
                "acc_mode": ctx.mode,
                **given,
            }
        )
    if not given:
        return base
    if preset is None:
        return GemmConfig(**given)
    return base.replace(**given)


def _resolve_seed(seed: int | None, cfg: GemmConfig) -> int:
    if seed is None:
        return secrets.randbits(63) if cfg.stochastic else 0
    seed_keys(seed)  # validates
    return int(seed)


def _as_numpy(x: Any, which: str) -> np.ndarray:
    if isinstance(x, bool | int | float | list | tuple):
        arr = np.asarray(x)
        if arr.dtype.kind in "iub":
            raise TypeError(
                f"lowbit.matmul needs floating-point operands; {which} has dtype "
                f"{arr.dtype}: convert it first, e.g. np.asarray({which}, "
                "dtype=np.float64)"
            )
        return arr
    return np.asarray(x)


def matmul(
    A: Any,
    B: Any,
    *,
    preset: str | GemmConfig | None = None,
    mult: FormatLike | None = _UNSET,
    mult_mode: str | RoundMode = _UNSET,
    prod: FormatLike | None = _UNSET,
    prod_mode: str | RoundMode = _UNSET,
    acc: FormatLike | None = _UNSET,
    acc_mode: str | RoundMode = _UNSET,
    order: str | None = _UNSET,
    block_k: int | None = _UNSET,
    fma: bool = _UNSET,
    out: FormatLike | None = _UNSET,
    out_mode: str | RoundMode = _UNSET,
    overflow: str | None = _UNSET,
    rand_bits: int | None = _UNSET,
    out_fmt: FormatLike | None = _UNSET,
    seed: int | None = None,
    bwd: str | GemmConfig | None = None,
    impl: str = "auto",
) -> Any:
    """Matrix product with emulated arithmetic (semantics in :mod:`lowbit.arith.matmul`).

    Example:
        >>> import numpy as np, lowbit as lb
        >>> A = np.full((1, 4096), 1.0); B = np.full((4096, 1), 1.0)
        >>> float(lb.matmul(A, B, acc="fp16")[0, 0])   # fp16 stops counting at 2048
        2048.0

    Args:
        A: array of shape (..., M, K) or (K,): numpy (float16/bfloat16/float32/float64), torch
            tensor (autograd supported; any device, computed on the host) or jax array.
        B: array of shape (..., K, N) or (K,), same backend as ``A``.
        preset: a preset name (inside ``lb.precision(fmt, mode)`` with no preset and no
            format given, products and accumulation are rounded in the context's format and
            mode; see :func:`gemm_presets`: ``"fp32-acc"``, ``"fp16-acc"``,
            ``"bf16-acc"``, ``"fp8-tensorcore"`` ...) or a :class:`GemmConfig`; the keyword
            arguments below override its fields.
        mult: format the operands are rounded to first (``None``: as given); ``"lmulN"``:
            L-Mul products (operands rounded to e8mN).
        mult_mode: mode of that rounding (default ``"rne"``).
        prod: format each product is rounded to (``None``: exact products).
        prod_mode: mode of the product rounding.
        acc: accumulator format (``None``: float64 RNE); ``"quire"``: exact sum, rounded
            once to ``out``.
        acc_mode: mode of every accumulation step (any mode, stochastic ones included).
        order: ``"sequential"``, ``"pairwise"`` or ``"blocked"``.
        block_k: group size of the blocked order (implies ``order="blocked"``).
        fma: see :class:`GemmConfig`.
        out: final output format (``None``: the accumulator's values).
        out_mode: mode of the final rounding.
        overflow: ``None`` or ``"saturate"`` for every rounding.
        rand_bits: random bits of the stochastic modes.
        out_fmt: alias of ``out``.
        seed: seed of the stochastic modes (``None``: a fresh random seed).
        bwd: configuration of the backward matmuls (torch/jax autograd); ``None``: the forward
            configuration.
        impl: ``"auto"``/``"kernel"`` (the numba kernel) or ``"reference"`` (the plain loop).

    Returns:
        An array of the input backend of shape ``np.matmul(A, B).shape``, in the operands'
        dtype when it holds the result format, else float32 or float64.

    Raises:
        ValueError: shapes that do not align or broadcast, unknown or unsupported formats,
            modes or options.
        TypeError: integer, boolean or complex operands, mixed backends.
    """
    if out_fmt is not _UNSET:
        if out is not _UNSET:
            raise ValueError("pass either out= or its alias out_fmt=, not both")
        out = out_fmt
    cfg = _resolve(
        preset,
        {
            "mult": mult,
            "mult_mode": mult_mode,
            "prod": prod,
            "prod_mode": prod_mode,
            "acc": acc,
            "acc_mode": acc_mode,
            "order": order,
            "block_k": block_k,
            "fma": fma,
            "out": out,
            "out_mode": out_mode,
            "overflow": overflow,
            "rand_bits": rand_bits,
        },
    )
    bwd_cfg = cfg if bwd is None else get_gemm_config(bwd)
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}; accepted: {', '.join(IMPLS)}")
    ctx = _context.current()
    if seed is None and ctx is not None and cfg.stochastic:
        seed = ctx.seed * 1_000_003 + ctx.take(1)  # a fresh, reproducible stream per call
    s = _resolve_seed(seed, cfg)
    ka, kb = _backend(A), _backend(B)
    if ka != kb:
        raise TypeError(f"operands from different backends: A is {ka}, B is {kb}")
    if ka == "torch":
        return _matmul_torch(A, B, cfg, bwd_cfg, s, impl)
    if ka == "jax":
        return _matmul_jax(A, B, cfg, bwd_cfg, s, impl)
    a = _as_numpy(A, "A")
    b = _as_numpy(B, "B")
    _check_dtype(a.dtype, "A")
    _check_dtype(b.dtype, "B")
    a2, b2, squeeze = _expand(a, b)
    C, _, _ = _matmul_numpy(a2, b2, cfg, s, impl)
    C = _squeeze(C, squeeze)
    return C[()] if C.ndim == 0 else C


def dot(a: Any, b: Any, **kwargs: Any) -> Any:
    """Dot product of two vectors (or a matrix product for 1-D/2-D operands) with emulated
    arithmetic; keywords as :func:`matmul`.

    ``dot(x, y)`` of two 1-D arrays of length K is the scalar ``sum_k x_k y_k`` computed with
    the configured multiplier, accumulator and order. For batches use :func:`matmul` (numpy's
    N-D ``dot`` semantics differ and are not provided).

    Raises:
        ValueError: an operand with more than two dimensions, or mismatched lengths.
    """
    for name, x in (("a", a), ("b", b)):
        nd = len(np.shape(x)) if _backend(x) != "torch" else x.dim()
        if nd == 0 or nd > 2:
            raise ValueError(
                f"lowbit.dot takes 1-D or 2-D operands; {name} has shape "
                f"{tuple(np.shape(x)) if _backend(x) != 'torch' else tuple(x.shape)}"
                " (use lowbit.matmul for batches)"
            )
    return matmul(a, b, **kwargs)


def _expand(a: Any, b: Any) -> tuple[Any, Any, tuple[bool, bool]]:
    """np.matmul's 1-D rule: a vector A is a row, a vector B a column (removed afterwards)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul: operands must have at least one dimension, got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    sa, sb = a.ndim == 1, b.ndim == 1
    if sa and sb and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not "
            f"aligned: {a.shape[0]} != {b.shape[0]}"
        )
    if sa and a.shape[0] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not "
            f"aligned: A has {a.shape[0]} elements but B has {b.shape[-2]} rows "
            "(dim -2)"
        )
    if sb and b.shape[0] != a.shape[-1]:
        raise ValueError(
            f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not "
            f"aligned: A has {a.shape[-1]} columns (dim -1) but B has "
            f"{b.shape[0]} elements"
        )
    a2 = a.reshape(1, -1) if sa else a
    b2 = b.reshape(-1, 1) if sb else b
    return a2, b2, (sa, sb)


def _squeeze(C: Any, squeeze: tuple[bool, bool]) -> Any:
    sa, sb = squeeze
    if sb:
        C = C[..., 0]
    if sa:
        C = C[..., 0, :] if not sb else C[..., 0]
    return C


def _sum_to_shape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back to an operand's shape."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def backward_numpy(
    Ar: np.ndarray,
    Br: np.ndarray,
    G: np.ndarray,
    cfg: GemmConfig,
    seed: int,
    impl: str,
    need: tuple[bool, bool] = (True, True),
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """grad_A = G @ Br^T and grad_B = Ar^T @ G with the emulated arithmetic ``cfg``.

    ``Ar``/``Br`` are the forward operands after the ``mult`` rounding (>= 2-D), ``G`` the
    output gradient; the results are summed over broadcast batch dimensions to the operands'
    shapes (float64 sums) and returned in float64. Seeds: ``stream_seed(seed, 6)`` for grad_A
    and ``stream_seed(seed, 7)`` for grad_B.
    """
    ga = gb = None
    if need[0]:
        g, _, _ = _matmul_numpy(G, np.swapaxes(Br, -1, -2), cfg, stream_seed(seed, 6), impl)
        ga = _sum_to_shape(g.astype(np.float64), Ar.shape)
    if need[1]:
        g, _, _ = _matmul_numpy(np.swapaxes(Ar, -1, -2), G, cfg, stream_seed(seed, 7), impl)
        gb = _sum_to_shape(g.astype(np.float64), Br.shape)
    return ga, gb


# =============================================================================================
# torch: on the host, differentiable through an autograd.Function
# =============================================================================================
_TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64")
_TORCH_FN: Any = None


def _torch_to_numpy(x: Any, which: str) -> np.ndarray:
    import torch

    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(
            f"lowbit.matmul needs floating-point operands ({', '.join(_TORCH_DTYPES)}"
            f"); {which} has dtype {x.dtype}: convert it first, e.g. "
            f"{which}.double()"
        )
    x = x.detach().cpu()
    if x.dtype == torch.bfloat16:
        return x.float().numpy().astype(_BF16)
    return x.numpy()


def _numpy_to_torch(x: np.ndarray, like: Any) -> Any:
    import torch

    dt = {
        np.dtype(np.float16): torch.float16,
        _BF16: torch.bfloat16,
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float64): torch.float64,
    }[x.dtype]
    if x.dtype == _BF16:
        x = x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device=like.device, dtype=dt)


def _torch_function() -> Any:
    """The autograd.Function (built on first use, so that lowbit does not import torch)."""
    global _TORCH_FN
    if _TORCH_FN is not None:
        return _TORCH_FN
    import torch

    class EmulatedMatmul(torch.autograd.Function):
        """C = A @ B with emulated arithmetic; backward with the same emulated matmul."""

        @staticmethod
        def forward(
            ctx: Any, A: Any, B: Any, cfg: GemmConfig, bwd: GemmConfig, seed: int, impl: str
        ) -> Any:
            C, Ar, Br = _matmul_numpy(
                _torch_to_numpy(A, "A"), _torch_to_numpy(B, "B"), cfg, seed, impl
            )
            ctx.operands = (Ar, Br)
            ctx.meta = (A.dtype, A.device, B.dtype, B.device, bwd, seed, impl)
            return _numpy_to_torch(C, A)

        @staticmethod
        def backward(ctx: Any, G: Any) -> tuple[Any, ...]:
            Ar, Br = ctx.operands
            a_dt, a_dev, b_dt, b_dev, bwd, seed, impl = ctx.meta
            need = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
            ga, gb = backward_numpy(Ar, Br, _torch_to_numpy(G, "grad"), bwd, seed, impl, need)
            ta = None if ga is None else torch.from_numpy(ga).to(device=a_dev, dtype=a_dt)
            tb = None if gb is None else torch.from_numpy(gb).to(device=b_dev, dtype=b_dt)
            return ta, tb, None, None, None, None

    _TORCH_FN = EmulatedMatmul
    return _TORCH_FN


def _matmul_torch(A: Any, B: Any, cfg: GemmConfig, bwd: GemmConfig, seed: int, impl: str) -> Any:
    for name, x in (("A", A), ("B", B)):
        _torch_to_numpy(x[:0] if x.dim() else x, name)  # dtype check only
    if A.dim() == 0 or B.dim() == 0:
        raise ValueError(
            f"matmul: operands must have at least one dimension, got shapes "
            f"{tuple(A.shape)} and {tuple(B.shape)}"
        )
    a2, b2, squeeze = _expand(A, B)
    _shapes(tuple(a2.shape), tuple(b2.shape))
    C = _torch_function().apply(a2, b2, cfg, bwd, seed, impl)
    return _squeeze(C, squeeze)


# =============================================================================================
# jax: on the host through pure_callback, differentiable through custom_vjp
# =============================================================================================
def _matmul_jax(A: Any, B: Any, cfg: GemmConfig, bwd: GemmConfig, seed: int, impl: str) -> Any:
    import jax
    import jax.numpy as jnp

    da = _check_dtype(np.dtype(A.dtype), "A")
    db = _check_dtype(np.dtype(B.dtype), "B")
    sa, sb = A.ndim == 1, B.ndim == 1
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError(
            f"matmul: operands must have at least one dimension, got shapes "
            f"{tuple(A.shape)} and {tuple(B.shape)}"
        )
    a2 = A[None, :] if sa else A
    b2 = B[:, None] if sb else B
    batch, M, _, N = _shapes(tuple(a2.shape), tuple(b2.shape))
    dt = _result_dtype([da, db], _final_format(cfg))
    if dt == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "this configuration returns float64 values, but jax runs without "
            "float64 (set jax.config.update('jax_enable_x64', True), or choose a "
            "float32-sized acc/out format)"
        )
    res = jax.ShapeDtypeStruct((*batch, M, N), dt)

    def host_fwd(x: Any, y: Any) -> np.ndarray:
        C, _, _ = _matmul_numpy(np.asarray(x), np.asarray(y), cfg, seed, impl)
        return C.astype(dt)

    def host_bwd(x: Any, y: Any, g: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x), np.asarray(y)
        work = np.float64 if np.float64 in (x.dtype, y.dtype) else np.float32
        xr = _round_operand(x.astype(work), cfg, seed, 1, impl)
        yr = _round_operand(y.astype(work), cfg, seed, 2, impl)
        ga, gb = backward_numpy(xr, yr, np.asarray(g), bwd, seed, impl)
        assert ga is not None and gb is not None
        return ga.astype(x.dtype), gb.astype(y.dtype)

    @jax.custom_vjp
    def f(x: Any, y: Any) -> Any:
        return jax.pure_callback(host_fwd, res, x, y)

    def f_fwd(x: Any, y: Any) -> tuple[Any, Any]:
        return f(x, y), (x, y)

    def f_bwd(saved: Any, g: Any) -> tuple[Any, Any]:
        x, y = saved
        shapes = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(y.shape, y.dtype))
        return tuple(jax.pure_callback(host_bwd, shapes, x, y, g))

    f.defvjp(f_fwd, f_bwd)
    C = f(a2, b2)
    if sb:
        C = C[..., 0]
    if sa:
        C = C[..., 0, :] if not sb else C[..., 0]
    return jnp.asarray(C)


__all__ = [
    "QUIRE",
    "GemmConfig",
    "dot",
    "gemm_presets",
    "get_gemm_config",
    "lmul_bits",
    "matmul",
    "quire_plan",
    "stream_seed",
]
