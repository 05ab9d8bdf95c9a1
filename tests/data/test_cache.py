"""The decoded-image cache: used on the second load, invalidated per file, safe with two writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from messy import noise

import cnnlab.data.folder as folder
from cnnlab.data import decoded_cache
from cnnlab.data.decoded_cache import DecodedCache, cache_file, file_key
from cnnlab.data.folder import decode_files

pytestmark = pytest.mark.usefixtures("own_cache")


def _files(tmp_path: Path, count: int = 6) -> list[tuple[Path, int]]:
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    for i in range(count):
        noise(i, (24, 20)).save(root / f"{i}.png")
    (root / "bad.jpg").write_bytes(b"not a jpeg")
    return [(root / f"{i}.png", i % 2) for i in range(count)] + [(root / "bad.jpg", 0)]


def test_second_load_reads_the_cache_and_matches(tmp_path, counted):
    files = _files(tmp_path)
    first, skipped = decode_files(files, 3, 16, workers=2)
    assert len(counted) == 7 and [Path(s.path).name for s in skipped] == ["bad.jpg"]
    counted.clear()
    second, skipped = decode_files(files, 3, 16, workers=2)
    assert counted == ["bad.jpg"]  # failures are not cached: a fixed file is picked up at once
    assert torch_equal(first.images, second.images) and first.ids == second.ids
    assert second.labels.tolist() == first.labels.tolist() == [0, 1, 0, 1, 0, 1]
    counted.clear()
    decode_files(files, 1, 16, workers=2)  # other channels: other entries
    decode_files(files, 3, 12, workers=2)  # other size: other entries
    assert len(counted) == 14


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape


def test_changed_file_is_decoded_again_alone(tmp_path, counted):
    files = _files(tmp_path)
    before, _ = decode_files(files, 3, 16, workers=1)
    changed = files[2][0]
    noise(99, (30, 30)).save(changed)  # new content, new size
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    counted.clear()
    after, _ = decode_files(files, 3, 16, workers=1)
    assert sorted(counted) == ["2.png", "bad.jpg"]
    assert not torch_equal(before.images[2], after.images[2])
    assert torch_equal(before.images[3], after.images[3])
    # only the mtime changes (same bytes, e.g. touched): decoded again, never served stale
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    counted.clear()
    decode_files(files, 3, 16, workers=1)
    assert sorted(counted) == ["2.png", "bad.jpg"]


def test_deleted_file_is_skipped_not_served(tmp_path, counted):
    files = _files(tmp_path)
    decode_files(files, 3, 16, workers=1)
    files[0][0].unlink()
    images, skipped = decode_files(files, 3, 16, workers=1)
    assert len(images) == 5
    assert {Path(s.path).name: s.reason for s in skipped}["0.png"] == "no such file or directory"
    with DecodedCache() as store:
        assert store.prune() == 1  # its entry goes with `cnnlab data cache --prune`
        assert store.stats()[0] == 5


def test_no_cache_env_and_parameter(tmp_path, counted, monkeypatch):
    files = _files(tmp_path)
    monkeypatch.setenv("CNNLAB_NO_CACHE", "1")
    decode_files(files, 3, 16, workers=1)
    assert not cache_file().exists()
    decode_files(files, 3, 16, workers=1, cache=True)  # the parameter wins over the variable
    assert len(counted) == 14
    counted.clear()
    decode_files(files, 3, 16, workers=1, cache=True)  # written by the cache=True call above
    assert counted == ["bad.jpg"]


def test_damaged_cache_file_warns_and_decodes(tmp_path, counted, caplog):
    files = _files(tmp_path)
    cache_file().parent.mkdir(parents=True)
    cache_file().write_bytes(b"this is not a database" * 100)
    images, _ = decode_files(files, 3, 16, workers=1)
    assert len(images) == 6 and len(counted) == 7
    assert "not usable" in caplog.text


def test_concurrent_threads_leave_a_readable_cache(tmp_path, counted):
    files = _files(tmp_path, count=40)
    results, errors = [], []

    def load() -> None:
        try:
            results.append(decode_files(files, 3, 16, workers=2)[0])
        except Exception as exc:  # pragma: no cover - reported by the assert below  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counted.clear()
    again, _ = decode_files(files, 3, 16, workers=2)
    assert counted == ["bad.jpg"]
    assert all(torch_equal(again.images, r.images) for r in results)


_WRITER = """
import sys, numpy as np
from cnnlab.data.decoded_cache import DecodedCache, file_key
paths, seed = sys.argv[2:], int(sys.argv[1])
store = DecodedCache()
for round in range(5 if seed < 100 else 10**9):  # seed >= 100: write until killed
    keys = [file_key(p) for p in paths]
    images = [np.full((3, 8, 8), (i * 7 + seed) % 256, np.uint8) for i in range(len(paths))]
    store.save(zip(keys, images), 8, 3)
