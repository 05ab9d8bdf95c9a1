"""Train-time augmentation: a batched on-device module, mixup/CutMix, meaning warnings, previews.

The options and presets are in ``cnnlab.config``. ``preview`` (matplotlib) is not imported
here, so training does not pay for it.
"""

from cnnlab.augment.batch import BatchAugment, affine_batch, build_batch_augment
from cnnlab.augment.meaning import meaning_warnings
from cnnlab.augment.mix import mix_batch, smooth_one_hot

__all__ = ["BatchAugment", "affine_batch", "build_batch_augment", "meaning_warnings", "mix_batch", "smooth_one_hot"]
