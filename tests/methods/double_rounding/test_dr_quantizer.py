"""The Double Rounding quantizer: integer switch, float training path, STE/LSQ gradients."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lowbit.methods.double_rounding import (  # noqa: E402
    DoubleRoundingQuantizer,
    dequantize,
    init_scale,
    switch,
)
from lowbit.methods.double_rounding.quantizer import DoubleRoundFn  # noqa: E402

ALL_CODES = list(range(-128, 128))


def oracle_round(c: int, k: int, bits: int) -> int:
    """clip(round_half_even(c / 2^k)) with exact rationals (Python rounds Fractions to even)."""
    q = round(Fraction(c, 2**k))
    return min(max(q, -(2 ** (bits - 1))), 2 ** (bits - 1) - 1)


def oracle_floor(c: int, k: int) -> int:
    return math.floor(Fraction(c, 2**k))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int64])
def test_switch_round_matches_exact_rationals_on_every_int8_code(dtype):
    codes = torch.tensor(ALL_CODES, dtype=dtype)
    for bits in range(2, 9):
        got = switch(codes, 8, bits, "round")
        assert got.dtype == dtype
        want = [oracle_round(c, 8 - bits, bits) for c in ALL_CODES]
        assert got.tolist() == want, bits


def test_switch_floor_is_floor_division_on_every_int8_code():
    codes = torch.tensor(ALL_CODES, dtype=torch.int8)
    for bits in range(2, 9):
        got = switch(codes, 8, bits, "floor")
        want = [oracle_floor(c, 8 - bits) for c in ALL_CODES]
        assert got.tolist() == want, bits
        # truncation never leaves the l-bit range, so it needs no clip
        assert min(want) == -(2 ** (bits - 1)) and max(want) == 2 ** (bits - 1) - 1


def test_switch_rounds_ties_to_even():
    # k = 2: 2/4 = 0.5 -> 0, 6/4 = 1.5 -> 2, -2/4 -> -0, -6/4 -> -2, 10/4 = 2.5 -> 2
    got = switch(torch.tensor([2, 6, -2, -6, 10, -10], dtype=torch.int8), 8, 6, "round")
    assert got.tolist() == [0, 2, 0, -2, 2, -2]


def test_switch_between_lower_widths_and_identity():
    codes = torch.tensor(list(range(-8, 8)), dtype=torch.int8)  # 4-bit codes
    assert switch(codes, 4, 2).tolist() == [oracle_round(c, 2, 2) for c in range(-8, 8)]
    same = switch(codes, 4, 4)
    assert torch.equal(same, codes) and same.data_ptr() != codes.data_ptr()


def test_switch_rejects_bad_input():
    c = torch.zeros(3, dtype=torch.int8)
    with pytest.raises(TypeError, match="integer torch tensor"):
        switch(c.float(), 8, 4)
    with pytest.raises(ValueError, match="to_bits=9 is out of range"):
        switch(c, 8, 9)
    with pytest.raises(ValueError, match="to_bits=1 is out of range"):
        switch(c, 8, 1)
    with pytest.raises(ValueError, match="method='ceil'; accepted: 'round', 'floor'"):
        switch(c, 8, 4, "ceil")


@pytest.mark.parametrize("method", ["round", "floor"])
def test_float_training_path_equals_integer_switch_on_every_code(method):
    # Two channels holding all 256 codes; weights are exactly code * scale.
    codes = torch.tensor(ALL_CODES, dtype=torch.int8).reshape(2, 128)
    scale = torch.tensor([0.0137, 3.1], dtype=torch.float32)
    q = DoubleRoundingQuantizer(2)
    with torch.no_grad():
        q.scale.copy_(scale)
    w = dequantize(codes, scale)
    assert torch.equal(q.codes(w), codes)
    for bits in range(2, 9):
        w_l = switch(codes, 8, bits, method)
        assert torch.equal(q.int_weight(w, bits, method), w_l)
        fwd = q(w, bits, method).detach()
        want = dequantize(w_l, scale, 8 - bits)
        # bitwise (torch.equal would let -0.0 pass for +0.0)
        assert torch.equal(fwd.view(torch.int32), want.view(torch.int32)), bits


def test_first_rounding_is_half_even_and_clips():
    s = 0.125  # a power of two: (c + 1/2) * s and its quotient are exact
    q = DoubleRoundingQuantizer(1)
    with torch.no_grad():
        q.scale.fill_(s)
    halves = [Fraction(2 * c + 1, 2) for c in range(-131, 131)]
    w = torch.tensor([[float(x * Fraction(s)) for x in halves]])
    want = [min(max(round(x), -128), 127) for x in halves]
    assert q.codes(w)[0].tolist() == want


def test_lsq_gradients_by_hand():
    w = torch.tensor([[0.3, -0.1, 40.0, -0.55]], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([[0.25]], dtype=torch.float64, requires_grad=True)
    gout = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)

    # 8 bits: v = w/s = [1.2, -0.4, 160, -2.2] -> codes [1, 0, 127 (clipped), -2]
    # dŴ/ds = [1-1.2, 0+0.4, 127, -2+2.2]; g = 1/sqrt(4*127)
    out = DoubleRoundFn.apply(w, s, 8, 8, 1 / math.sqrt(4 * 127), "round", False)
    assert out.tolist() == [[0.25, 0.0, 31.75, -0.5]]
    gw, gs = torch.autograd.grad(out, (w, s), gout)
    assert gw.tolist() == [[1.0, 2.0, 0.0, 4.0]]
    want = (1 * -0.2 + 2 * 0.4 + 3 * 127 + 4 * 0.2) / math.sqrt(4 * 127)
    assert gs.item() == pytest.approx(want, rel=1e-13)

    # 4 bits (k = 4): codes/16 = [0.0625, 0, 7.9375, -0.125] -> [0, 0, 8 -> 7, 0];
    # u = v/16 = [0.075, -0.025, 10, -0.1375]; dŴ/ds = 16 * [-0.075, 0.025, 7, 0.1375]
    out = DoubleRoundFn.apply(w, s, 8, 4, 1 / math.sqrt(4 * 7), "round", False)
    assert out.tolist() == [[0.0, 0.0, 28.0, 0.0]]
    gw, gs = torch.autograd.grad(out, (w, s), gout)
    assert gw.tolist() == [[1.0, 2.0, 0.0, 4.0]]
    want = (1 * -1.2 + 2 * 0.4 + 3 * 112 + 4 * 2.2) / math.sqrt(4 * 7)
    assert gs.item() == pytest.approx(want, rel=1e-13)


def _detach_trick_oracle(w, s, h, bits, g, method, unsigned):
    """Independent formulation: STE by ``x + (q - x).detach()``, LSQ gradient scale by
    ``s*g + (s - s*g).detach()`` (the LSQ paper's recipe)."""
    k = h - bits
    h_lo, h_hi = (0, 2**h - 1) if unsigned else (-(2 ** (h - 1)), 2 ** (h - 1) - 1)
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    sg = s * g + (s - s * g).detach()
    v = w / sg
    c_h = torch.round(v.detach()).clamp(h_lo, h_hi)
    f = torch.round if method == "round" else torch.floor
    c_l = f(c_h / 2**k).clamp(lo, hi)
    u = v / 2**k
    if method == "round":
        uc = u.clamp(max(lo, h_lo / 2**k), min(hi, h_hi / 2**k))
    else:
        uc = u.clamp(h_lo / 2**k, h_hi / 2**k)
    return (uc + (c_l - uc).detach()) * sg * 2**k


@pytest.mark.parametrize("method", ["round", "floor"])
def test_gradients_match_detach_trick_oracle(method):
    gen = torch.Generator().manual_seed(3)
    for bits in range(2, 9):
        w = (torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64) * 0.4).requires_grad_()
        s = torch.rand(5, 1, 1, 1, generator=gen, dtype=torch.float64) * 0.01 + 0.002
        s.requires_grad_()
        gout = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64)
        g = 1 / math.sqrt(27 * (2 ** (bits - 1) - 1))
        out = DoubleRoundFn.apply(w, s, 8, bits, g, method, False)
        ref = _detach_trick_oracle(w, s, 8, bits, g, method, False)
        # uc + (c_l - uc) is c_l only up to rounding in the oracle
        torch.testing.assert_close(out, ref.detach(), rtol=1e-14, atol=1e-16)
        got = torch.autograd.grad(out, (w, s), gout)
        want = torch.autograd.grad(ref, (w, s), gout)
        # the oracle's w/sg·sg chain is 1 only up to rounding: compare closely, not bitwise
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-15)
        # the scale gradient is a difference of two sums: allow for cancellation
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-13)
        # some weights are clipped at every width, so both branches are exercised
        assert 0 < int((got[0] == 0).sum()) < got[0].numel()


