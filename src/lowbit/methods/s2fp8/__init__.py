"""S2FP8 (Cambier et al., "Shifted and Squeezed 8-bit Floating Point Format for Low-Precision
Training of Deep Neural Networks", ICLR 2020, arXiv 2001.05674) as a recipe on layers 1-5.

The primitive (per-tensor shift/squeeze statistics, FP8 rounding, decoding) is
:mod:`lowbit.blocks.s2fp8`; ``QuantConfig(scaling="s2fp8", grad_scaling="s2fp8")`` applies it
to every GEMM input of a model through :class:`lowbit.nn.quantizers.S2FP8Quantizer`.

Typical use::

    import lowbit.nn as lnn
    from lowbit.methods.s2fp8 import s2fp8_training

    lnn.quantize_(model, s2fp8_training())   # then train as usual: no loss scaling
"""

from lowbit.methods.s2fp8.recipe import PAPER_RESULTS, fp8_training_no_scaling, s2fp8_training

__all__ = ["PAPER_RESULTS", "fp8_training_no_scaling", "s2fp8_training"]