print("ok")
"""


def test_two_processes_writing_the_same_entries(tmp_path):
    files = [str(p) for p, _ in _files(tmp_path, count=30)[:-1]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(seed), *files],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 0)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    out = np.empty((len(files), 3, 8, 8), np.uint8)
    with DecodedCache() as store:
        hits = store.load([file_key(p) for p in files], 8, 3, out)
    assert hits.all()
    assert all((out[i] == (i * 7) % 256).all() for i in range(len(files)))
    assert not list(cache_file().parent.glob("*.tmp"))


def test_killed_writer_leaves_no_half_entry(tmp_path):
    files = [str(p) for p, _ in _files(tmp_path, count=200)[:-1]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, "100", *files], env=env)
    deadline = time.monotonic() + 30
    while not cache_file().exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # mid-way through some transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = np.empty((len(files), 3, 8, 8), np.uint8)
    with DecodedCache() as store:
        hits = store.load([file_key(p) for p in files], 8, 3, out)
    for i in np.flatnonzero(hits):  # whatever is there is whole: one value per image
        assert (out[i] == (i * 7 + 100) % 256).all()


def test_process_pool_decodes_the_same_as_threads(tmp_path, monkeypatch):
    files = _files(tmp_path, count=150)
    threads, bad_t = decode_files(files, 3, 16, workers=2, cache=False)
    monkeypatch.setattr(folder, "PROCESS_MIN_FILES", 0)  # small outputs and any count: processes
    assert folder._use_processes(len(files), 3, 16, 2)
    processes, bad_p = decode_files(files, 3, 16, workers=2, cache=False)
    assert torch_equal(threads.images, processes.images) and threads.ids == processes.ids
    assert [(s.path, s.reason) for s in bad_t] == [(s.path, s.reason) for s in bad_p]


def test_file_keys_are_file_key_of_each_path(tmp_path, monkeypatch):
    files = [path for path, _ in _files(tmp_path)]
    monkeypatch.chdir(tmp_path)
    given = [
        *files,
        "imgs/0.png",  # relative to the working folder
        "./imgs/1.png",
        "imgs/../imgs/2.png",
        Path("imgs") / "3.png",
        "imgs/missing.png",  # cannot be stat'ed: no key
        "imgs/.",  # not a plain file name: made absolute whole
    ]
    keys = decoded_cache.file_keys(given)
    assert keys == [file_key(p) for p in given]
    assert keys[len(files)] == file_key(files[0]) and keys[-2] is None


def test_load_reads_chunks_and_a_file_listed_twice(tmp_path, monkeypatch):
    files = [str(path) for path, _ in _files(tmp_path, count=11)[:-1]]
    decode_files([(p, 0) for p in files], 3, 8, workers=1)
    monkeypatch.setattr(decoded_cache, "LOAD_CHUNK", 3)  # 13 positions: 5 queries
    listed = [*files, files[4], files[0]]  # a CSV may list a file twice
    keys = decoded_cache.file_keys(listed)
    out = np.zeros((len(listed), 3, 8, 8), np.uint8)
    with DecodedCache() as store:
        hits = store.load(keys, 8, 3, out)
    assert hits.all()
    single = np.zeros((1, 3, 8, 8), np.uint8)
    for i, key in enumerate(keys):
        with DecodedCache() as store:
            assert store.load([key], 8, 3, single).all()
        assert (out[i] == single[0]).all(), i
    assert not (out[0] == out[1]).all()


def test_a_cache_file_from_before_crop_modes_keeps_its_entries_and_gains_the_others(tmp_path, counted, caplog):
    """A file with only the ``decoded`` table (cnnlab before --crop-mode): read-only it finds no squashed
    image and no error; opened for writing it keeps its centre-cropped entries and stores squashed ones apart."""
    import sqlite3

    from cnnlab.data.decode import Fit

    files = _files(tmp_path)[:4]
    decode_files(files, 3, 16, workers=1)
    with sqlite3.connect(cache_file()) as db:  # as an older cnnlab left it
        db.execute(f"DROP TABLE {decoded_cache.FIT_TABLE}")
    keys = [file_key(path) for path, _ in files]
    out = np.zeros((4, 3, 16, 16), dtype=np.uint8)
    with DecodedCache(read_only=True) as store:
        assert not store.load(keys, 16, 3, out, Fit("squash").key).any()
        assert store.load(keys, 16, 3, out).all()
    assert "not usable" not in caplog.text
    counted.clear()
    squashed, _ = decode_files(files, 3, 16, workers=1, fit=Fit("squash"))
    assert len(counted) == 4  # decoded, not served the centre crops
    centre, _ = decode_files(files, 3, 16, workers=1)
    again, _ = decode_files(files, 3, 16, workers=1, fit=Fit("squash"))
    assert len(counted) == 4  # both found: each in its table
    assert np.array_equal(centre.images.numpy(), out) and np.array_equal(again.images, squashed.images)
    assert not np.array_equal(centre.images.numpy(), squashed.images.numpy())  # 24x20 photos: the modes differ
    assert DecodedCache().stats()[0] == 8
