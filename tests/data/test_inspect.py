"""``cnnlab data inspect``/``list``/``cache``: the data doctor's table, JSON and figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from messy import BAD, GOOD_PER_CLASS, ODD_BUT_FINE, noise, write_messy_folder

from cnnlab.data.inspect import inspect_data


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    return write_messy_folder(tmp_path / "messy")


def test_report_counts_skips_duplicates_and_leakage(messy):
    report = inspect_data(messy, decode=True).report
    train, test = report["splits"]["train"], report["splits"]["test"]
    assert train["classes"]["cat"]["count"] == GOOD_PER_CLASS + len(ODD_BUT_FINE)
    assert train["classes"]["dog"]["count"] == GOOD_PER_CLASS + 2  # nested + duplicate
    assert train["classes"]["cat"]["skipped"] == len(BAD)
    assert test["count"] == 9 and test["classes"]["cat"]["count"] == 5
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped"]}.keys() == BAD.keys()
    cat = train["classes"]["cat"]
    assert set(cat["formats"]) == {"PNG", "JPEG", "GIF"} and {"CMYK", "RGBA", "I;16", "P"} <= set(cat["modes"])
    assert cat["size"] == {"min": "12x20", "median": "16x16", "max": "16x16"}  # by pixel count
    [dup] = report["duplicates"]
    assert dup["split"] == "train" and sorted(Path(p).name for p in dup["paths"]) == ["dup_of_0.png", "img_0.png"]
    [leak] = report["leakage"]
    assert sorted((f["split"], Path(f["path"]).name)
                  for f in leak["files"]) == [("test", "leak.png"), ("train", "img_0.png")]
    assert report["imbalance"]["train"] == round(17 / 12, 2)
    assert report["verdict"].startswith("3 problems: 4 files skipped")
    assert "leakage" in report["verdict"] and "duplicate" in report["verdict"]


def test_header_only_check_misses_only_the_truncated_file(messy):
    report = inspect_data(messy).report
    assert {Path(s["path"]).name for s in report["skipped"]} == set(BAD) - {"truncated.jpg"}


def test_cli_table_json_and_figures(cli, messy, tmp_path):
    code, out, _ = cli("data", "inspect", messy, "--out", tmp_path / "figs", "--decode")
    assert code == 0
    for fragment in ("cat", "dog", "skipped files (4)", "leak.png", "dup_of_0.png", "verdict: 3 problems", "zero-byte"):
        assert fragment in out, fragment
    for name in ("samples.png", "class_counts.png"):
        assert (tmp_path / "figs" / name).stat().st_size > 1000 and name in out
    code, out, _ = cli("data", "inspect", messy, "--format", "json", "--strict")
    assert code == 1
    report = json.loads(out)
    assert report["images"] == 12 + 17 + 9 + 1  # truncated.jpg passes a header-only check
    assert len(report["leakage"]) == 1 and report["verdict"] == "3 problems: " + "; ".join(report["problems"])


def test_clean_folder_is_ok_and_conflicting_labels_are_found(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "clean" / c).mkdir(parents=True)
        for i in range(12):
            noise(i + (0 if c == "a" else 50)).save(tmp_path / "clean" / c / f"{i}.png")
    assert inspect_data(tmp_path / "clean").report["verdict"] == "OK"
    noise(0).save(tmp_path / "clean" / "b" / "same_as_a0.png")
    report = inspect_data(tmp_path / "clean").report
    assert len(report["conflicts"]) == 1 and "under different labels" in report["verdict"]
    assert "held-out val/test may get copies" not in report["verdict"]  # a conflict, not a duplicate


def test_data_list_and_errors(cli, tmp_path):
    code, out, _ = cli("data", "list")
    assert code == 0
    assert all(name in out for name in ("mnist-sample", "digits", "synthetic-colors", "cifar10", "online"))
    code, _, err = cli("data", "inspect", tmp_path / "nope")
    assert code == 2 and "not found" in err
    code, _, err = cli("data", "cache", tmp_path, "--image-size", "4")
    assert code == 2 and "--image-size must be between 8 and 4096, got 4" in err  # train's check


def test_data_cache_warms_the_cache_for_training(cli, messy):
    code, out, _ = cli("data", "cache", messy, "--image-size", "16")
    assert code == 0
    assert "cached 38 images at 16x16, 3 channels" in out and "4 unreadable" in out
    code, out, _ = cli("data", "cache")
    assert code == 0 and "38 images" in out
    assert cli("data", "cache", "--clear")[0] == 0


def test_data_cache_for_a_pretrained_model_warms_what_its_training_reads(cli, messy, counted):
    """Lite0's run stores 256 px (224 / crop_pct 0.875) in RGB: the cache must hold that, not 224."""
    from cnnlab.config import DataConfig
    from cnnlab.data.prepare import prepare_data
    from cnnlab.models import model_input

    code, out, _ = cli("data", "cache", messy, "--model", "efficientnet_lite0", "--pretrained")
    assert code == 0 and "cached 38 images at 256x256, 3 channels" in out
    counted.clear()
    prepare_data(DataConfig(source=str(messy)), 0, model_input("efficientnet_lite0", True).needs())
    assert sorted(counted) == sorted(BAD)  # only the unreadable files are tried again: the rest came from the cache


def test_data_cache_builds_the_record_store_and_clear_removes_it(cli, messy):
    code, out, _ = cli("data", "cache", messy, "--image-size", "16", "--image-store", "disk")
    assert code == 0 and "cached 38 images at 16x16" in out and "records" in out
    code, out, _ = cli("data", "cache")
    assert code == 0 and "2 record stores" in out and "0 images" in out  # one per split; no SQLite entries
    assert cli("data", "cache", "--clear")[0] == 0
    assert "0 record stores" in cli("data", "cache")[1]
