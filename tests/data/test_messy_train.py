"""``cnnlab train`` on a folder of every bad case: it completes and lists exactly the bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from messy import BAD, write_messy_folder

from cnnlab.cli.main import main


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def test_train_completes_and_skipped_files_lists_exactly_the_bad_ones(tmp_path, capsys):
    data = write_messy_folder(tmp_path / "messy")
    runs = tmp_path / "runs"
    code = main(["train", str(data), "--epochs", "1", "--batch-size", "8", "--runs-dir", str(runs), "--name", "m"])
    err = capsys.readouterr().err
    assert code == 0, err
    with (runs / "m" / "skipped_files.csv").open(newline="") as handle:
        rows = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(handle)}
    assert set(rows) == set(BAD), rows
    for name, fragment in BAD.items():
        assert fragment in rows[name], (name, rows[name])
    warnings = [line for line in err.splitlines() if line.startswith("warning:") and "skipped" in line]
    assert len(warnings) == 1 and "4 files skipped" in warnings[0]
    # the second run reads the decoded cache and gives the same split
    code = main(["train", str(data), "--epochs", "1", "--batch-size", "8", "--runs-dir", str(runs), "--name", "m2"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "cache" / "decoded" / "decoded.sqlite").is_file()
    first, second = (json.loads((runs / name / "run.json").read_text())["data"]["splits"] for name in ("m", "m2"))
    assert {s: first[s]["fingerprint"] for s in first} == {s: second[s]["fingerprint"] for s in second}
