"""The record store on disk: exact pixels, safe concurrent builds, per-file updates, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from messy import noise

from cnnlab.data.folder import decode_files
from cnnlab.data.loaders import batch_loader
from cnnlab.data.split_records import RecordFile, decode_stored, store_root
from cnnlab.data.types import ImageSet
from cnnlab.machine import status_kib

pytestmark = pytest.mark.usefixtures("own_cache")


def _files(root: Path, count: int = 12) -> list[tuple[Path, int]]:
    """JPEGs and PNGs of odd sizes (resized on decoding), and one broken file at the end."""
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        path = root / f"img_{i:03d}.{'jpg' if i % 2 else 'png'}"
        noise(i, (20 + i % 16, 14 + 2 * (i % 16))).save(path)
        files.append((path, i % 3))
    broken = root / "broken.jpg"
    broken.write_bytes(b"not an image")
    return [*files, (broken, 0)]


def test_stored_images_round_trip_exactly_and_reports_bad_files(tmp_path, counted):
    files = _files(tmp_path / "imgs")
    memory, bad_memory = decode_files(files, 3, 16, workers=2, cache=False)
    counted.clear()
    stored, bad = decode_stored(files, 3, 16, workers=2)
    assert stored.stored and len(counted) == len(files)
    assert torch.equal(stored.images, memory.images) and torch.equal(stored.labels, memory.labels)
    assert stored.ids == memory.ids and [s.path for s in bad] == [s.path for s in bad_memory]
    assert "not an image" in bad[0].reason
    counted.clear()
    again, _ = decode_stored(files, 3, 16, workers=2)  # unchanged files: nothing decoded
    assert counted == [] and torch.equal(again.images, memory.images)
    part = again.subset(np.array([5, 0, 3]))  # a subset stays on disk: rows, not a copy
    assert part.stored and torch.equal(part.images, memory.images[[5, 0, 3]]) and part.shape == (3, 3, 16, 16)


def test_changed_or_added_file_is_decoded_alone(tmp_path, counted):
    files = _files(tmp_path / "imgs")[:-1]
    first, _ = decode_stored(files, 3, 16, workers=1)
    before = first.images.clone()
    changed = files[4][0]
    noise(99, (30, 30)).save(changed)
    os.utime(changed, ns=(1, 10**18))  # a new mtime even on a coarse clock
    counted.clear()
    second, _ = decode_stored(files, 3, 16, workers=1)
    assert counted == [changed.name]
    fresh, _ = decode_files([files[4]], 3, 16, workers=1, cache=False)
    assert torch.equal(second.images[4], fresh.images[0])
    others = [i for i in range(len(files)) if i != 4]
    assert torch.equal(second.images[others], before[others])
    assert torch.equal(first.images, before)  # the first reader still reads the old, whole file
    assert len(list(store_root().glob("*.u8"))) == 1 and not list(store_root().glob("*.tmp"))
    noise(7, (18, 18)).save(files[0][0].parent / "new.png")  # a file added to the folder
    counted.clear()
    third, _ = decode_stored([*files, (files[0][0].parent / "new.png", 1)], 3, 16, workers=1)
    assert counted == ["new.png"] and torch.equal(third.images[:-1], second.images)
    assert len(list(store_root().glob("*.u8"))) == 1  # the same store, rebuilt: no stale copy beside it


_BUILDER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
import numpy as np
from cnnlab.data.split_records import open_store  # no torch: the processes start fast
store = open_store(sys.argv[1:], 3, 24, workers=1)
good = np.flatnonzero([reason is None for reason in store.reasons])
print(int(store.records.read(good).sum()), len(good), len(store.reasons) - len(good))
"""


