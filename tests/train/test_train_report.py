"""Report writers: CSV / Markdown / JSON / PNG files read back and compared with the History."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lowbit.train import History, markdown_table, rich_table, summary_rows, write_history

H = History(
    label="w8a8",
    epoch=[1, 2, 3],
    train_loss=[1.5, 0.75, 0.5],
    train_acc=[0.5, 0.75, 0.875],
    test_loss=[1.25, 0.625, 0.5],
    test_acc=[0.6, 0.8125, 0.8],
    seconds=[2.5, 2.0, 12.25],
    skipped_steps=[1, 0, 0],
    eval_seconds=[0.5, 0.5, 0.5],
)


def test_history_properties() -> None:
    assert H.final_test_acc == 0.8 and H.best_test_acc == 0.8125
    assert H.mean_epoch_seconds == (2.5 + 2.0 + 12.25) / 3
    assert History.from_dict(json.loads(json.dumps(H.to_dict()))) == H


def test_write_history_files_read_back(tmp_path: Path) -> None:
    paths = write_history(H, tmp_path / "out", stem="h", title="run")
    assert set(paths) == {"csv", "markdown", "json", "plot"}
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == H.epoch
    assert [float(r["test_acc"]) for r in rows] == H.test_acc
    assert [float(r["seconds"]) for r in rows] == H.seconds
    assert [int(r["skipped_steps"]) for r in rows] == H.skipped_steps
    assert History.from_dict(json.loads(paths["json"].read_text())) == H
    md = paths["markdown"].read_text().splitlines()
    assert md[0] == "# run"
    body = [line for line in md if line.startswith("| ") and not line.startswith("| epoch")]
    assert body[1] == "| 2 | 0.7500 | 75.00 | 0.6250 | 81.25 | 2.00 | 0 |"
    assert body[2].split(" | ")[5] == "12.2"  # ≥ 10 s: one decimal (12.25 rounds half-even)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_rows_and_tables() -> None:
    (row,) = summary_rows(H)
    assert row == {
        "run": "w8a8",
        "epochs": "3",
        "final test acc %": "80.00",
        "best test acc %": "81.25",
        "final train loss": "0.5000",
        "s / epoch": "5.58",
    }
    md = markdown_table([row, {**row, "run": "x"}]).splitlines()
    assert len(md) == 4 and md[1] == "|---|---:|---:|---:|---:|---:|"
    t = rich_table([row], title="t")
    assert [c.header for c in t.columns] == list(row) and t.row_count == 1
    assert markdown_table([]) == ""
