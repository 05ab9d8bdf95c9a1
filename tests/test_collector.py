"""The collector paused around bulk work: restored after, and what a kept block made is out of its reach."""

from __future__ import annotations

import gc

import pytest

from cnnlab.collector import collector_paused
from conftest import write_shapes_folder


def test_kept_block_freezes_what_is_alive_and_a_failed_one_does_not() -> None:
    gc.unfreeze()
    try:
        with pytest.raises(ImportError), collector_paused(keep=True):
            raise ImportError("a failed import keeps nothing")
        assert gc.get_freeze_count() == 0 and gc.isenabled()
        with collector_paused(keep=True):
            made = [[i] for i in range(1000)]  # tracked objects made in the block
            assert not gc.isenabled()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(made)
        assert not any(obj is made for obj in gc.get_objects())  # no generation a collection walks holds it
    finally:
        gc.unfreeze()


def test_the_data_step_gives_the_collector_back(tmp_path, monkeypatch) -> None:
    from cnnlab.config import DataConfig
    from cnnlab.data.prepare import prepare_data

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_shapes_folder(tmp_path / "shapes")
    for _ in range(2):  # decoded, then read from the cache
        prepare_data(DataConfig(source=str(folder), image_size=16), seed=0)
        assert gc.isenabled()
