"""AutoNumerics (Real et al. 2023, arXiv 2312.08472): evolve the cheapest straight-line
programs of add / sub / mul / fma / scale-by-constant that approximate a function, scored by
maximum error and operation count, in float64 or with every operation rounded in a format.

In a format the fitness is exhaustive: the program runs on *every* input of the format in the
interval, each operation correctly rounded by :mod:`lowbit.arith`, and the error is measured in
ulps of the true result, so a program found is proven correct to that bound there.

Typical use::

    from lowbit.methods import autonumerics as an

    res = an.search("exp2", (0, 1), fmt="bf16", budget=2000, seed=0)
    print(res.markdown())
    res.plot("exp2_bf16.png", bound=1.0)
    print(res.arith_code(res.cheapest(1.0)))
"""

from lowbit.methods.autonumerics.baselines import (
    Baseline,
    format_baselines,
    minimax_coefficients,
    real_baselines,
    remez,
    taylor_coefficients,
)
from lowbit.methods.autonumerics.constants import (
    fit_constants,
    minimax_lp,
    refine_discrete,
    weighted_error,
)
from lowbit.methods.autonumerics.emit import compile_source, to_arith_source, to_numpy_source
from lowbit.methods.autonumerics.evolve import (
    EvolveConfig,
    EvolveState,
    Individual,
    crowding_distance,
    evolve,
    nondominated_sort,
    pareto_front,
)
from lowbit.methods.autonumerics.mutations import (
    change_op,
    insert,
    mutate,
    random_program,
    remove,
    rewire,
    simplify,
)
from lowbit.methods.autonumerics.problem import (
    FIXED_ULP,
    FormatProblem,
    RealProblem,
    make_problem,
)
from lowbit.methods.autonumerics.program import (
    OPS,
    Program,
    Vertex,
    affine_form,
    evaluate,
    evaluate_in_format,
    format_inputs,
    horner,
    jacobian,
    round_constants,
    ulp,
)
from lowbit.methods.autonumerics.search import FrontEntry, SearchResult, search
from lowbit.methods.autonumerics.targets import TARGETS, Target, get_target, reference

__all__ = [
    "FIXED_ULP",
    "OPS",
    "TARGETS",
    "Baseline",
    "EvolveConfig",
    "EvolveState",
    "FormatProblem",
    "FrontEntry",
    "Individual",
    "Program",
    "RealProblem",
    "SearchResult",
    "Target",
    "Vertex",
    "affine_form",
    "change_op",
    "compile_source",
    "crowding_distance",
    "evaluate",
    "evaluate_in_format",
    "evolve",
    "fit_constants",
    "format_baselines",
    "format_inputs",
    "get_target",
    "horner",
    "insert",
    "jacobian",
    "make_problem",
    "minimax_coefficients",
    "minimax_lp",
    "mutate",
    "nondominated_sort",
    "pareto_front",
    "random_program",
    "real_baselines",
    "reference",
    "refine_discrete",
    "remez",
    "remove",
    "rewire",
    "round_constants",
    "search",
    "simplify",
    "taylor_coefficients",
    "to_arith_source",
    "to_numpy_source",
    "ulp",
    "weighted_error",
]
