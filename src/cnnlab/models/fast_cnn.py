"""Small batch-normalised CNNs that train fast from scratch on a CPU (``--recipe fast``, ``fast-cifar``).

``fast_cnn``: conv-BN-ReLU blocks (widths 24-48-96), each with a 2x2 max-pool, then the 3x3
map flattened into a small MLP head (Dense 128): about 0.17M parameters. ``fast_cnn_small``:
the same at 16-32-64 (about 0.1M); ``fast_cnn_slim``: at 8-32-64, ``--recipe fast``'s one-epoch network.

``fast_cifar``: the airbench94 design (Keller Jordan, 2024) at half width: a 2x2 patch-whitening
stem whose weights come from the first training batch's patch covariance (then frozen), three
conv groups (conv, max-pool, BN, GELU, conv, BN, GELU), a global max-pool and a bias-free
linear layer whose output is scaled down (1/9), so early logits stay small. In eval mode it
averages the logits of six views: each image and its mirror image, and both moved by 1 px
up-left and down-right (airbench's test-time augmentation: +0.6 points on CIFAR-10 validation
over the mirror alone after 5 epochs, bench/out/cifar.md).

airbench's dirac start and fixed BatchNorm scales with 64x faster shifts are options
(``dirac``, ``shift_lr``), off in ``fast_cifar``: with an EMA of the weights they measured no
better after 5 epochs here (84.0% vs 84.1% validation), though 2.6 points ahead after 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.registry import register_model

_BN_MOMENTUM = 0.4  # weight of each new batch (torch's convention); airbench's 0.6 in Keras terms
_LOGIT_SCALE = 1 / 9  # airbench: a small output scale lets a high learning rate start calmly

TTA = Literal["none", "flip", "flip-translate"]


class FastCNN(nn.Module):
    """conv-BN-ReLU blocks with 2x2 max-pools, a max-pool to a small grid, then an MLP head.

    Keeping a 3x3 grid (MNIST's map after three pools, as is) rather than one global pool keeps
    where strokes are: measured on MNIST at 16-32-64, 99.1% against 99.0% after 2 epochs with
    the same settings. Pools stop once the map is 2-3 px, so 8x8 images work with the same widths.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        image_size: tuple[int, int] = (28, 28),
        widths: Sequence[int] = (32, 64, 128),
        dropout: float = 0.0,
        grid: int = 3,
        hidden: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        side, chans = min(image_size), in_chans
        for width in widths:
            layers.append(nn.Conv2d(chans, width, 3, padding=1, bias=False))  # BN brings the bias
            if side >= 4:
                # Pool before BN and ReLU, as airbench does: they then touch 4x fewer values.
                layers.append(nn.MaxPool2d(2))
                side //= 2
            layers += [nn.BatchNorm2d(width, momentum=_BN_MOMENTUM), nn.ReLU(inplace=True)]
            chans = width
        self.features = nn.Sequential(*layers)
        cells = min(side, grid) if grid > 0 else 1
        head: list[nn.Module] = [nn.Identity() if cells == side else nn.AdaptiveMaxPool2d(cells), nn.Flatten()]
        flat = chans * cells * cells
        if hidden:  # like the lesson's Dense(128); on MNIST 99.0% came a quarter epoch sooner with it
            head += [nn.Linear(flat, hidden), nn.ReLU(inplace=True)]
            flat = hidden
        self.head = nn.Sequential(*head, nn.Dropout(dropout), nn.Linear(flat, num_classes))

    # timm's interface, so transfer stages, the feature cache and explain treat it like a timm model.
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _fix(module: nn.Module, name: str) -> None:
    """Turns parameter ``name`` into a buffer of the same value and state-dict key: never trained.

    ``requires_grad_(False)`` would not last: a training stage that trains every layer (cnnlab
    train's) sets ``requires_grad`` on all parameters again.
    """
    value = getattr(module, name).detach().clone()
    delattr(module, name)
    module.register_buffer(name, value)


class PatchWhitening(nn.Module):
    """A 2x2 convolution whose filters whiten image patches (airbench's first layer).

    The filters are the eigenvectors of the patch covariance of the first training batch,
    scaled by 1/sqrt(eigenvalue), plus their negatives (so the GELU after it loses nothing).
    They are set once (``initialised`` is saved in checkpoints) and never trained.
    """

    initialised: torch.Tensor  # a buffer: bool, ()

    def __init__(self, in_chans: int, eps: float = 5e-4) -> None:
        super().__init__()
        self.out_chans = 2 * in_chans * 4  # 2x2 patches, each filter and its negative
        self.conv = nn.Conv2d(in_chans, self.out_chans, 2, padding=0, bias=True)
        _fix(self.conv, "weight")  # whitening is a fixed change of basis
        self.eps = eps
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Sets the filters from a batch (N, C, H, W) of normalised training images."""
        c = x.shape[1]
        with torch.autocast(x.device.type, enabled=False):  # a bf16 covariance would be too coarse
            self._set_filters(x.float(), c)

    def _set_filters(self, x: torch.Tensor, c: int) -> None:
        patches = F.unfold(x, kernel_size=2).transpose(1, 2).reshape(-1, c * 4)
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / max(len(patches) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
        rows = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.eps)[:, None]).float()
        rows = rows.flip(0)  # strongest components first
        rows = torch.cat([rows, -rows])
        self.conv.weight.copy_(rows.reshape(-1, c, 2, 2))
        # Centre the outputs: cnnlab feeds own models 0-1 pixels, not mean-subtracted ones.
        assert self.conv.bias is not None  # made with bias=True
        self.conv.bias.copy_(-(rows @ mean))
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.initialised):
            self.init_from(x)  # the first training batch; a checkpoint load skips this
        return self.conv(x)


def _fast_shift(bn: nn.BatchNorm2d, lr_scale: float) -> None:
    """airbench's BatchNorm: the scale fixed at 1 and the shift learning ``lr_scale`` times faster.

    Scaling the shift's gradient is the same, for SGD, as its own learning rate (weight decay
    stays as it was), without a parameter group the optimiser would have to know about.
    """
    _fix(bn, "weight")
    bn.bias.register_hook(lambda grad: grad * lr_scale)


class ConvGroup(nn.Module):
    """airbench's block: conv, 2x2 max-pool, BN, GELU, conv, BN, GELU."""

    def __init__(
        self, in_chans: int, out_chans: int, pool: bool = True, shift_lr: float = 1.0, dirac: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn1 = nn.BatchNorm2d(out_chans, momentum=_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans, momentum=_BN_MOMENTUM)
        self.act = nn.GELU()
        if dirac:  # airbench: each conv starts by passing its inputs through (as many as it can)
            for conv in (self.conv1, self.conv2):
                nn.init.dirac_(conv.weight.data[: min(conv.in_channels, conv.out_channels)])
        if shift_lr != 1.0:
            for bn in (self.bn1, self.bn2):
                _fast_shift(bn, shift_lr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class FastCifarNet(nn.Module):
    """airbench94's network with configurable widths (airbench: 64/256/256)."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        image_size: tuple[int, int] = (32, 32),
        widths: Sequence[int] = (64, 256, 256),
        whiten: bool = True,
        dropout: float = 0.0,
        tta: TTA = "flip",
        shift_lr: float = 1.0,
        dirac: bool = False,
    ) -> None:
        super().__init__()
        self.tta: TTA = tta
        self.fit_tta: TTA = "flip" if tta != "none" else "none"  # validation while fitting (CheapValidationTTA)
        if whiten:
            whitening = PatchWhitening(in_chans)
            stem: nn.Module = whitening
            chans = whitening.out_chans
        else:
            chans = 2 * in_chans * 4
            stem = nn.Conv2d(in_chans, chans, 3, padding=1, bias=False)
        side = min(image_size) - (1 if whiten else 0)
        groups: list[nn.Module] = []
        for width in widths:
            groups.append(ConvGroup(chans, width, pool=side >= 4, shift_lr=shift_lr, dirac=dirac))
            side = side // 2 if side >= 4 else side
            chans = width
        self.stem, self.act = stem, nn.GELU()
        self.groups = nn.Sequential(*groups)
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(chans, num_classes, bias=False)
        )

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.groups(self.act(self.stem(x)))) * _LOGIT_SCALE

    def _mirrored(self, x: torch.Tensor) -> torch.Tensor:
        """Mean logits of each image and its mirror image.

        One view per call: a batch of all views measured 1.6x slower on this CPU (392 CIFAR
        images x 6 views, one thread), its activations outgrowing the caches.
        """
        return 0.5 * (self._logits(x) + self._logits(x.flip(-1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.tta == "none" or torch.is_grad_enabled():
            # With gradients (Grad-CAM explains one view's activations) the plain network answers.
            return self._logits(x)
        # Test-time augmentation (photos only: not for text/digits): the mirror image, and with
        # "flip-translate" also the image moved 1 px up-left and down-right (edges reflected),
        # each mirrored too; the original pair weighs as much as the two moved pairs together.
        logits = self._mirrored(x)
        if self.tta == "flip":
            return logits
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[-2:]
        moved = 0.5 * (self._mirrored(padded[..., :h, :w]) + self._mirrored(padded[..., 2:, 2:]))
        return 0.5 * logits + 0.5 * moved


@register_model("fast_cnn")
def fast_cnn(num_classes: int, in_chans: int, image_size: tuple[int, int], dropout: float = 0.0) -> nn.Module:
    """``--recipe fast``'s MNIST net: conv-BN-ReLU 24-48-96 with max-pools, 3x3 grid, Dense 128.

    About 0.17M parameters. Measured on MNIST (bf16, one core of a shared 2-core EPYC): 24-48-96
    takes 270 us per training image against 450 for 32-64-128 and 620 for the lesson's
    simple_cnn in its default fp32, with about the same accuracy per epoch as 32-64-128.
    """
    return FastCNN(num_classes, in_chans, image_size, widths=(24, 48, 96), dropout=dropout, hidden=128)


@register_model("fast_cnn_small")
def fast_cnn_small(num_classes: int, in_chans: int, image_size: tuple[int, int], dropout: float = 0.0) -> nn.Module:
    """``--recipe fast``'s net for its first one-epoch setup: ``fast_cnn`` at 16-32-64 (about 0.1M parameters).

    After one epoch on MNIST (the recipe, 5 seeds) 99.18-99.36% test (median 99.27%) against
    24-48-96's 99.25-99.45% (median 99.37%), for about 0.6x the training-step time (fp32, batch 64,
    timed round-robin on a shared 2-core EPYC). A name of its own: ``fast_cnn`` run folders keep
    loading.
    """
    return FastCNN(num_classes, in_chans, image_size, widths=(16, 32, 64), dropout=dropout, hidden=128)


@register_model("fast_cnn_slim")
def fast_cnn_slim(num_classes: int, in_chans: int, image_size: tuple[int, int], dropout: float = 0.0) -> nn.Module:
    """``--recipe fast``'s net: ``fast_cnn_small`` with half the first block's channels (8-32-64).

    The first block works on the full-size image, where its convolution, pool and their gradients
    cost most of a step: 0.75-0.89x the training-step time of 16-32-64 (bf16, channels_last, batch
    64 with the recipe's augmentation, one thread, three interleaved timings on a shared 2-core
    EPYC). After one epoch on MNIST (the recipe, 5 seeds) 99.10-99.35% test (median 99.17%) against
    16-32-64's 99.18-99.36% (median 99.27%).
    """
    return FastCNN(num_classes, in_chans, image_size, widths=(8, 32, 64), dropout=dropout, hidden=128)


@register_model("fast_cifar")
def fast_cifar(num_classes: int, in_chans: int, image_size: tuple[int, int], dropout: float = 0.0) -> nn.Module:
    """``--recipe fast-cifar``'s net: airbench94's design at half width (32/128/128, ~0.5M params).

    Full width (64/256/256) costs 3.5x the time per image on a 2-core CPU (bf16: 9.2 vs 2.6 ms),
    which leaves under 3 epochs in 20 minutes; half width trains about 8 in that time.
    """
    return FastCifarNet(num_classes, in_chans, image_size, widths=(32, 128, 128), dropout=dropout, tta="flip-translate")
