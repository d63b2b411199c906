"""The known effect: bf16 weights with RNE stall, with stochastic rounding they train.

Also the documented stall of AdamW's second moment in bf16 under RNE.
"""

from __future__ import annotations

import math

import pytest
import torch

import lowbit as lb
from lowbit.optim import LowPrecisionAdamW, LowPrecisionSGD


def _ulp_bf16(w: torch.Tensor) -> torch.Tensor:
    """Spacing of bf16 numbers at |w| (normal range): 2**(floor(log2|w|) - 7)."""
    return torch.exp2(torch.floor(torch.log2(w.abs())) - 7)


def test_first_step_rne_drops_sub_half_ulp_updates_sr_keeps_them_in_expectation() -> None:
    n, lr = 20000, 1.0
    g = torch.Generator().manual_seed(0)
    # inside (1, 2), away from the binade ends where the spacing below halves: 2**-7 both ways
    w0 = lb.round(1.05 + 0.9 * torch.rand(n, generator=g), "bf16")
    ulp = _ulp_bf16(w0)
    # every update is below half a spacing: RNE must return every weight unchanged
    delta = (torch.rand(n, generator=g) * 2 - 1) * 0.49 * ulp
    results = {}
    for mode in ("rne", "sr"):
        p = w0.clone().requires_grad_()
        opt = LowPrecisionSGD([p], lr=lr, weight_fmt="bf16", update_mode=mode, seed=5)
        p.grad = -delta.clone()  # w - lr * grad = w + delta
        opt.step()
        results[mode] = p.detach() - w0
    assert (results["rne"] == 0).all()
    # SR moves a weight by one spacing with probability |delta| / ulp, in delta's direction
    prob = (delta.abs() / ulp).double()
    moved = (results["sr"] != 0).double()
    sigma = math.sqrt(float((prob * (1 - prob)).sum()))
    assert abs(float(moved.sum() - prob.sum())) <= 5 * sigma
    assert ((results["sr"] == 0) | (results["sr"].abs() == ulp)).all()
    assert (torch.sign(results["sr"]) * torch.sign(delta) >= 0).all()
    # unbiased: the mean change equals the mean requested change within 5 sigma
    var = (ulp.double() ** 2 * prob * (1 - prob)).sum()
    err = float(results["sr"].double().sum() - delta.double().sum())
    assert abs(err) <= 5 * math.sqrt(float(var))


class _Regression:
    """Least squares 0.5 * mean((X w - y)**2) with its optimum w* in [1, 2) and a start
    w0 in [0.6, 2.4] (no tiny weights, whose fine bf16 spacing would let small steps through).
    """

    def __init__(self, n: int = 256, d: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.X = torch.randn(n, d, generator=g)
        self.w_star = 1 + torch.rand(d, generator=g)
        self.y = self.X @ self.w_star
        self.H = (self.X.T @ self.X / n).double()
        self.w0 = self.w_star + 0.8 * (torch.rand(d, generator=g) - 0.5)

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.X @ w - self.y) ** 2).mean()

    def train(self, opt_cls, steps: int, **kw) -> tuple[torch.Tensor, list[float], list[int]]:
        w = self.w0.clone().requires_grad_()
        opt = opt_cls([w], **kw)
        losses, changed = [], []
        for _ in range(steps):
            opt.zero_grad()
            loss = self.loss(w)
            loss.backward()
            before = w.detach().clone()
            opt.step()
            losses.append(float(loss.detach()))
            changed.append(int((w.detach() != before).sum()))
        return w.detach(), losses, changed


