"""``fit`` / ``evaluate`` on sklearn's digits, checked against a hand-written loop and full-batch
evaluation (the oracles), and the scaler / callback contracts with fakes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lowbit.data import load_dataset, make_loader
from lowbit.models import build_model
from lowbit.train import History, evaluate, fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _model(digits, name: str = "cnn-small", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        name,
        in_channels=digits.in_channels,
        num_classes=digits.num_classes,
        image_size=digits.image_size,
    )


def _full_batch(model: torch.nn.Module, ds) -> tuple[float, float]:
    x, y = ds.tensors
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return float((out.argmax(1) == y).double().mean()), float(F.cross_entropy(out, y))


def test_fit_one_epoch_beats_chance_and_history_is_consistent(digits) -> None:
    model = _model(digits)
    before, _ = _full_batch(model, digits.test)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train = make_loader(digits.train, 64, shuffle=True, seed=0)
    test = make_loader(digits.test, 100, shuffle=False)
    h = fit(model, train, test, optimizer=opt, epochs=1, progress=False, label="digits")
    assert len(h) == 1 and h.epoch == [1] and h.label == "digits"
    for col in (
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
        "skipped_steps",
        "eval_seconds",
    ):
        assert len(getattr(h, col)) == 1, col
    assert h.seconds[0] > 0 and h.eval_seconds[0] > 0 and h.skipped_steps == [0]
    acc, loss = _full_batch(model, digits.test)
    assert h.test_acc[0] == acc  # exact: the same predictions counted the same way
    assert math.isclose(h.test_loss[0], loss, rel_tol=1e-5)
    assert before < 0.25 and acc > 0.5 > 3 * 0.1  # chance is 1/10
    assert 0 < h.train_acc[0] <= 1 and math.isfinite(h.train_loss[0])


def test_fit_equals_a_hand_written_loop(digits) -> None:
    epochs = 2
    runs = []
    for _ in range(2):
        m = _model(digits, "mlp", seed=3)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        runs.append((m, opt, make_loader(digits.train, 128, shuffle=True, seed=5)))
    test = make_loader(digits.test, 128, shuffle=False)
    m, opt, loader = runs[0]
    h = fit(m, loader, test, optimizer=opt, epochs=epochs, progress=False)

    ref, ref_opt, ref_loader = runs[1]
    losses, correct = [], []
    for _ in range(epochs):
        ref.train()
        s, n, c, seen = 0.0, 0, 0, 0
        for x, y in ref_loader:
            ref_opt.zero_grad()
            out = ref(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            ref_opt.step()
            s += float(loss.detach())
            n += 1
            c += int((out.argmax(1) == y).sum())
            seen += len(y)
        losses.append(s / n)
        correct.append(c / seen)
    assert h.train_loss == losses and h.train_acc == correct
    for (k, a), b in zip(m.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert h.test_acc[-1] == _full_batch(ref, digits.test)[0]


class FakeScaler:
    """Scales by 8 and reports every third step as an overflow (skipped, optimizer untouched)."""

    def __init__(self) -> None:
        self.calls = {"scale": 0, "step": 0, "update": 0}

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        self.calls["scale"] += 1
        return loss * 8

    def step(self, optimizer) -> bool:
        self.calls["step"] += 1
        if self.calls["step"] % 3 == 0:
            return False
        for g in optimizer.param_groups:
            for p in g["params"]:
                p.grad /= 8
        optimizer.step()
        return True

    def update(self) -> None:
        self.calls["update"] += 1


def test_fit_uses_the_scaler_and_counts_skipped_steps(digits) -> None:
    model = _model(digits, "mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train = make_loader(digits.train, 100, shuffle=True, seed=0)  # 14 steps per epoch
    sc = FakeScaler()
    h = fit(
        model,
        train,
        make_loader(digits.test, 450, shuffle=False),
        optimizer=opt,
        epochs=2,
        scaler=sc,
        progress=False,
    )
    steps = len(train)
    assert sc.calls == {"scale": 2 * steps, "step": 2 * steps, "update": 2 * steps}
    # skipped: step calls 3, 6, ..., counted per epoch
    first = sum(1 for i in range(1, steps + 1) if i % 3 == 0)
    second = sum(1 for i in range(steps + 1, 2 * steps + 1) if i % 3 == 0)
    assert h.skipped_steps == [first, second]


def test_on_epoch_can_stop_and_sees_the_history(digits) -> None:
    model = _model(digits, "mlp")
    seen: list[int] = []

    def stop_after_two(h: History) -> bool:
        seen.append(len(h))
        return len(h) == 2

    h = fit(
        model,
        make_loader(digits.train, 256, shuffle=True),
        make_loader(digits.test, 450, shuffle=False),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        epochs=5,
        progress=False,
        on_epoch=stop_after_two,
    )
    assert seen == [1, 2] and len(h) == 2


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_bad_epochs(digits, epochs) -> None:
    model = _model(digits, "mlp")
    with pytest.raises(ValueError, match="epochs"):
        fit(model, [], [], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=epochs)


def test_evaluate_restores_mode_and_rejects_empty(digits) -> None:
    model = _model(digits)
    model.train()
    ev = evaluate(model, make_loader(digits.test, 64, shuffle=False))
    assert model.training and ev.n == len(digits.test)
    acc, loss = _full_batch(model, digits.test)
    assert ev.accuracy == acc and math.isclose(ev.loss, loss, rel_tol=1e-5)
    with pytest.raises(ValueError, match="no example"):
        evaluate(model, [])


def test_scheduler_is_stepped_after_every_step(digits) -> None:
    model = _model(digits, "mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train = make_loader(digits.train, 200, shuffle=True)  # 7 steps per epoch
    total = 2 * len(train)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total + 4)
    fit(
        model,
        train,
        make_loader(digits.test, 450, shuffle=False),
        optimizer=opt,
        epochs=2,
        progress=False,
        scheduler=sched,
    )
    # closed form of the cosine schedule after `total` steps
    want = 0.1 * (1 + math.cos(math.pi * total / (total + 4))) / 2
    assert math.isclose(opt.param_groups[0]["lr"], want, rel_tol=1e-12)
