"""QuantConfig: validation, per-layer resolution, recipes, exact JSON/TOML round trips."""

from __future__ import annotations

import dataclasses

import pytest

from lowbit.nn import QuantConfig
from lowbit.nn.config import RECIPES, CastSpec

RICH = QuantConfig(
    weight="int4",
    act="e4m3",
    grad_act="e5m2",
    grad_weight="bf16",
    weight_mode="rne",
    act_mode="rna",
    grad_mode="sr",
    granularity="per_group",
    group_size=16,
    axis=1,
    scaling=None,
    grad_scaling="absmax",
    output="fp16",
    overflow="saturate",
    seed=7,
    overrides=(
        ("fc*", {"weight": "int8", "granularity": "per_channel", "group_size": None, "axis": 0}),
        ("head", {"grad_act": None, "scale": 0.125, "scaling": "fixed"}),
    ),
    skip=("stem.*", "head?"),
    grad_before_allreduce="e5m2",
)


# ---- validation ---------------------------------------------------------------------------------
def test_unknown_format_names_the_field_and_lists_known_names():
    with pytest.raises(ValueError, match=r"weight='e9m9x'.*known names"):
        QuantConfig(weight="e9m9x")


def test_unknown_mode_lists_accepted():
    with pytest.raises(ValueError, match="sr_equal"):
        QuantConfig(weight="e4m3", grad_mode="stochastic-ish")


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_scale_must_be_finite_positive(scale):
    with pytest.raises(ValueError, match="scale="):
        QuantConfig(weight="int8", scale=scale)


def test_fixed_scaling_needs_a_scale():
    with pytest.raises(ValueError, match="needs scale"):
        QuantConfig(weight="int8", scaling="fixed")


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(granularity="per_row"), "granularity='per_row'"),
        (dict(granularity="per_group"), "needs group_size"),
        (dict(granularity="per_group", group_size=0), "group_size=0"),
        (dict(group_size=32), "only used with granularity='per_group'"),
        (dict(scaling="minmax"), "scaling='minmax'"),
        (dict(grad_scaling="lsq"), "grad_scaling='lsq'"),
        (dict(overflow="wrap"), "overflow='wrap'"),
        (dict(scaling="lsq", weight="e4m3"), "lsq' needs integer formats"),
        (dict(weight="mxfp8", scaling="absmax"), "MX block format"),
        (dict(weight="uint8", scaling="absmax"), "unsigned"),
        (dict(grad_act="uint8"), "signed"),
        (dict(weight="e5m2", weight_mode="sr_bits"), "rand_bits"),
        (dict(weight="int8", seed=-1), "seed=-1"),
    ],
)
def test_bad_fields_raise_clear_errors(kw, msg):
    kw = {"weight": "int8", **kw}
    with pytest.raises(ValueError, match=msg):
        QuantConfig(**kw)


def test_type_errors():
    with pytest.raises(TypeError, match="axis must be an int"):
        QuantConfig(weight="int8", axis=1.5)
    with pytest.raises(TypeError, match="format name"):
        QuantConfig(weight=8)


def test_overflow_option_checked_against_the_format():
    # e4m3fn has no infinity: overflow="inf" is not one of its policies
    with pytest.raises(ValueError, match=r"act='e4m3'.*overflow='inf'"):
        QuantConfig(act="e4m3", overflow="inf")


def test_bad_override_names_its_pattern():
    with pytest.raises(ValueError, match=r"override 'fc\*'.*unknown format"):
        QuantConfig(weight="int8", overrides=(("fc*", {"weight": "int99x"}),))
    with pytest.raises(ValueError, match=r"override 'fc'.*cannot be overridden"):
        QuantConfig(overrides=(("fc", {"seed": 3}),))


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown QuantConfig keys \['wieght'\]"):
        QuantConfig.from_dict({"wieght": "int8"})


# ---- resolution ---------------------------------------------------------------------------------
def test_for_layer_applies_matching_overrides_in_order():
    cfg = QuantConfig(
        weight="int8",
        act="int8",
        overrides=(("layer*", {"weight": "int4"}), ("layer2", {"weight": "int2", "act": None})),
    )
    assert cfg.for_layer("layer1").weight == "int4"
    l2 = cfg.for_layer("layer2")
    assert (l2.weight, l2.act) == ("int2", None)
    assert cfg.for_layer("fc") is cfg
    assert cfg.skips("x") is False
    assert QuantConfig(skip=("a.*",)).skips("a.b")


