"""ImageNet top-1 accuracy of pretrained weights, cited, never invented.

Each row is copied from timm's evaluation of its own weights on the ImageNet-1k validation set
(50,000 images): ``results/results-imagenet.csv`` of huggingface/pytorch-image-models, at the
commit in :data:`SOURCE`, with the image size and crop it was measured at. The rows are the
weights cnnlab's Keras names resolve to (``cnnlab.models.ALIASES``) and a few close relatives;
any other model gets ``None`` (shown as n/a).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_COMMIT = "0173a139a2c66db3a41ebfe1d8ac4fb02483642e"
SOURCE = (
    f"timm's results/results-imagenet.csv (huggingface/pytorch-image-models, commit "
    f"{SOURCE_COMMIT[:10]}): top-1 on the ImageNet-1k validation set, for the weights named"
)


@dataclass(frozen=True)
class ImagenetTop1:
    """One cited result: the weights (timm ``arch.tag``), their top-1 %, and how it was measured."""

    weights: str
    top1: float
    image_size: int
    crop_pct: float


_ROWS = [
    # weights, top1, img_size, crop_pct: as in the file, row for row
    ("vgg16.tv_in1k", 71.592, 224, 0.875),
    ("vgg19.tv_in1k", 72.378, 224, 0.875),
    ("resnet18.tv_in1k", 69.760, 224, 0.875),
    ("resnet50.tv_in1k", 76.130, 224, 0.875),
    ("resnet50.a1_in1k", 81.214, 288, 1.000),
    ("mobilenetv2_100.ra_in1k", 72.976, 224, 0.875),
    ("mobilenetv3_large_100.ra_in1k", 75.766, 224, 0.875),
    ("efficientnet_b0.ra_in1k", 77.694, 224, 0.875),
    ("tf_efficientnet_lite0.in1k", 74.830, 224, 0.875),
    ("efficientnet_lite0.ra_in1k", 75.480, 224, 0.875),
    ("inception_v3.tv_in1k", 77.434, 299, 0.875),
    ("densenet121.tv_in1k", 74.764, 224, 0.875),
    ("convnext_tiny.fb_in1k", 82.698, 288, 1.000),
]
TABLE: dict[str, ImagenetTop1] = {row[0]: ImagenetTop1(*row) for row in _ROWS}


def weights_tag(resolved: str) -> str | None:
    """The timm ``arch.tag`` a model name loads with ``pretrained=True`` (its default tag when
    the name has none), or None for a model without pretrained weights (cnnlab's own CNNs)."""
    if "." in resolved:
        return resolved
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(resolved)
    except Exception:  # noqa: BLE001  not a timm architecture (an own CNN)
        return None
    return f"{resolved}.{cfg.tag}" if cfg is not None and cfg.tag else None


def imagenet_top1(resolved: str) -> ImagenetTop1 | None:
    """The cited result for the weights of ``resolved`` (a name from ``resolve_name``), or None."""
    tag = weights_tag(resolved)
    return TABLE.get(tag) if tag else None
