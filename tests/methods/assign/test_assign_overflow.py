"""The overflow rule (promotion after a step, for good) and the loss scaler, with lowbit's
``fit``: tensors with a known share of elements beyond fp_4_3_4's threshold (31)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lowbit.methods.assign import (  # noqa: E402
    HIGH,
    LOW,
    LeeLossScaler,
    OverflowPromoter,
    assign,
    overflow_fraction,
    tensor_groups,
)
from lowbit.train import fit  # noqa: E402

UNITS = 200  # layer 0 has 200 outputs and 2000 weights


def make(r: float = 1.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, UNITS), nn.ReLU(), nn.Linear(UNITS, 4))
    a = assign(tensor_groups(model, torch.zeros(2, 10)), r, "ours")
    a.apply(model)
    return model, a


def batches(x: torch.Tensor, n: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, torch.arange(x.shape[0]) % 4)] * n


def train(model, promoter, data, steps: int = 1) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the values stay as the test sets them
    promoter.attach(opt)
    fit(model, data * steps, data, optimizer=opt, epochs=1, progress=False)


@pytest.mark.parametrize(("count", "promoted"), [(40, True), (10, False)])  # 2 %, 0.5 %
def test_weight_overflow(count: int, promoted: bool) -> None:
    model, a = make()
    with torch.no_grad():
        model[0].weight.view(-1)[:count] = 40.0
    assert overflow_fraction(model[0].weight, LOW) == count / (10 * UNITS)
    p = OverflowPromoter(model, a, threshold=0.01)
    train(model, p, batches(torch.zeros(8, 10)))  # zero inputs: nothing else overflows
    assert p.steps == 1
    assert ("0.P" in p.promoted) is promoted
    assert p.promoted == (["0.P"] if promoted else [])
    want = HIGH.name if promoted else LOW.name
    assert p.assignment.formats["0.P"] == want and a.formats["0.P"] == LOW.name
    assert model[0].lowbit_layer_config.weight == want
    assert model.lowbit_config == p.assignment.config
    # stays promoted when the weights are small again
    with torch.no_grad():
        model[0].weight.view(-1)[:count] = 0.1
    train(model, p, batches(torch.zeros(8, 10)), steps=3)
    assert p.steps == 4 and model[0].lowbit_layer_config.weight == want
    assert p.promoted == (["0.P"] if promoted else [])


@pytest.mark.parametrize(("count", "promoted"), [(4, True), (1, False)])  # of 200 outputs
def test_output_overflow_reconfigures_the_layer(count: int, promoted: bool) -> None:
    model, a = make()
    with torch.no_grad():
        model[0].bias.zero_()
        model[0].bias[:count] = 100.0  # zero inputs: those outputs are exactly 100
    x = torch.zeros(8, 10)
    model.eval()
    with torch.no_grad():
        assert float(model[0](x).max()) == LOW.max  # saturated at 30 in fp_4_3_4
    p = OverflowPromoter(model, a)
    train(model, p, batches(x))
    # the GEMM output overflows; the ReLU after it sees the rounded output (30) and does not
    assert p.promoted == (["0.Y"] if promoted else [])
    model.eval()
    with torch.no_grad():
        assert float(model[0](x).max()) == (100.0 if promoted else LOW.max)
    assert model[0].lowbit_layer_config.output == (HIGH.name if promoted else LOW.name)
    assert model[2].lowbit_layer_config.act == LOW.name
    assert p.assignment.ratio < a.ratio if promoted else p.assignment.ratio == a.ratio
    # the next step's ReLU output (layer 2's input) is 100 now: it is promoted in turn; the
    # measuring hooks follow the rebuilt quantizers
    train(model, p, batches(x), steps=2)
    assert p.steps == 3
    assert p.promoted == (["0.Y", "1.Y"] if promoted else [])
    assert [q.step for q in p.assignment.promotions] == ([1, 2] if promoted else [])
    assert model[2].lowbit_layer_config.act == (HIGH.name if promoted else LOW.name)


@pytest.mark.parametrize(("share", "promoted"), [(0.02, True), (0.005, False)])
def test_input_overflow(share: float, promoted: bool) -> None:
    model, a = make()
    x = torch.zeros(20, 10)
    x.view(-1)[: round(share * x.numel())] = -50.0
    p = OverflowPromoter(model, a)
    train(model, p, batches(x))
    assert ("input.Y" in p.promoted) is promoted
    assert model[0].lowbit_layer_config.act == (HIGH.name if promoted else LOW.name)


def test_eval_forwards_are_not_measured_and_high_tensors_are_skipped() -> None:
    model, a = make(r=0.0)  # all high: nothing to measure
    p = OverflowPromoter(model, a)
    with torch.no_grad():
        model[0].weight.fill_(40.0)
    train(model, p, batches(torch.ones(4, 10)))
    assert p.promoted == [] and p.fractions == {}
    model, a = make()
    p = OverflowPromoter(model, a)
    with torch.no_grad():
        model[0].weight.fill_(40.0)
        model.eval()
        model(torch.ones(4, 10))
    assert p.fractions == {}


def test_promoter_needs_a_quantized_model_and_a_fraction() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 4))
    a = assign(tensor_groups(model, torch.zeros(2, 10)), 1.0)
    with pytest.raises(ValueError, match="not quantized"):
        OverflowPromoter(model, a)
    a.apply(model)
    for bad in (0.0, 1.5, True):
        with pytest.raises(ValueError, match="threshold"):
            OverflowPromoter(model, a, threshold=bad)


def test_loss_scaler_grows_per_epoch_and_calls_the_promoter() -> None:
    model, a = make()
    with torch.no_grad():
        model[0].weight.view(-1)[:40] = 40.0
    p = OverflowPromoter(model, a)
    s = LeeLossScaler(2, model=model, promoter=p)
    assert s.loss_scale == 65536.0
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = batches(torch.zeros(8, 10), 2)
    h = fit(model, data, data, optimizer=opt, epochs=1, scaler=s, progress=False)
    assert h.skipped_steps == [0] and s.grad_overflows == 0
    assert s.loss_scale == 131072.0  # x2 after one epoch (2 steps) without overflow
    assert p.steps == 2 and p.promoted == ["0.P"]


@pytest.mark.parametrize(("r", "overflow"), [(1.0, True), (0.0, False)])
def test_loss_scaler_sees_activation_gradient_overflow(r: float, overflow: bool) -> None:
    """dL/dlogits ~ 1/8 times 2^30 passes fp_5_2's threshold (122880), not fp_6_9's."""
    model, _ = make(r)
    s = LeeLossScaler(100, model=model, init_scale=2.0**30)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [q.detach().clone() for q in model.parameters()]
    data = batches(torch.randn(8, 10, generator=torch.Generator().manual_seed(1)))
    h = fit(model, data, data, optimizer=opt, epochs=1, scaler=s, progress=False)
    assert h.skipped_steps == [int(overflow)] and s.grad_overflows == int(overflow)
    assert s.loss_scale == (2.0**29 if overflow else 2.0**30)
    unchanged = all(torch.equal(b, q) for b, q in zip(before, model.parameters(), strict=True))
    assert unchanged is overflow
    with pytest.raises(ValueError, match="steps_per_epoch"):
        LeeLossScaler(0)
