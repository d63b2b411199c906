"""The README tells the truth: its code runs, its CLI output is what the CLI prints, its format
table is the registry's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lowbit.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text()
SETUP = (
    "make demo   # creates .venv, installs lowbit, trains one int8 model switchable to 8/6/4/2 "
    "bits, prints its accuracy table\n"
    "make test   # creates .venv if needed, installs the test extras, runs ruff and the whole "
    "test suite\n"
)


def blocks(lang: str) -> list[str]:
    """Fenced code blocks of one language, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, flags=re.S)


def test_setup_commands_near_the_top():
    first = blocks("bash")[0]
    assert first == SETUP
    assert TEXT.index(SETUP) < 400


def test_python_examples_run():
    namespace: dict[str, object] = {}
    code = blocks("python")
    assert len(code) >= 3
    for block in code:
        exec(compile(block, str(README), "exec"), namespace)


@pytest.mark.parametrize("block", blocks("console"), ids=lambda b: b.splitlines()[0][2:40])
def test_cli_output_is_what_the_cli_prints(block: str, capsys: pytest.CaptureFixture[str]):
    cmd, _, expected = block.partition("\n")
    assert cmd.startswith("$ lowbit ")
    rc = main(shlex.split(cmd)[2:])
    out = capsys.readouterr().out
    assert rc == 0
    assert [ln.rstrip() for ln in out.splitlines()] == [ln.rstrip() for ln in expected.splitlines()]


def test_formats_table_is_the_registry(capsys: pytest.CaptureFixture[str]):
    table = TEXT.split("<!-- formats:begin -->\n")[1].split("<!-- formats:end -->")[0]
    assert main(["formats", "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == table.strip()
