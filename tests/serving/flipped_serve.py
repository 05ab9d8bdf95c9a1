"""``python flipped_serve.py serve RUN ...``: ``cnnlab serve`` whose runtime answers the next class.

Stands in for an INT8 model that disagrees with its checkpoint (seen on real photos: "bees 53%" from
INT8 beside "ants 77%" from the checkpoint): every probability row is rolled by one class, so the
served runtime's top class is never the checkpoint's. Only the tests use it.
"""

from __future__ import annotations

import sys

import torch

from cnnlab.cli.main import main
from cnnlab.serving.model import ServedModel

if __name__ == "__main__":
    infer = ServedModel.infer

    def flipped_infer(self: ServedModel, images: torch.Tensor) -> torch.Tensor:
        return torch.roll(infer(self, images), 1, dims=1)

    ServedModel.infer = flipped_infer
    sys.exit(main(sys.argv[1:]))
