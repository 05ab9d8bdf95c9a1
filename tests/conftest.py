"""Shared fixtures: tiny generated image folders and a fast CLI runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.main import main


def write_shapes_folder(root: Path, per_class: int = 24, size: int = 20, seed: int = 0) -> Path:
    """A flat ``root/<class>/*.png`` folder of three easy classes: bright bars in three places."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(["left", "middle", "right"]):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            start = label * size // 3
            image[:, start : start + size // 3] = rng.integers(180, 256)
            Image.fromarray(image).save(folder / f"img_{i:03d}.png")
    return root


def write_wide_bars(root: Path) -> Path:
    """write_shapes_folder's bars (left, middle, right) made 3:1 wide (90x30 px): a centre crop keeps only the
    middle third, where only the "middle" class has its bar, so it cannot tell "left" from "right"."""
    folder = write_shapes_folder(root, per_class=24, size=30)
    for path in folder.glob("*/*.png"):
        with Image.open(path) as image:
            wide = image.resize((90, 30), Image.Resampling.NEAREST)
        wide.save(path)
    return folder


def train_squash_bars(cli, root: Path) -> tuple[Path, Path]:
    """(run folder, image folder): 3 epochs of simple_cnn on write_wide_bars, --crop-mode squash."""
    folder = write_wide_bars(root / "bars")
    runs = root / "runs"
    args = ("--image-size", "20", "--crop-pct", "0.8", "--epochs", "3", "--batch-size", "16", "--runs-dir", runs)
    code, _, err = cli("train", folder, "--crop-mode", "squash", *args, "--name", "sq")
    assert code == 0, err
    return runs / "sq", folder


def write_photo_crops(root: Path, per_class: int = 30, side: int = 96, seed: int = 0) -> Path:
    """Two classes of real photos: random crops of scikit-learn's temple and flower pictures."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # china.jpg (a temple), flower.jpg
    for name, photo in zip(["temple", "flower"], photos):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            top = rng.integers(0, photo.shape[0] - 2 * side)
            left = rng.integers(0, photo.shape[1] - 2 * side)
            crop = Image.fromarray(photo[top : top + 2 * side, left : left + 2 * side]).resize((side, side))
            crop.save(root / name / f"{i:03d}.jpg", quality=90)
    return root


# Headless Chromium as the browser tests run it: no sandbox (root in a container), no GPU, and none of
# its own traffic (updates, sync, QUIC), so a test's requests are the page's.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright launches the system Chromium (``make browser`` installs it): Playwright's own
    browser download needs the internet, which this machine does not have."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed: make browser (apt-get install chromium) to run the browser tests")
    return {**browser_type_launch_args, "executable_path": chromium, "args": CHROMIUM_ARGS}


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own, empty cache folder (SQLite cache and record stores), with caching on."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_NO_CACHE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files decode_image was called on (i.e. not served from a cache or store)."""
    import cnnlab.data.folder as folder

    calls: list[str] = []
    real = folder.decode_image

    def counting(path, **kwargs):
        calls.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(folder, "decode_image", counting)
    return calls


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests decode into their own cache, never the user's ~/.cache/cnnlab."""
    import os

    folder = tmp_path_factory.mktemp("cnnlab-cache")
    old = os.environ.get("CNNLAB_CACHE_DIR")
    os.environ["CNNLAB_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("CNNLAB_CACHE_DIR", None)
    else:
        os.environ["CNNLAB_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a busy shared CPU (was 5-40x slower)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    return write_shapes_folder(tmp_path / "shapes")


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture):
    """Runs ``cnnlab ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def fitted_meta(result) -> dict:
    """A ``fit`` result's run.json as the final evaluation completes it: the last stage's test
    accuracy (and the improvement line) come from scoring the kept weights once."""
    from cnnlab.models.inference import accuracy
    from cnnlab.training.stage_plan import record_final_accuracy

    test = result.data.splits["test"]
    record_final_accuracy(
        result.record, accuracy(result.module.model, test.for_pass, test.labels, result.module.normalize)
    )
    return result.record.to_json()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a written PNG, checking it is a real, non-empty image."""
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def px(inches: float) -> int:
    """Pixels of a figure dimension in inches, at cnnlab's figure resolution."""
    from cnnlab.figures import DPI

    return int(round(inches * DPI))


@pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, image folder), trained once per session: simple_cnn, 5 epochs on 20 px bars."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    shapes = write_shapes_folder(root / "shapes")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: see one_torch_thread
    try:
        assert (
            main(
                [
                    "train",
                    str(shapes),
                    "--epochs",
                    "5",
                    "--batch-size",
                    "16",
                    "--runs-dir",
                    str(root / "runs"),
                    "--name",
                    "base",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(saved)
    return root / "runs" / "base", shapes


@pytest.fixture(scope="session")
def lite0_photos_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, photo folder), trained once per session: EfficientNet-Lite0 transferred from its
    built-in ImageNet weights to two classes of photo crops at 48 px; the networks ``cnnlab prune``
    refits (inverted-residual blocks, a residual stream)."""
    import torch

    root = tmp_path_factory.mktemp("lite0")
    photos = write_photo_crops(root / "photos", per_class=20)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors at 64 px: see one_torch_thread
    try:
        args = ["train", str(photos), "--model", "efficientnet_lite0", "--pretrained", "--image-size", "48"]
        args += ["--frozen-epochs", "2", "--finetune-epochs", "1", "--refit", "off", "--batch-size", "16"]
        assert main([*args, "--runs-dir", str(root / "runs"), "--name", "lite0"]) == 0
    finally:
        torch.set_num_threads(saved)
    return root / "runs" / "lite0", photos


def batchnorm_statistics(state: dict) -> dict:
    """The running means and variances of a state dict (BatchNorm's statistics, not its weights)."""
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


@pytest.fixture
def run_copy(trained_shapes, tmp_path) -> Path:
    """A fresh copy of the trained run, free to be changed."""
    return Path(shutil.copytree(trained_shapes[0], tmp_path / "runs" / "base"))


def unnamed_run_files(run: Path) -> list[str]:
    """Files under ``run`` that ``RunFiles.written_names`` does not name (should be none)."""
    from cnnlab.training.run_dir import RunFiles

    named = RunFiles(run).written_names()
    stray = []
    for path in run.rglob("*"):
        relative = path.relative_to(run).as_posix()
        if (
            path.is_file()
            and relative not in named
            and not any(relative.startswith(n[:-1]) for n in named if n.endswith("/*"))
        ):
            stray.append(relative)
    return stray