def test_linear_regression_bf16_rne_stalls_sr_reaches_fp32_loss() -> None:
    prob, lr, steps = _Regression(), 5e-3, 1000
    kw = dict(lr=lr, state_fmt=None, seed=1)
    w32, _, _ = prob.train(LowPrecisionSGD, steps, weight_fmt=None, **kw)
    w_rne, l_rne, ch_rne = prob.train(
        LowPrecisionSGD, steps, weight_fmt="bf16", update_mode="rne", **kw
    )
    w_sr, _, ch_sr = prob.train(LowPrecisionSGD, steps, weight_fmt="bf16", update_mode="sr", **kw)
    loss32, loss_rne, loss_sr = (float(prob.loss(w)) for w in (w32, w_rne, w_sr))

    # RNE: the run ends at a fixed point of the rounded iteration, predicted exactly: every
    # coordinate's fp32 step lr * grad is below half a bf16 spacing, so nothing moves any more
    grad = prob.H @ (w_rne.double() - prob.w_star.double())
    assert ((lr * grad).abs() < _ulp_bf16(w_rne).double() / 2).all()
    assert sum(ch_rne[-200:]) == 0
    # SR never stops changing weights while the fp32 steps are nonzero
    assert sum(ch_sr[-200:]) > 0

    # SR tracks fp32 in expectation; what is left is the grid's own resolution: a point one
    # bf16 spacing from the optimum in every coordinate costs at most
    # 0.5 * lambda_max * sum(ulp(w*)**2)
    lam_max = float(torch.linalg.eigvalsh(prob.H).max())
    grid_floor = 0.5 * lam_max * float((_ulp_bf16(prob.w_star).double() ** 2).sum())
    assert loss_sr <= loss32 + grid_floor
    # RNE is stuck far above both: by more than a factor 100 of the SR loss here
    assert loss_rne > 100 * loss_sr
    assert loss_rne > 0.5 * l_rne[0]  # it barely left its starting loss


def test_adamw_bf16_rne_stalls_master_weights_and_sr_train() -> None:
    """Adam's first steps have size ~lr per coordinate: lr = 1e-3 is below half the bf16
    spacing (2**-8) of weights in [1, 2), so with RNE and no master copy nothing moves."""
    prob, steps = _Regression(), 600
    kw = dict(lr=1e-3, weight_decay=0.0, state_fmt=None, seed=2)
    _, l32, _ = prob.train(LowPrecisionAdamW, steps, weight_fmt=None, **kw)
    _, l_rne, ch_rne = prob.train(LowPrecisionAdamW, steps, weight_fmt="bf16", **kw)
    _, l_sr, _ = prob.train(LowPrecisionAdamW, steps, weight_fmt="bf16", update_mode="sr", **kw)
    _, l_m, _ = prob.train(LowPrecisionAdamW, steps, weight_fmt="bf16", master_weights=True, **kw)
    assert sum(ch_rne) == 0 and l_rne[-1] == l_rne[0]
    drop32 = l32[0] - l32[-1]
    assert drop32 > 0.5 * l32[0]
    # SR and master weights both get (nearly) the fp32 decrease of the loss
    for lo in (l_sr, l_m):
        assert l32[0] - lo[-1] >= 0.95 * drop32


@pytest.mark.parametrize("g_val", [0.5, 3e-3])
def test_adamw_second_moment_bf16_rne_freezes_sr_tracks(g_val: float) -> None:
    """With a steady gradient g, v_t -> g**2 (1 - beta2**t). Stored in bf16 with RNE it stops
    where 1e-3 * (g**2 - v) falls below half a spacing of v, i.e. between g**2 / 4.92 and
    g**2 / 2.95; SR keeps the running average unbiased."""
    n, steps, b2 = 4096, 2000, 0.999
    out = {}
    for fmt, mode in ((None, "rne"), ("bf16", "rne"), ("bf16", "sr")):
        p = torch.zeros(n, requires_grad=True)
        opt = LowPrecisionAdamW(
            [p], lr=0.0, weight_decay=0.0, weight_fmt=None, state_fmt=fmt, state_mode=mode, seed=4
        )
        for _ in range(steps):
            p.grad = torch.full((n,), g_val)
            opt.step()
        out[(fmt, mode)] = opt.state[p]["exp_avg_sq"].double()
    g2 = g_val**2
    exact = g2 * (1 - b2**steps)
    assert abs(float(out[(None, "rne")][0]) - exact) <= 1e-4 * exact
    v_rne = out[("bf16", "rne")]
    assert (v_rne == v_rne[0]).all()
    v = float(v_rne[0])
    assert g2 / 4.92 <= v <= g2 / 2.95
    # it is a fixed point of the rounded update
    nxt = lb.round(torch.tensor([v], dtype=torch.float32) * b2 + (1 - b2) * g2, "bf16")
    assert float(nxt) == v
    # SR: the mean over independent elements matches the fp32 value; the stationary spread of
    # one element is below ulp / 2 / sqrt(1 - b2**2)
    v_sr = out[("bf16", "sr")]
    ulp = float(_ulp_bf16(torch.tensor([exact]))[0])
    sigma = ulp / 2 / math.sqrt(1 - b2**2) / math.sqrt(n)
    assert abs(float(v_sr.mean()) - float(out[(None, "rne")][0])) <= 5 * sigma
