"""Posit formats (Posit Standard 2022; older papers' ``<n, es>`` variants too).

A posit<n, es> code is two's complement: sign, a run-length regime k, up to ``es`` exponent bits
and the remaining fraction bits. The value is ``useed**k * 2**e * (1 + f)`` with
``useed = 2**(2**es)``. There is one zero, no −0, no infinities, and one NaR (1 followed by
zeros). The 2022 standard fixes ``es = 2`` for every width.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class PositFormat:
    """posit<n, es>: ``n`` bits in all (3 ≤ n ≤ 32), ``es`` exponent bits (0 ≤ es ≤ 4)."""

    n: int
    es: int = 2
    name: str = ""

    def __post_init__(self) -> None:
        for field, val in (("n", self.n), ("es", self.es)):
            if not isinstance(val, int) or isinstance(val, bool):
                raise TypeError(f"{field} must be an int, got {val!r}")
        if not 3 <= self.n <= 32:
            raise ValueError(f"posit n={self.n} is out of range; accepted: 3..32")
        if not 0 <= self.es <= 4:
            raise ValueError(f"posit es={self.es} is out of range; accepted: 0..4")
        if not self.name:
            object.__setattr__(self, "name", f"posit<{self.n},{self.es}>")

    def __str__(self) -> str:
        return self.name

    @property
    def bits(self) -> int:
        return self.n

    @property
    def useed_log2(self) -> int:
        return 1 << self.es

    @property
    def max_exact(self) -> Fraction:
        return Fraction(2) ** (self.useed_log2 * (self.n - 2))

    @property
    def max(self) -> float:
        """maxpos = useed^(n-2)."""
        return float(self.max_exact)

    @property
    def min_normal(self) -> float:
        """minpos = useed^-(n-2); posits have no subnormals."""
        return float(1 / self.max_exact)

    @property
    def min_subnormal(self) -> float:
        return self.min_normal

    @property
    def eps(self) -> float:
        """Spacing just above 1: 2^-(n-3-es) fraction bits are left there."""
        return 2.0 ** -max(self.n - 3 - self.es, 0)

    @property
    def unit_roundoff(self) -> float:
        return self.eps / 2

    @property
    def nar_code(self) -> int:
        return 1 << (self.n - 1)

    def decode_exact(self, code: int) -> Fraction | None:
        """Exact value of a code; ``None`` for NaR."""
        n = self.n
        if not 0 <= code < (1 << n):
            raise ValueError(f"code {code} out of range for {self.name} ({n} bits)")
        if code == 0:
            return Fraction(0)
        if code == self.nar_code:
            return None
        sign = code >> (n - 1)
        if sign:
            code = (-code) & ((1 << n) - 1)
        bits = [(code >> (n - 2 - i)) & 1 for i in range(n - 1)]  # after the sign bit
        first = bits[0]
        run = 1
        while run < len(bits) and bits[run] == first:
            run += 1
        k = run - 1 if first == 1 else -run
        rest = bits[run + 1 :]  # skip the regime terminator
        e_bits = rest[: self.es]
        e = 0
        for b in e_bits:
            e = (e << 1) | b
        e <<= self.es - len(e_bits)  # truncated exponent bits are zeros
        f_bits = rest[self.es :]
        frac = Fraction(0)
        for i, b in enumerate(f_bits):
            if b:
                frac += Fraction(1, 1 << (i + 1))
        val = Fraction(2) ** (k * self.useed_log2 + e) * (1 + frac)
        return -val if sign else val

    def decode(self, code: int) -> float:
        val = self.decode_exact(code)
        return float("nan") if val is None else float(val)
