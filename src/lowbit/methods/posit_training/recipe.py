"""``posit_training``: PositNN's per-stage posit formats as one frozen, serialisable recipe.

PositNN (Raposo, Tomás, Roma, ICASSP 2021; code hpc-ulisboa/posit-neuralnet) gives every
stage of a training step its own posit<n, es> (its ``Type`` struct: ``Optimizer``,
``Forward``, ``Backward``, ``Gradient``, ``Loss``) and accumulates every dot product exactly
in a quire, rounding once. A :class:`PositRecipe` names those five formats and whether the
quire is used, and builds the lowbit pieces that carry them:

=============  ===========================================================================
stage          tensors (lowbit piece)
=============  ===========================================================================
``forward``    weights as the forward matmul sees them, layer inputs and outputs
               (``QuantConfig.weight`` / ``act`` / ``output``)
``backward``   the error signal ``dL/dy`` and the input gradient ``dL/dx``
               (``QuantConfig.grad_act``)
``gradient``   weight and bias gradients, before and after the division by the batch size
               (``QuantConfig.grad_weight``, :class:`~.optim.PositSGD` ``grad_fmt``)
``update``     the stored weights (master copy) and the momentum buffer
               (:class:`~.optim.PositSGD` ``weight_fmt`` / ``state_fmt``)
``loss``       softmax, log-softmax and the loss gradient (:class:`~.loss.PositCrossEntropy`)
=============  ===========================================================================

``quire=True`` makes every Linear/Conv matmul (forward and both backward ones) an emulated
GEMM (``QuantConfig.gemm``, ``GemmConfig(acc="quire")``) whose products are summed exactly
and rounded once (to float64; the layer's cast then rounds that to the stage's posit, so for a
float64 model whose exact sums are float64 numbers — always for posit<8,0> operands — the
result is the posit rounding of the exact dot product); ``quire=False`` leaves torch's own
matmul, accumulating in the model's dtype.

A stage set to ``None`` is not rounded (float32 / float64, as the model's dtype).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lowbit.formats import PositFormat, get_format

STAGES = ("forward", "backward", "gradient", "update", "loss")

# name -> stage formats (canonical lowbit names) and quire
PRESETS: dict[str, dict[str, Any]] = {
    # no rounding anywhere: the float32 baseline (torch's own matmuls)
    "float": dict(forward=None, backward=None, gradient=None, update=None, loss=None, quire=False),
    # every stage posit<8,0>, quires (the paper's uniform 8-bit run on Fashion-MNIST)
    "posit8_0": dict(
        forward="posit<8,0>",
        backward="posit<8,0>",
        gradient="posit<8,0>",
        update="posit<8,0>",
        loss="posit<8,0>",
        quire=True,
    ),
    # every stage posit<16,1>, quires
    "posit16_1": dict(
        forward="posit<16,1>",
        backward="posit<16,1>",
        gradient="posit<16,1>",
        update="posit<16,1>",
        loss="posit<16,1>",
        quire=True,
    ),
    # PositNN's mixed 8-bit recipe (examples/fashionmnist_lenet5/src/train_posit.cpp):
    # posit<8,2> forward/backward/gradient, posit<16,2> optimizer and loss, quires
    "mixed8": dict(
        forward="posit8",
        backward="posit8",
        gradient="posit8",
        update="posit16",
        loss="posit16",
        quire=True,
    ),
}


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _posit_name(stage: str, value: Any) -> str | None:
    """Canonical lowbit name of a stage's posit format (``None``/``"none"``: no rounding)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "float")):
        return None
    if isinstance(value, PositFormat):
        fmt: Any = value
    elif isinstance(value, str):
        try:
            fmt = get_format(value)
        except ValueError:
            raise ValueError(
                f"{stage}={value!r} is not a format name; accepted: a posit "
                "format name ('posit<8,0>', 'posit8_0', 'posit8' = posit<8,2>, "
                "'posit16_1', ...) or None"
            ) from None
    else:
        raise TypeError(
            f"{stage} must be a posit format name, a PositFormat or None, got "
            f"{type(value).__name__}"
        )
    if not isinstance(fmt, PositFormat):
        raise ValueError(
            f"{stage}={value!r} is {fmt.name}, not a posit; accepted: posit "
            "formats ('posit<8,0>', 'posit8_0', 'posit16_1', ...) or None"
        )
    return get_format(f"posit<{fmt.n},{fmt.es}>").name  # "posit8" for posit<8,2>


