"""Loss scaling for low-precision gradients (layer 5): static and dynamic, with overflow skip."""

from lowbit.amp.loss_scaler import LossScaler

__all__ = ["LossScaler"]
