"""PositNN (Raposo, Tomás, Roma, ICASSP 2021, arXiv 2105.00053): training with every stage of
the step (forward, backward, weight gradient, update, loss) in its own posit<n, es>, and every
dot product accumulated exactly in a quire.

Typical use::

    from lowbit.methods import posit_training as pt
    import lowbit.nn as lnn

    recipe = pt.posit_training("mixed8")          # or "float", "posit8_0", "posit16_1"
    lnn.quantize_(model, recipe.quant_config())   # forward/backward/gradient posits, quires
    opt = recipe.optimizer(model.parameters(), lr=1 / 16, momentum=0.5)
    loss_fn = recipe.loss_fn()                    # cross-entropy in the loss posit
    for x, y in loader:
        loss, correct = pt.train_step(model, x, y, opt, loss_fn)

This package takes models and loaders as arguments; it never imports ``lowbit.data`` or
``lowbit.models`` (the experiment wires them).
"""

from lowbit.methods.posit_training.loss import (
    REDUCTIONS,
    PositCrossEntropy,
    per_sample_losses,
    posit_cross_entropy,
)
from lowbit.methods.posit_training.optim import PositSGD, train_step
from lowbit.methods.posit_training.recipe import (
    PRESETS,
    STAGES,
    PositRecipe,
    posit_training,
    presets,
)

__all__ = [
    "PRESETS",
    "REDUCTIONS",
    "STAGES",
    "PositCrossEntropy",
    "PositRecipe",
    "PositSGD",
    "per_sample_losses",
    "posit_cross_entropy",
    "posit_training",
    "presets",
    "train_step",
]