@dataclass(frozen=True)
class PositRecipe:
    """The posit format of every stage of a training step, and the quire switch.

    Attributes:
        forward: weights in the forward matmul, layer inputs and outputs (None: float).
        backward: error signals ``dL/dy`` and input gradients ``dL/dx``.
        gradient: weight and bias gradients.
        update: stored weights and momentum (PositNN's ``Optimizer`` type).
        loss: softmax / cross-entropy and its gradient.
        quire: exact accumulation of every matmul (one rounding per dot product).
    """

    forward: str | None = "posit<8,0>"
    backward: str | None = "posit<8,0>"
    gradient: str | None = "posit<8,0>"
    update: str | None = "posit<8,0>"
    loss: str | None = "posit<8,0>"
    quire: bool = True

    def __post_init__(self) -> None:
        for s in STAGES:
            object.__setattr__(self, s, _posit_name(s, getattr(self, s)))
        if not isinstance(self.quire, bool):
            raise TypeError(f"quire must be a bool, got {self.quire!r}")

    # ---- views --------------------------------------------------------------------------
    def formats(self) -> dict[str, PositFormat | None]:
        """Stage -> :class:`~lowbit.PositFormat` (None where the stage is not rounded)."""
        out: dict[str, PositFormat | None] = {}
        for s in STAGES:
            name = getattr(self, s)
            f = get_format(name) if name is not None else None
            assert f is None or isinstance(f, PositFormat)
            out[s] = f
        return out

    @property
    def is_float(self) -> bool:
        """True when no stage is rounded and the matmuls are torch's own."""
        return all(getattr(self, s) is None for s in STAGES) and not self.quire

    def describe(self) -> str:
        """One line, e.g. ``"fwd posit8 | bwd posit8 | grad posit8 | upd posit16 | ..."``."""
        short = {
            "forward": "fwd",
            "backward": "bwd",
            "gradient": "grad",
            "update": "upd",
            "loss": "loss",
        }
        parts = [f"{short[s]} {getattr(self, s) or 'fp32'}" for s in STAGES]
        parts.append("quire" if self.quire else "fp32 accumulation")
        return " | ".join(parts)

    # ---- lowbit pieces --------------------------------------------------------------------
    def gemm_config(self) -> Any:
        """The :class:`lowbit.GemmConfig` of the quire (None when ``quire`` is False).

        The operands reach the GEMM already rounded by the layer casts, so the GEMM takes
        them as given (``mult=None``), forms exact products, sums them exactly in the quire
        and rounds the sum once; the layer's ``output`` / ``grad_act`` / ``grad_weight`` cast
        then puts the result on the stage's posit grid.
        """
        if not self.quire:
            return None
        from lowbit.arith.matmul import GemmConfig

        return GemmConfig(acc="quire")

    def quant_config(self, **changes: Any) -> Any:
        """The :class:`lowbit.nn.QuantConfig` of the layers (``changes`` replace its fields).

        ``weight``/``act``/``output`` = ``forward``, ``grad_act`` = ``backward``,
        ``grad_weight`` = ``gradient``, ``gemm`` = :meth:`gemm_config` (as a dict), all RNE
        (the posit standard's rounding).
        """
        from lowbit.nn.config import QuantConfig

        g = self.gemm_config()
        kw: dict[str, Any] = dict(
            weight=self.forward,
            act=self.forward,
            output=self.forward,
            grad_act=self.backward,
            grad_weight=self.gradient,
            gemm=None if g is None else g.to_dict(),
        )
        kw.update(changes)
        return QuantConfig(**kw)

    def optimizer(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        *,
        weight_decay: float = 0.0,
        batch_size: float = 1.0,
        seed: int = 0,
    ) -> Any:
        """SGD (with momentum) storing weights and momentum in ``update``.

        The weight gradient the layers produce is the *sum* over the batch (the loss of
        :meth:`loss_fn` is summed, PositNN's scaling); the optimizer divides it by
        ``batch_size`` and rounds the quotient to ``gradient`` before the update, as PositNN's
        layers do. :func:`~lowbit.methods.posit_training.train_step` sets the divisor to each
        batch's size.

        Returns:
            a :class:`~lowbit.methods.posit_training.PositSGD`.
        """
        from lowbit.methods.posit_training.optim import PositSGD

        return PositSGD(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            weight_fmt=self.update,
            state_fmt=self.update,
            grad_fmt=self.gradient,
            grad_divisor=batch_size,
            seed=seed,
        )

    def loss_fn(self, reduction: str = "sum") -> Any:
        """Cross-entropy computed in the ``loss`` posit (see :class:`~.loss.PositCrossEntropy`).

        ``reduction="sum"`` (the default, PositNN's scaling) sends each sample's gradient
        ``softmax - onehot`` back unscaled; :meth:`optimizer` divides by the batch size.
        """
        from lowbit.methods.posit_training.loss import PositCrossEntropy

        return PositCrossEntropy(self.loss, reduction=reduction)

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PositRecipe:
        """Build a recipe from :meth:`to_dict` output (unknown keys raise ``ValueError``)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"recipe must be a mapping, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(d) - set(names))
        if bad:
            raise ValueError(f"unknown PositRecipe keys {bad}; accepted: {', '.join(names)}")
        return cls(**dict(d))

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> PositRecipe:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def presets() -> list[str]:
    """Names accepted as ``posit_training``'s first argument."""
    return list(PRESETS)


