"""The training loop: ``fit`` a classifier for some epochs, ``evaluate`` it, keep a ``History``.

The loop knows nothing about formats: the model carries its quantization (``lowbit.nn``), the
optimizer its storage format and update rounding (``lowbit.optim``) and the loss scaler its
scale (``lowbit.amp``). It takes the model and the loaders as arguments and never builds them.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: the per-epoch columns of a History, in table order
COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "skipped_steps")


class Evaluation(NamedTuple):
    """Result of :func:`evaluate`: accuracy in [0, 1], mean cross-entropy, examples seen."""

    accuracy: float
    loss: float
    n: int


@dataclass
class History:
    """Per-epoch record of a training run (one list entry per epoch).

    Attributes:
        label: name of the run (the table row / plot legend).
        epoch: epoch numbers, from 1.
        train_loss: mean training loss of the epoch's steps (nan when a step's loss was).
        train_acc: accuracy on the training batches as they were seen (training mode).
        test_loss: mean test loss after the epoch.
        test_acc: test accuracy after the epoch, in [0, 1].
        seconds: wall time of the epoch's training steps (evaluation not included).
        skipped_steps: optimizer steps the loss scaler skipped (overflow) in the epoch.
        eval_seconds: wall time of the evaluation after each epoch.
    """

    label: str = ""
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def final_test_acc(self) -> float:
        """Test accuracy after the last epoch (nan before the first)."""
        return self.test_acc[-1] if self.test_acc else math.nan

    @property
    def best_test_acc(self) -> float:
        """Best test accuracy over the epochs (nan before the first)."""
        return max(self.test_acc) if self.test_acc else math.nan

    @property
    def mean_epoch_seconds(self) -> float:
        """Mean training time per epoch."""
        return sum(self.seconds) / len(self.seconds) if self.seconds else math.nan

    def rows(self) -> list[dict[str, Any]]:
        """One dict per epoch with the keys of :data:`COLUMNS`."""
        return [{c: getattr(self, c)[i] for c in COLUMNS} for i in range(len(self))]

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """The History of :meth:`to_dict`'s dict."""
        return cls(**d)

    def to_csv(self, path: str | Path) -> Path:
        """Write the per-epoch rows as CSV (header: :data:`COLUMNS`); returns the path."""
        p = Path(path)
        with p.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            w.writeheader()
            w.writerows(self.rows())
        return p


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any]) -> Evaluation:
    """Accuracy and mean cross-entropy of ``model`` over ``loader`` in eval mode.

    Args:
        model: a classifier returning logits of shape (batch, classes).
        loader: yields ``(inputs, labels)`` batches.

    Returns:
        ``Evaluation(accuracy, loss, n)``; the model's training mode is restored afterwards.

    Raises:
        ValueError: the loader yields no example.
    """
    was_training = model.training
    model.eval()
    dev = _device(model)
    correct = 0
    total = 0
    loss_sum = 0.0
    try:
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no example")
    return Evaluation(correct / total, loss_sum / total, total)


def _step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: Any,
    scaler: Any | None,
    scheduler: Any | None,
) -> tuple[float, int, bool]:
    """One training step; (loss, correct predictions, skipped by the scaler?)."""
    optimizer.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out, y)
    if scaler is None:
        loss.backward()
        optimizer.step()
        skipped = False
    else:
        scaler.scale(loss).backward()
        # the scaler unscales, checks for inf/nan and skips the step on overflow
        skipped = not scaler.step(optimizer)
        scaler.update()
    if scheduler is not None:
        scheduler.step()
    correct = int((out.detach().argmax(dim=1) == y).sum())
    return float(loss.detach()), correct, skipped


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    test_loader: Iterable[Any],
    *,
    optimizer: Any,
    epochs: int,
    scaler: Any | None = None,
    progress: bool = True,
    on_epoch: Callable[[History], bool | None] | None = None,
    label: str = "",
    scheduler: Any | None = None,
) -> History:
    """Train ``model`` with cross-entropy for ``epochs`` epochs, evaluating after each.

    Args:
        model: a classifier returning logits; quantized or not.
        train_loader: yields ``(inputs, labels)`` batches (shuffled by the caller's loader).
        test_loader: the evaluation batches.
        optimizer: a ``torch.optim.Optimizer`` (``lowbit.optim`` ones included).
        epochs: number of passes over ``train_loader`` (≥ 1).
        scaler: a ``lowbit.amp.LossScaler`` (``scale(loss)``, ``step(optimizer)`` returning
            whether the step was taken, ``update()``), or None.
        progress: show a tqdm bar over all steps with the running loss and test accuracy.
        on_epoch: called with the History after each epoch; returning True stops training.
        label: name stored in the History.
        scheduler: a ``torch.optim.lr_scheduler`` stepped after every training step (also
            after a step the scaler skipped, so the schedule follows the step count).

    Returns:
        The History: one entry per epoch run.

    Raises:
        ValueError: ``epochs`` < 1.
    """
    from tqdm.auto import tqdm

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be an int >= 1, got {epochs!r}")
    hist = History(label=label)
    dev = _device(model)
    try:
        steps_per_epoch: int | None = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = None
    total = None if steps_per_epoch is None else steps_per_epoch * epochs
    bar = tqdm(
        total=total,
        desc=label or "train",
        unit="step",
        disable=not progress,
        mininterval=0.5,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        for ep in range(1, epochs + 1):
            model.train()
            loss_sum = 0.0
            n_batches = 0
            correct = 0
            seen = 0
            skipped = 0
            t0 = time.perf_counter()
            for x, y in train_loader:
                x, y = x.to(dev), y.to(dev)
                loss, c, sk = _step(model, x, y, optimizer, scaler, scheduler)
                loss_sum += loss
                n_batches += 1
                correct += c
                seen += int(y.numel())
                skipped += int(sk)
                bar.update(1)
                if n_batches % 10 == 0:
                    bar.set_postfix(epoch=ep, loss=f"{loss_sum / n_batches:.4f}", refresh=False)
            seconds = time.perf_counter() - t0
            if n_batches == 0:
                raise ValueError("fit: the training loader yielded no batch")
            t1 = time.perf_counter()
            ev = evaluate(model, test_loader)
            hist.epoch.append(ep)
            hist.train_loss.append(loss_sum / n_batches)
            hist.train_acc.append(correct / seen)
            hist.test_loss.append(ev.loss)
            hist.test_acc.append(ev.accuracy)
            hist.seconds.append(seconds)
            hist.skipped_steps.append(skipped)
            hist.eval_seconds.append(time.perf_counter() - t1)
            bar.set_postfix(
                epoch=ep, loss=f"{hist.train_loss[-1]:.4f}", test_acc=f"{ev.accuracy:.4f}"
            )
            if on_epoch is not None and on_epoch(hist):
                break
    finally:
        bar.close()
    return hist