def test_cast_spec_defaults():
    cfg = QuantConfig(
        weight="e4m3",
        act="int8",
        grad_act="e5m2",
        grad_weight="int8",
        output="bf16",
        granularity="per_channel",
        grad_mode="sr",
    )
    assert cfg.cast_spec("weight") == CastSpec(
        "e4m3", "rne", "absmax", "per_channel", 0, None, None, "saturate"
    )
    assert cfg.cast_spec("act") == CastSpec("int8", "rne", "absmax")
    assert cfg.cast_spec("grad_act") == CastSpec("e5m2", "sr", "none")
    assert cfg.cast_spec("grad_weight") == CastSpec("int8", "sr", "absmax")
    assert cfg.cast_spec("output") == CastSpec("bf16", "rne", "none", overflow=None)
    assert cfg.stochastic and not QuantConfig(weight="int8").stochastic
    assert QuantConfig().is_fp32 and QuantConfig().cast_spec("weight") is None
    g = QuantConfig(weight="int4", granularity="per_group", group_size=8).cast_spec("weight")
    assert (g.axis, g.group_size) == (1, 8)


def test_none_string_and_mode_aliases_are_canonicalised():
    cfg = QuantConfig(weight="none", act="e4m3", act_mode="nearest")
    assert cfg.weight is None and cfg.act_mode == "rne"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes(name):
    cfg = QuantConfig.from_recipe(name)
    assert {k: getattr(cfg, k) for k in RECIPES[name]} == RECIPES[name]
    assert QuantConfig.from_recipe(name, seed=3).seed == 3


def test_fp8_recipe_contents():
    c = QuantConfig.from_recipe("fp8")
    assert (c.weight, c.act, c.grad_act, c.grad_weight, c.grad_mode) == (
        "e4m3",
        "e4m3",
        "e5m2",
        "e5m2",
        "sr",
    )


def test_unknown_recipe():
    with pytest.raises(ValueError, match="accepted: fp8, w8a8"):
        QuantConfig.from_recipe("int3")


# ---- serialisation -------------------------------------------------------------------------
CONFIGS = [
    QuantConfig(),
    RICH,
    QuantConfig.from_recipe("fp8"),
    QuantConfig(weight="int8", scaling="lsq", scale=0.03125, act="uint4"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_dict_and_json_round_trip_exactly(cfg):
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    back = QuantConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.to_json() == cfg.to_json()
    assert hash(back) == hash(cfg)
    for f in dataclasses.fields(cfg):  # same types, not only equal values
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name


@pytest.mark.parametrize("cfg", CONFIGS)
def test_toml_round_trip_exactly(cfg, tmp_path):
    text = cfg.to_toml()
    assert QuantConfig.from_toml(text) == cfg
    assert QuantConfig.from_toml(text).to_json() == cfg.to_json()
    path = tmp_path / "q.toml"
    path.write_text(text)
    assert QuantConfig.from_toml(path) == cfg
    assert QuantConfig.from_toml(str(path)) == cfg


def test_hand_written_toml_with_recipe_table_and_override_tables():
    text = """
[train]
epochs = 3

[train.quant]
recipe = "w4a8"
seed = 5
skip = ["stem"]

[[train.quant.overrides]]
pattern = "fc"
weight = "int8"
act = "none"
"""
    cfg = QuantConfig.from_toml(text, table="train.quant")
    assert cfg == QuantConfig(
        weight="int4",
        act="int8",
        granularity="per_channel",
        seed=5,
        skip=("stem",),
        overrides=(("fc", {"weight": "int8", "act": None}),),
    )
    with pytest.raises(ValueError, match="no table 'quant'"):
        QuantConfig.from_toml(text, table="quant")
    with pytest.raises(ValueError, match="invalid TOML"):
        QuantConfig.from_toml("weight = ")


def test_overrides_accept_a_mapping():
    cfg = QuantConfig.from_dict({"weight": "int8", "overrides": {"a": {"weight": "int4"}}})
    assert cfg.overrides == (("a", {"weight": "int4"}),)


@pytest.mark.parametrize("grad_overflow", [None, "saturate"])
def test_gradient_overflow_reaches_the_loss_scaler(grad_overflow):
    # An e5m2 error signal beyond e5m2's max must become inf (torch's own float8 cast is the
    # oracle) unless the user asks to saturate; otherwise a loss scaler never sees overflow.
    torch = pytest.importorskip("torch")
    from lowbit.nn import QuantConfig, quantize_

    lin = quantize_(
        torch.nn.Linear(4, 3, bias=False),  # a bare layer: use the returned one
        QuantConfig(
            weight="e4m3",
            act="e4m3",
            grad_act="e5m2",
            grad_weight="e5m2",
            grad_overflow=grad_overflow,
        ),
    )
    x = torch.ones(2, 4, requires_grad=True)
    g = torch.full((2, 3), 1e6)
    lin(x).backward(g)
    expected = g.to(torch.float8_e5m2).float()  # inf: torch's cast does not saturate
    if grad_overflow == "saturate":
        expected = torch.full_like(g, 57344.0)
    assert torch.isinf(expected).all() == (grad_overflow is None)
    # dL/dx = round(round(G) @ W_hat): inf rows stay non-finite, saturated ones stay finite
    assert bool(torch.isfinite(x.grad).all()) == (grad_overflow == "saturate")
    assert bool(torch.isfinite(lin.weight.grad).all()) == (grad_overflow == "saturate")