def posit_training(
    forward: str | PositFormat | None = "posit8_0",
    *,
    backward: Any = _UNSET,
    gradient: Any = _UNSET,
    update: Any = _UNSET,
    loss: Any = _UNSET,
    quire: Any = _UNSET,
) -> PositRecipe:
    """A PositNN recipe: a preset name, or the forward posit plus per-stage overrides.

    ``forward`` is either a preset (``"float"``, ``"posit8_0"``, ``"posit16_1"``,
    ``"mixed8"``), whose stages the keywords then override, or a posit format name; then the
    stages not given follow PositNN's template defaults (``backward`` = ``forward``,
    ``gradient`` = ``backward``, ``update`` = ``loss`` = ``forward``) and ``quire`` is True.
    ``posit_training("posit8_0")`` is both readings at once (uniform posit<8,0>).

    Examples::

        posit_training("mixed8")                          # the paper's best 8-bit recipe
        posit_training("posit<8,2>", update="posit16")    # custom mix
        posit_training("posit16_1", quire=False)          # float32 accumulation instead

    Raises:
        ValueError: ``forward`` is neither a preset nor a posit format (the message lists the
            presets), or a stage is not a posit format.
    """
    given = {
        k: v
        for k, v in dict(
            backward=backward, gradient=gradient, update=update, loss=loss, quire=quire
        ).items()
        if v is not _UNSET
    }
    if isinstance(forward, str) and forward.strip().lower() in PRESETS:
        return PositRecipe(**{**PRESETS[forward.strip().lower()], **given})
    try:
        fwd = _posit_name("forward", forward)
    except ValueError as err:
        raise ValueError(
            f"unknown posit_training preset or posit format {forward!r} ({err}); "
            f"accepted presets: {', '.join(PRESETS)}; or a posit format name "
            "such as 'posit<8,0>', 'posit8_2', 'posit16_1'"
        ) from None
    bwd = given.get("backward", fwd)
    kw = dict(
        forward=fwd,
        backward=bwd,
        gradient=given.get("gradient", bwd),
        update=given.get("update", fwd),
        loss=given.get("loss", fwd),
        quire=given.get("quire", True),
    )
    return PositRecipe(**kw)


__all__ = ["PRESETS", "STAGES", "PositRecipe", "posit_training", "presets"]