def test_unsigned_activation_path_matches_oracle():
    gen = torch.Generator().manual_seed(4)
    for bits in (2, 4, 8):
        x = torch.relu(torch.randn(64, generator=gen, dtype=torch.float64)).requires_grad_()
        s = torch.tensor(0.7 / (2**bits - 1), dtype=torch.float64, requires_grad=True)
        g = 1 / math.sqrt(64 * (2**bits - 1))
        out = DoubleRoundFn.apply(x, s, bits, bits, g, "round", True)
        ref = _detach_trick_oracle(x, s, bits, bits, g, "round", True)
        torch.testing.assert_close(out, ref.detach(), rtol=1e-14, atol=1e-16)
        assert float(out.detach().min()) >= 0
        assert float(out.detach().max()) <= (2**bits - 1) * float(s.detach())
        got = torch.autograd.grad(out.sum(), (x, s))
        want = torch.autograd.grad(ref.sum(), (x, s))
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-13)


def test_quantizer_module_uses_lsq_factor_of_its_width():
    q = DoubleRoundingQuantizer(2).double()
    w = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    q.init_from(w)
    for bits in (8, 3):
        q.zero_grad()
        q(w, bits).sum().backward()
        s = q.scale.detach().reshape(2, 1)
        g = 1 / math.sqrt(6 * (2 ** (bits - 1) - 1))
        ref_s = s.clone().requires_grad_()
        _detach_trick_oracle(w, ref_s, 8, bits, g, "round", False).sum().backward()
        torch.testing.assert_close(q.scale.grad, ref_s.grad.reshape(2), rtol=1e-10, atol=0)


def test_init_scale_is_mu_plus_minus_three_sigma_over_128():
    gen = np.random.default_rng(0)
    w = gen.normal(0.05, 0.2, size=(4, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0  # an all-zero channel falls back to the mean of the other scales
    flat = w.reshape(4, -1).astype(np.float64)
    mu, sd = flat.mean(1), flat.std(1)
    want = np.maximum(np.abs(mu - 3 * sd), np.abs(mu + 3 * sd)) / 128
    want[2] = want[[0, 1, 3]].mean()
    got = init_scale(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32


def test_quantizer_rejects_bad_width_and_method():
    q = DoubleRoundingQuantizer(1)
    w = torch.ones(1, 2)
    with pytest.raises(ValueError, match=r"bits=9 is out of range; accepted: 2\.\.8"):
        q(w, 9)
    with pytest.raises(TypeError, match="bits must be an int"):
        q(w, 4.0)
    with pytest.raises(ValueError, match="method='trunc'"):
        q(w, 4, "trunc")
