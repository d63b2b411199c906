"""Layer 3: block and integer quantization built on :func:`lowbit.round`.

* :func:`quantize_mx`, :func:`mx_encode`, :func:`mx_decode` — OCP Microscaling (MX v1.0).
* :func:`quantize_bfp`, :func:`bfp_encode`, :func:`bfp_decode` — block floating point.
* :func:`quantize_int`, :func:`quantize_int_codes`, :func:`int_params` — uniform integer
  quantization per tensor, channel or group.
* :func:`quantize_fixed` — fixed point Q(i, f) with saturation or wrap-around.
* :func:`s2fp8_round`, :func:`s2fp8_encode`, :func:`s2fp8_decode` — S2FP8 (shifted and
  squeezed e5m2, Cambier et al. 2020).
"""

from lowbit.blocks.bfp import BFPTensor, bfp_decode, bfp_encode, quantize_bfp
from lowbit.blocks.fixed import quantize_fixed
from lowbit.blocks.intquant import int_params, int_range, quantize_int, quantize_int_codes
from lowbit.blocks.mx import MXTensor, mx_decode, mx_encode, quantize_mx
from lowbit.blocks.s2fp8 import s2fp8_decode, s2fp8_encode, s2fp8_params, s2fp8_round

__all__ = [
    "BFPTensor",
    "MXTensor",
    "bfp_decode",
    "bfp_encode",
    "int_params",
    "int_range",
    "mx_decode",
    "mx_encode",
    "quantize_bfp",
    "quantize_fixed",
    "quantize_int",
    "quantize_int_codes",
    "quantize_mx",
    "s2fp8_decode",
    "s2fp8_encode",
    "s2fp8_params",
    "s2fp8_round",
]
