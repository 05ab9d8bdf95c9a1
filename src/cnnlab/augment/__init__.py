"""Train-time augmentation: config and presets, a batched on-device module, mixup/CutMix, previews.

``preview`` (matplotlib) is not imported here, so training does not pay for it.
"""

from cnnlab.augment.batch import BatchAugment, affine_batch, build_batch_augment
from cnnlab.augment.mix import mix_batch, smooth_one_hot
from cnnlab.augment.options import FILL_MODES, POLICIES, AugmentConfig
from cnnlab.augment.presets import PRESETS, meaning_warnings, resolve_augment

__all__ = [
    "FILL_MODES",
    "POLICIES",
    "PRESETS",
    "AugmentConfig",
    "BatchAugment",
    "affine_batch",
    "build_batch_augment",
    "meaning_warnings",
    "mix_batch",
    "resolve_augment",
    "smooth_one_hot",
]
