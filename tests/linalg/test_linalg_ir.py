"""Mixed-precision iterative refinement: convergence where theory says, failure beyond."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.linalg import backward_error, randsvd, solve_ir

U64 = 2.0**-53
U32 = 2.0**-24


def _system(n: int, kappa: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = randsvd(n, kappa, seed=seed)
    x = np.random.default_rng(seed + 100).standard_normal(n)
    return A, A @ x, x


def test_randsvd_condition_number() -> None:
    for kappa in (1e2, 1e6):
        assert np.linalg.cond(randsvd(30, kappa, seed=1)) == pytest.approx(kappa, rel=1e-6)


@pytest.mark.parametrize("solver", ["lu", "gmres"])
def test_ir_reaches_fp64_backward_error_for_kappa_1e2(solver: str) -> None:
    A, b, xt = _system(24, 1e2, seed=1)
    x, info = solve_ir(
        A, b, factor="fp16", working="fp64", residual="fp64", solver=solver, x_true=xt
    )
    assert info.converged and info.reason == "converged"
    assert info.backward_errors[-1] <= 2 * U64
    assert backward_error(A, x, b) == info.backward_errors[-1]
    assert info.backward_errors[0] > 1e-6  # fp16 factors alone give about 1e-4
    assert len(info.backward_errors) == info.iterations + 1
    assert info.forward_errors[-1] < 1e2 * 1e-15  # kappa * u
    if solver == "gmres":
        assert len(info.gmres_iterations) == info.iterations


def test_ir_default_precisions_reach_fp32() -> None:
    A, b, _ = _system(24, 1e2, seed=2)
    x, info = solve_ir(A, b)  # factor fp16, working fp32, residual fp64
    assert info.converged and info.backward_errors[-1] <= 2 * U32
    assert np.array_equal(x, x.astype(np.float32).astype(np.float64))  # x held in fp32


@pytest.mark.parametrize("seed", [1, 2])
def test_lu_ir_fails_for_kappa_1e8(seed: int) -> None:
    A, b, _ = _system(24, 1e8, seed=seed)
    _, info = solve_ir(A, b, factor="fp16", working="fp64", residual="fp64", solver="lu")
    assert not info.converged
    assert info.reason in ("stagnated", "diverged", "max_iter", "factorization failed")
    assert min(info.backward_errors) > 1e-10


def test_emulated_residual_and_bf16_factors() -> None:
    A, b, _ = _system(12, 10.0, seed=3)
    _, info = solve_ir(A, b, factor="bf16", working="fp32", residual="fp32")
    assert info.converged
    _, info = solve_ir(A, b, factor="e4m3", working="bf16", residual="fp32", max_iter=20)
    assert info.backward_errors[-1] < info.backward_errors[0]
    _, info = solve_ir(A, b, factor="fp16", working="fp64", residual="dd")
    assert info.converged and info.backward_errors[-1] <= 2 * U64
    with pytest.raises(ValueError, match="solver"):
        solve_ir(A, b, solver="cg")
