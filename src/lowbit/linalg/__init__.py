"""Layer 4: numerical linear algebra in low precision (``lowbit.linalg``).

* :func:`sum` — recursive, pairwise and Kahan summation with every addition rounded to a
  format, and :func:`bound` — their a-priori error bounds (Higham, ch. 4).
* :func:`lu` / :func:`lu_solve` — LU with partial pivoting, every operation rounded.
* :func:`solve_ir` — LU-IR and GMRES-IR in three precisions (Carson & Higham 2018).
* :func:`randsvd` — random matrices with a prescribed condition number.
"""

from lowbit.linalg.factorization import LUFactors, lu, lu_solve
from lowbit.linalg.refine import IRInfo, backward_error, randsvd, solve_ir
from lowbit.linalg.summation import ALGORITHMS, bound, gamma, sum, unit_roundoff

__all__ = [
    "ALGORITHMS",
    "IRInfo",
    "LUFactors",
    "backward_error",
    "bound",
    "gamma",
    "lu",
    "lu_solve",
    "randsvd",
    "solve_ir",
    "sum",
    "unit_roundoff",
]
