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
        return ImageSet(torch.zeros(n, 3, 224, 224, dtype=torch.uint8), torch.arange(n) % 2, [f"{i}.png" for i in range(n)])

    data = PreparedData({"train": split(4), "val": split(20), "test": split(3)}, ["a", "b"], "tiny")
    batches = list(ImageDataModule(data, batch_size=128, seed=0).val_dataloader())
    assert [len(labels) for _, labels in batches] == [8, 8, 4]
    assert torch.equal(torch.cat([labels for _, labels in batches]), data.splits["val"].labels)
