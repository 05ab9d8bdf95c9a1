"""Layouts: split folders, flat class folders, CSV/TSV listings, wrappers, litter and strays."""

from __future__ import annotations

from pathlib import Path

import pytest
from messy import noise, write_messy_folder

from cnnlab.config import DataConfig
from cnnlab.data.discover import discover
from cnnlab.data.prepare import prepare_data
from cnnlab.errors import CnnlabError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


def _images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noise(seed + i).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))


def test_csv_with_relative_paths_trains_from_its_own_folder(tmp_path, monkeypatch):
    base = tmp_path / "project"
    rows = ["path,label,split"]
    for c, name in enumerate(("cat", "dog")):
        for i, path in enumerate(_images(base / "pics" / name, 12, seed=50 * c)):
            rows.append(f"pics/{name}/{path.name},{name},{'test' if i < 2 else 'train'}")
    rows.append("pics\\cat\\0.png,cat,valid")  # written on Windows: backslashes, 'valid'
    (base / "labels.csv").write_text("\n".join(rows) + "\n\n")
    monkeypatch.chdir(tmp_path)  # relative to the CSV, not to the working folder
    listing = discover(Path("project/labels.csv"))
    assert listing.layout == "csv"
    assert {s: len(f) for s, f in listing.files.items()} == {"train": 20, "test": 4, "val": 1}
    assert listing.files["val"][0][0] == Path("project/pics/cat/0.png")
    data = prepare_data(DataConfig(source="project/labels.csv"), seed=0)
    assert data.class_names == ["cat", "dog"] and len(data.splits["test"]) == 4 and not data.skipped


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,class\na.png,cat\n", "needs a header with columns path,label"),
        ("path,label\na.png,\n", "line 2: empty path or label"),
        ("path,label,split\na.png,cat,holdout\n", "split 'holdout'"),
        ("path,label\nnowhere/a.png,cat\nnowhere/b.png,dog\n", "none of the 2 paths"),
    ],
)
def test_csv_mistakes_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(CnnlabError, match=message):
        discover(tmp_path / "list.csv")


def test_tsv_listing(tmp_path):
    _images(tmp_path / "a", 2)
    (tmp_path / "list.tsv").write_text("path\tlabel\na/0.png\tx\na/1.png\ty\n")
    assert [label for _, label in discover(tmp_path / "list.tsv").files["train"]] == ["x", "y"]


def test_messy_folder_skips_litter_and_finds_nested_files(tmp_path):
    listing = discover(write_messy_folder(tmp_path / "messy"))
    names = {path.name for files in listing.files.values() for path, _ in files}
    assert "inside.png" in names and "ünïcödé näme.jpg" in names and "with space.png" in names
    assert not any(
        n.startswith(".") or "MACOSX" in str(p) for files in listing.files.values() for p, _ in files for n in [p.name]
    )
    assert listing.ignored == [] and listing.layout == "splits"


def test_archive_wrapper_folder_is_looked_into(tmp_path):
    _images(tmp_path / "download" / "cifar" / "train" / "a", 2)
    _images(tmp_path / "download" / "cifar" / "test" / "a", 1)
    listing = discover(tmp_path / "download")
    assert listing.root == tmp_path / "download" / "cifar" and set(listing.files) == {"train", "test"}


def test_strays_are_reported_and_readmes_are_not(tmp_path):
    _images(tmp_path / "flat" / "a", 2)
    _images(tmp_path / "flat" / "b", 2)
    noise(9).save(tmp_path / "flat" / "stray.jpg")
    (tmp_path / "flat" / "README.md").write_text("about the data")
    (tmp_path / "flat" / "a" / "notes.txt").write_text("x")
    listing = discover(tmp_path / "flat")
    reasons = {p.name: r for p, r in listing.ignored}
    assert set(reasons) == {"stray.jpg", "notes.txt"} and "not inside a class folder" in reasons["stray.jpg"]
    assert listing.layout == "flat" and len(listing.files["train"]) == 4


def test_order_is_sorted_by_path_components(tmp_path):
    folder = tmp_path / "d" / "a"
    _images(folder / "b", 1)
    noise(5).save(folder / "b.png")
    noise(6).save(folder / "b-c.png")
    _images(tmp_path / "d" / "z", 1)
    files = [p.relative_to(tmp_path / "d").as_posix() for p, _ in discover(tmp_path / "d").files["train"]]
    assert files == sorted(files, key=lambda s: s.split("/")) == ["a/b/0.png", "a/b-c.png", "a/b.png", "z/0.png"]


@pytest.mark.parametrize("root", ["tree", "."])
def test_listing_is_the_files_sorted_by_components_nested_or_not(tmp_path, monkeypatch, root):
    """The order and the paths themselves (their text is a split's fingerprint) of the full sort by
    path components, whether a class folder has subfolders or only files, from a relative root too."""
    names = ["10.png", "9.png", "a-b.png", "a.png", "B.jpg", "\u00e9.PNG", "a b.png", "x.jpeg"]
    for name in names:
        (tmp_path / "tree" / "cat" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / "cat" / name).write_bytes(b"")
        (tmp_path / "tree" / "cat" / "a" / name).write_bytes(b"")
        (tmp_path / "tree" / "dog").mkdir(exist_ok=True)
        (tmp_path / "tree" / "dog" / name).write_bytes(b"")
    (tmp_path / "tree" / "cat" / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path / "tree" if root == "." else tmp_path)
    listing = discover(Path(root))
    base = Path(root)
    for label in ("cat", "dog"):
        every = [p for p in (base / label).rglob("*") if p.is_file() and p.suffix != ".txt"]
        expected = sorted(every, key=lambda p: p.relative_to(base / label).parts)
        listed = [path for path, name in listing.files["train"] if name == label]
        assert listed == expected and [str(p) for p in listed] == [str(p) for p in expected]
        assert all(type(p) is type(base) for p in listed)
    assert [str(p) for p, _ in listing.ignored] == [str(base / "cat" / "notes.txt")]


def test_a_one_label_csv_is_told_about_labels_not_subfolders(tmp_path):
    rows = ["path,label"] + [f"{p.name},ants" for p in _images(tmp_path, 3)]
    (tmp_path / "one.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(CnnlabError) as caught:
        prepare_data(DataConfig(source=str(tmp_path / "one.csv")), seed=0)
    message = str(caught.value)
    assert "1 class ('ants')" in message and "2 labels" in message and "subfolder" not in message, message
    _images(tmp_path / "folder" / "ants", 3)
    with pytest.raises(CnnlabError, match=r"has 1 class folder \('ants'\).*one subfolder per class"):
        prepare_data(DataConfig(source=str(tmp_path / "folder")), seed=0)


def test_a_class_differing_only_in_case_is_named(tmp_path):
    for split, name in (("train", "ants"), ("train", "bees"), ("val", "Ants"), ("val", "bees")):
        _images(tmp_path / split / name, 2)
    with pytest.raises(
        CnnlabError,
        match=r"class 'Ants' is in the val split but not in train; did you mean ants\? "
        r"\(names are case-sensitive\)",
    ):
        prepare_data(DataConfig(source=str(tmp_path)), seed=0)
    from cnnlab.data.inspect import inspect_data

    verdict = inspect_data(tmp_path).report["verdict"]
    assert "val has class Ants, which train lacks; did you mean ants? (names are case-sensitive)" in verdict
