"""``lowbit assign`` in-process: the printed tables and JSON against the Python API."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from lowbit.cli.assign_cmd import parse_ratios  # noqa: E402
from lowbit.cli.main import main  # noqa: E402
from lowbit.methods.assign import assign, tensor_groups  # noqa: E402
from lowbit.models import build_model  # noqa: E402


@pytest.fixture(scope="module")
def graph():
    m = build_model("resnet-small", in_channels=1, num_classes=10, image_size=8)
    return tensor_groups(m, torch.zeros(2, 1, 8, 8), batch_size=64)


def test_parse_ratios() -> None:
    assert parse_ratios("0,0.1,...,1") == [round(k / 10, 10) for k in range(11)]
    assert parse_ratios("0.25, 0.5") == [0.25, 0.5]
    for bad in ("", "0.5,2", "a", "0,...,1", "0.5,0.4,...,1"):
        with pytest.raises(ValueError, match="--r"):
            parse_ratios(bad)


def test_tables_show_formats_and_memory_per_r(graph, capsys) -> None:
    rc = main(["assign", "--data", "digits", "--batch-size", "64", "--r", "0,0.25,...,0.75"])
    out = capsys.readouterr().out
    assert rc == 0
    for head in ("r≥0", "r≥0.25", "r≥0.5", "r≥0.75", "Memory per assignment"):
        assert head in out
    lines = out.splitlines()
    for r in (0.25, 0.5, 0.75):
        a = assign(graph, r, "ours")
        row = next(ln for ln in lines if ln.startswith("│ ours") and f" {r:g} " in ln)
        assert f"{a.ratio:.4f}" in row and f"{len(a.demoted)}/{len(graph.groups)}" in row
        assert f"{a.low_size:,}" in row
    # the largest group is demoted first: at r >= 0.25 its GEMM output is 1-4-3 b4
    row = next(ln for ln in lines if ln.startswith("│ stages.0.0.conv2.Y "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[3:] == ["1-6-9", "1-4-3 b4", "1-4-3 b4", "1-4-3 b4"]
    row = next(ln for ln in lines if ln.startswith("│ stages.0.0.conv2.GY "))
    assert [c.strip() for c in row.strip("│").split("│")][4] == "1-5-2"


def test_json_matches_the_api(graph, capsys) -> None:
    rc = main(
        [
            "assign",
            "--data",
            "digits",
            "--batch-size",
            "64",
            "--r",
            "0.5",
            "--scheme",
            "smallest_first",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    a = assign(graph, 0.5, "smallest_first")
    (got,) = d["assignments"]
    assert got["r"] == a.ratio and got["demoted"] == list(a.demoted)
    assert got["memory_bits_saved"] == a.memory_bits
    assert got["tensors"] == a.table()
    assert [g["group"] for g in d["groups"]] == [g.name for g in graph.groups]


def test_pi_op_and_errors(graph, capsys) -> None:
    rc = main(["assign", "--data", "digits", "--scheme", "pi_op", "--batch-size", "64"])
    out = capsys.readouterr().out
    assert rc == 0 and "pi_op" in out
    a = assign(graph, None, "pi_op")
    assert f"{a.ratio:.4f}" in out
    rc = main(["assign", "--data", "digits", "--scheme", "largest"])
    err = capsys.readouterr().err
    assert rc == 2 and "accepted: ours" in err
    rc = main(["assign", "--data", "digits", "--r", "1.5"])
    assert rc == 2 and "[0, 1]" in capsys.readouterr().err
