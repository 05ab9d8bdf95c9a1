"""Batching from in-memory splits: evaluation batch sizes that suit the device."""

from __future__ import annotations

import torch

from cnnlab.data.loaders import EVAL_BATCH_SIZE, ImageDataModule, eval_batch_size
from cnnlab.data.types import ImageSet, PreparedData


def test_cpu_eval_batches_hold_a_pixel_budget_and_accelerators_take_the_maximum() -> None:
    assert eval_batch_size((1, 28, 28)) == EVAL_BATCH_SIZE  # MNIST: as large as ever
    assert eval_batch_size((3, 224, 224)) == 8  # big images: small batches stay in cache
    assert eval_batch_size((3, 160, 160)) > eval_batch_size((3, 224, 224))
    assert eval_batch_size((3, 4000, 4000)) == 1  # never zero
    assert eval_batch_size((3, 224, 224), "cuda") == EVAL_BATCH_SIZE
    assert eval_batch_size(torch.Size([100, 3, 224, 224]), torch.device("cpu")) == 8  # a whole tensor's shape


def test_validation_loader_covers_every_image_in_pixel_budget_batches() -> None:
    def split(n: int) -> ImageSet:
        return ImageSet(
            torch.zeros(n, 3, 224, 224, dtype=torch.uint8), torch.arange(n) % 2, [f"{i}.png" for i in range(n)]
        )

    data = PreparedData({"train": split(4), "val": split(20), "test": split(3)}, ["a", "b"], "tiny")
    batches = list(ImageDataModule(data, batch_size=128, seed=0).val_dataloader())
    assert [len(labels) for _, labels in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([labels for _, labels in batches]), data.splits["val"].labels)


def test_training_shards_of_several_processes_make_up_the_batches_of_one() -> None:
    """Two ranks at batch 3 take, step by step, exactly one process's batches of 6 (global batch
    = --batch-size); shards are padded to equal length, so every rank takes as many steps."""
    from cnnlab.data.loaders import EpochBatches

    labels = torch.arange(13) % 3
    for balanced in (False, True):
        one = EpochBatches(labels, 6, shuffle=True, seed=4, balanced=balanced)
        ranks = [EpochBatches(labels, 3, shuffle=True, seed=4, balanced=balanced, rank=r, world_size=2) for r in (0, 1)]
        for epoch in (0, 1):
            for sampler in (one, *ranks):
                sampler.set_epoch(epoch)
            steps = [list(r) for r in ranks]
            assert len(steps[0]) == len(steps[1]) == len(ranks[0]) == len(ranks[1]) == 3
            batches = list(one)
            first = batches[0][0]  # the epoch's first image: the one repeated to even the shards
            for k, batch in enumerate(batches):
                padding = [first] if k == len(batches) - 1 else []
                assert sorted(steps[0][k] + steps[1][k]) == sorted(batch + padding)
            if not balanced:
                assert sorted(p for r in steps for batch in r for p in batch) == sorted([*range(13), first])
    val = [EpochBatches(labels, 4, shuffle=False, rank=r, world_size=2, pad=False) for r in (0, 1)]
    assert sorted(p for sampler in val for batch in sampler for p in batch) == list(range(13))  # none twice
