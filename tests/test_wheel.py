"""The wheel: built as ``python -m build`` builds it, it holds every file cnnlab needs, and installed
into a fresh virtual environment it answers, trains and serves its page.

The fresh environment gets cnnlab from the wheel alone; its dependencies (torch and the rest, gigabytes)
are the test interpreter's own, seen through a ``.pth`` file rather than installed again: installing them
would take minutes and download nothing new. The wheel is built from a copy of the sources, so the
build leaves no ``build/`` or ``egg-info`` in the work tree.
"""

from __future__ import annotations

import re
import shutil
import site
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

import cnnlab

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "cnnlab"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the build package is not installed: pip install 'cnnlab[dev]'")
    tree = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(SOURCE, tree / "src" / "cnnlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools) of this environment, no download of a fresh one
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = out.glob("cnnlab-*.whl")
    return path


def test_the_wheel_holds_every_module_and_data_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        "cnnlab/" + p.relative_to(SOURCE).as_posix()
        for p in SOURCE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert {"cnnlab/serving/page.html", "cnnlab/py.typed"} <= sources
    assert sources - names == set(), "files of src/cnnlab missing from the wheel"
    assert not any(n.startswith(("tests/", "docs/", "bench/")) for n in names)
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    assert f"Version: {cnnlab.__version__}" in metadata
    for extra in ("deploy", "serve", "stream", "track", "dev"):
        assert f"Provides-Extra: {extra}" in metadata
    assert re.search(r"Requires-Dist: fastapi-offline.*extra == \"serve\"", metadata)
    entry = zipfile.ZipFile(wheel).read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "cnnlab = cnnlab.cli.main:main" in entry


@pytest.mark.timeout(600)
def test_a_fresh_environment_installs_the_wheel_then_runs_info_trains_and_serves_its_page(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python, command = env_dir / "bin" / "python", env_dir / "bin" / "cnnlab"
    packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    # Then the dependencies: this interpreter's site-packages, after the fresh environment's own (so the
    # wheel's cnnlab comes first; the editable install's path file there is not read from a .pth line).
    (packages / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    clean = {
        "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CNNLAB_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }

    def run(*args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [str(command), *args], capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=timeout
        )
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout

    where = subprocess.run(
        [str(python), "-c", "import cnnlab; print(cnnlab.__file__)"],
        capture_output=True,
        text=True,
        env=clean,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(packages)), where  # the wheel's copy, not the work tree's
    assert run("--version").strip() == f"cnnlab {cnnlab.__version__}"
    assert "torch" in run("info")
    out = run("train", "digits", "--epochs", "1", "--runs-dir", "runs", "--name", "d")
    assert "test accuracy" in out and (tmp_path / "runs" / "d" / "report.html").is_file()

    server = subprocess.Popen(
        [str(command), "serve", "runs/d", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean,
        cwd=tmp_path,
    )
    try:
        url, lines, deadline = None, [], time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        with urllib.request.urlopen(url + "/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()  # page.html, from the installed package
        with urllib.request.urlopen(url + "/docs", timeout=30) as docs:
            assert b"/docs-assets/swagger-ui-bundle.js" in docs.read()
    finally:
        server.terminate()
        server.wait(timeout=60)