def test_two_processes_building_at_once_end_complete_and_consistent(tmp_path):
    files = _files(tmp_path / "imgs", count=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILDER, *(str(p) for p, _ in files)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    memory, _ = decode_files(files, 3, 24, workers=1, cache=False)
    expected = f"{int(memory.images.sum())} {len(files) - 1} 1"
    assert [out.strip() for out, _ in outputs] == [expected, expected]
    assert sum("decoding" in err for _, err in outputs) == 1  # one built it, the other waited and used it
    manifest = json.loads(next(store_root().glob("*.json")).read_text())
    data = store_root() / manifest["data"]
    assert [p.name for p in store_root().glob("*.u8")] == [data.name]
    records = RecordFile(data, len(files), 3, 24).read(np.arange(len(files) - 1))
    assert np.array_equal(records, memory.images.numpy())


def test_stored_batches_keep_resident_memory_near_a_batch_not_the_data(tmp_path):
    count, side = 1400, 224  # 210 MB of pixels
    data = tmp_path / "big.u8"
    with open(data, "wb") as handle:
        for start in range(0, count, 200):  # record i is all (i * 7) % 256
            block = np.empty((200, 3, side, side), dtype=np.uint8)
            block[:] = ((np.arange(start, start + 200) * 7) % 256).astype(np.uint8)[:, None, None, None]
            handle.write(block.tobytes())
    records = RecordFile(data, count, 3, side)
    image_set = ImageSet(records, torch.arange(count) % 2, [str(i) for i in range(count)], rows=np.arange(count))
    before = status_kib("VmRSS")
    if before is None:
        pytest.skip("no /proc/self/status here")
    grown, firsts = 0, []
    for images, _ in batch_loader(image_set, 64, shuffle=True):
        firsts += images[:, 0, 0, 0].tolist()
        grown = max(grown, status_kib("VmRSS") - before)
    assert sorted(firsts) == sorted((np.arange(count) * 7 % 256).tolist())  # every image read once
    assert grown * 1024 < 40 * 2**20, f"resident memory grew {grown / 1024:.0f} MiB reading 210 MB"


def test_auto_keeps_large_data_on_disk_unless_the_cache_is_off(monkeypatch):
    from cnnlab.config.sections import DISK_MIN_BYTES
    from cnnlab.data.prepare import use_record_store

    assert not use_record_store("auto", DISK_MIN_BYTES - 1) and use_record_store("auto", DISK_MIN_BYTES)
    assert use_record_store("disk", 1) and not use_record_store("memory", 10 * DISK_MIN_BYTES)
    monkeypatch.setenv("CNNLAB_NO_CACHE", "1")
    assert not use_record_store("auto", 10 * DISK_MIN_BYTES)


def test_unusable_cache_folder_falls_back_to_memory_with_a_warning(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(blocker))
    assert decode_stored(_files(tmp_path / "imgs", count=3), 3, 16, workers=1) is None
    assert "decoding into memory" in caplog.text


def test_each_batch_asks_the_disk_for_the_next_one(tmp_path, monkeypatch):
    stored, _ = decode_stored(_files(tmp_path / "imgs", count=10)[:-1], 3, 8, workers=1)
    asked: list[list[int]] = []
    real = RecordFile.prefetch
    monkeypatch.setattr(RecordFile, "prefetch", lambda self, rows: asked.append(list(rows)) or real(self, rows))
    part = stored.subset(np.arange(8, -1, -1))  # rows differ from positions: the hint must name rows
    expected = part.images
    got = [images for images, _ in batch_loader(part, 4, shuffle=True, seed=3)]
    order = [list(batch) for batch in batch_loader(part, 4, shuffle=True, seed=3).sampler]
    assert asked[:2] == [[part.rows[i] for i in batch] for batch in order[1:]]
    assert torch.equal(torch.cat(got), part.take(np.concatenate(order)))
    monkeypatch.delattr(os, "preadv")  # as on Windows: seek and read
    assert torch.equal(part.images, expected)


def test_damaged_store_is_rebuilt(tmp_path, counted):
    files = _files(tmp_path / "imgs", count=4)[:-1]
    first, _ = decode_stored(files, 3, 16, workers=1)
    expected = first.images
    data = next(store_root().glob("*.u8"))
    data.write_bytes(data.read_bytes()[:100])  # truncated, e.g. a full disk or a killed copy
    counted.clear()
    again, _ = decode_stored(files, 3, 16, workers=1)
    assert len(counted) == len(files) and torch.equal(again.images, expected)
    next(store_root().glob("*.json")).write_text("{not json")
    counted.clear()
    assert torch.equal(decode_stored(files, 3, 16, workers=1)[0].images, expected) and len(counted) == len(files)
