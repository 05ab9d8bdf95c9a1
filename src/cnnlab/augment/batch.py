"""Batched, on-device train-time augmentation: one affine warp, then colour, policy and erasing.

All geometric ops (rotation, shifts, zoom, shear, flips, random resized crop) are composed into
one 2x3 matrix per image and applied with one sampling grid and a single ``grid_sample`` call for the
whole batch, so a batch costs about one bilinear resample however many ops are on. Whole-pixel
translation (``translate``) is a pad and a random crop before it: no resampling at all.

Fill modes map to ``grid_sample`` padding modes (Keras' names -> torch's):
  nearest -> 'border' (repeat the edge pixel), reflect -> 'reflection' (mirror about the edge,
  Keras' "dcba|abcd"), constant -> 'zeros' (fill value 0), wrap -> the image is padded by one
  pixel circularly and the sampling coordinates are taken modulo the image size, so
  bilinear interpolation across the seam blends with the opposite edge as it should.

Policies (RandAugment, TrivialAugmentWide from ``torchvision.transforms.v2``) pick ONE op per call
for a whole batched tensor. Calling them once per image costs about 10x a batched call (measured
on 256 x 3x32x32 uint8, 2 CPU cores: 30-65 ms per-image loop, 3-10 ms in chunks of 16, 1-7 ms
whole batch), so they run per chunk of ``policy_chunk`` images: 16 independent op draws per
256-image batch at close to batched speed. They run on uint8, their native type (posterize,
equalize and solarize are exact there), and draw from torch's global RNG (torchvision takes
no generator), so seed with ``torch.manual_seed`` / Lightning's ``seed_everything``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from cnnlab.augment.flip import AlternatingFlip
from cnnlab.config import AugmentConfig
from cnnlab.data.crop import random_crop

_PADDING = {"nearest": "border", "reflect": "reflection", "constant": "zeros", "wrap": "border"}
_PAD_MODE = {"nearest": "replicate", "reflect": "reflect", "constant": "constant", "wrap": "circular"}
_CROP_RATIO = (3 / 4, 4 / 3)  # aspect ratio range of random resized crop, torchvision's default
_ERASE_AREA = (0.02, 0.33)  # erased box area fraction, torchvision's RandomErasing default
_ERASE_RATIO = (0.3, 3.3)  # erased box aspect ratio range, same source

Param = float | bool | torch.Tensor


def _per_image(value: Param, n: int, ref: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or (N,) tensor to an (N,) float tensor on ref's device and dtype."""
    return torch.as_tensor(value, dtype=ref.dtype, device=ref.device).expand(n)


def _mat2(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Stack per-image entries into (N, 2, 2) matrices [[a, b], [c, d]]."""
    return torch.stack([a, b, c, d], dim=-1).view(-1, 2, 2)


def affine_theta(
    n: int,
    height: int,
    width: int,
    ref: torch.Tensor,
    angle_deg: Param = 0.0,
    translate_frac: tuple[float, float] | torch.Tensor = (0.0, 0.0),
    scale: Param = 1.0,
    shear_deg: Param = 0.0,
    hflip: Param = False,
    vflip: Param = False,
    crop: torch.Tensor | None = None,
) -> torch.Tensor:
    """The (N, 2, 3) ``affine_grid`` matrices (output -> input, normalised coords) for the ops.

    The forward map, in pixel units around the image centre (y down), applies: crop, flips, zoom,
    shear, rotation (counter-clockwise as seen), then translation. Each op's inverse is closed
    form, so the inverse map is composed directly, without a matrix inverse.

    Args:
        crop: Optional (N, 4) of (cx, cy, w, h) in normalised coords: the input box that is
            resized to fill the output (random resized crop).
        Others: as in ``affine_batch``.
    """
    a = torch.deg2rad(_per_image(angle_deg, n, ref))
    s = _per_image(scale, n, ref)
    sh = torch.tan(torch.deg2rad(_per_image(shear_deg, n, ref)))
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    fx = 1 - 2 * _per_image(hflip, n, ref)  # -1 where flipped
    fy = 1 - 2 * _per_image(vflip, n, ref)
    cos, sin = torch.cos(a), torch.sin(a)
    rot_inv = _mat2(cos, -sin, sin, cos)  # forward is [[cos, sin], [-sin, cos]] with y down
    shear_inv = _mat2(one, sh, zero, one)  # forward x' = x - tan(shear) * y
    lin = _mat2(fx / s, zero, zero, fy / s) @ shear_inv @ rot_inv  # flip and zoom are diagonal
    half = torch.tensor([width / 2, height / 2], dtype=ref.dtype, device=ref.device)
    t = torch.as_tensor(translate_frac, dtype=ref.dtype, device=ref.device).expand(n, 2) * 2 * half
    offset = -(lin @ t.unsqueeze(-1)).squeeze(-1)  # p_in = lin (p_out - t)
    if crop is not None:  # p_in = diag(w, h) p + c: the box's half-size scales, its centre shifts
        size = crop[:, 2:]
        lin = size.unsqueeze(-1) * lin
        offset = size * offset + crop[:, :2] * half
    # Pixel units keep rotation a rotation on non-square images; convert to normalised coords.
    lin = lin * half.view(1, 1, 2) / half.view(1, 2, 1)
    return torch.cat([lin, (offset / half).unsqueeze(-1)], dim=-1)


def sampling_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (N, C, height, width), align_corners=False)``, computed by broadcasting.

    Each output pixel's source is ``theta @ (x, y, 1)``, a weighted sum of three planes; torch's
    ``affine_grid`` computes it as N batched (H*W x 3) @ (3 x 2) matrix products, which run slowly on
    a CPU: 0.45 ms against 0.08 ms for 64 MNIST digits, 8 ms against 0.5 ms for 32 photos at 224 px
    (2 cores). The same values to float rounding (tests/augment/test_augment_batch.py).
    """
    n = theta.shape[0]
    # Pixel centres in normalised coordinates, as align_corners=False places them.
    xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    coefficients = theta.reshape(n, 1, 1, 2, 3)  # broadcast over (N, H, W, 2): x' and y' at once
    return (
        coefficients[..., 0] * xs.view(1, 1, width, 1)
        + coefficients[..., 1] * ys.view(1, height, 1, 1)
        + coefficients[..., 2]
    )


def warp(x: torch.Tensor, theta: torch.Tensor, fill_mode: str = "nearest", side: int | None = None) -> torch.Tensor:
    """Resample a batch with per-image (N, 2, 3) matrices, bilinear, filling per ``fill_mode``;
    ``side``: the output's side (default: the input's size)."""
    height, width = x.shape[-2:] if side is None else (side, side)
    grid = sampling_grid(theta, height, width)
    if fill_mode == "wrap":
        h, w = x.shape[-2:]
        grid = torch.remainder(grid + 1, 2) - 1  # wrap into the image
        x = F.pad(x, (1, 1, 1, 1), mode="circular")  # neighbours across the seam for bilinear
        grid = grid * torch.tensor([w / (w + 2), h / (h + 2)], dtype=grid.dtype, device=grid.device)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=_PADDING[fill_mode], align_corners=False)
    return out.clamp_(0.0, 1.0)  # bilinear is convex, clamp only removes rounding overshoot


def translate(
    x: torch.Tensor, pixels: int, fill_mode: str = "nearest", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each (square) image moved by a whole number of pixels in [-pixels, pixels] on each axis.

    Padding by ``pixels`` (filled as ``fill_mode`` says) and cropping back at a random offset moves
    the stored pixels themselves: no bilinear resampling, which the affine shifts need for
    fractional moves and which blurs small images (a 32-px photo shifted by 0.5 px averages
    neighbours). ``reflect`` mirrors about the edge pixel ("dcb|abcd", torch's and airbench's);
    reflection needs the pad to stay below the image's side, hence the cap.
    """
    side = x.shape[-1]
    pixels = min(pixels, side - 1)
    return random_crop(F.pad(x, (pixels,) * 4, mode=_PAD_MODE[fill_mode]), side, generator)


def affine_batch(
    x: torch.Tensor,
    angle_deg: Param = 0.0,
    translate_frac: tuple[float, float] | torch.Tensor = (0.0, 0.0),
    scale: Param = 1.0,
    shear_deg: Param = 0.0,
    hflip: Param = False,
    vflip: Param = False,
    fill_mode: str = "nearest",
) -> torch.Tensor:
    """Apply one affine transform per image (fixed values, or (N,) / (N, 2) tensors per image).

    Args:
        x: Float batch (N, C, H, W) in [0, 1].
        angle_deg: Rotation, counter-clockwise as seen, in degrees.
        translate_frac: (dx, dy) as fractions of width / height; positive moves content right / down.
        scale: Magnification; > 1 zooms in.
        shear_deg: Shear angle along x, in degrees.
        hflip: Mirror left-right. vflip: Mirror top-bottom.
        fill_mode: 'nearest', 'constant' (0), 'reflect' or 'wrap'.

    Returns:
        The warped batch, same shape, dtype and range.
    """
    n, _, h, w = x.shape
    theta = affine_theta(n, h, w, x, angle_deg, translate_frac, scale, shear_deg, hflip, vflip)
    return warp(x, theta, fill_mode)


class BatchAugment(torch.nn.Module):
    """Random train-time augmentation of a float (N, C, H, W) batch in [0, 1]; identity in eval mode.

    Args:
        cfg: The augmentation config (mixup / cutmix / label smoothing live in ``mix_batch``).
        generator: Optional torch.Generator on the batch's device, for reproducible draws.
        policy_chunk: Images per RandAugment / TrivialAugment call (one op drawn per chunk).
        crop: The model's input side when images are stored with a margin (``cnnlab.data.crop``):
            each image first becomes a random crop of that side, or, with ``random_resized_crop``,
            a random box of the whole stored square resized to it.
        loader_flips: the training loader mirrors the images (``--flip-mode alternate``:
            ``augment.flip.AlternatingFlip``), so ``--hflip`` draws no coin here. Without a loader
            that knows each image's position and epoch (cached feature views), the flips stay random.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        generator: torch.Generator | None = None,
        policy_chunk: int = 16,
        crop: int | None = None,
        loader_flips: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.crop = crop
        self.random_hflip = cfg.hflip and not loader_flips
        # Whether anything is left for the warp: with only --hflip on, the loader's flips replace it.
        self.warps = cfg.geometric if self.random_hflip else replace(cfg, hflip=False, flip_mode="random").geometric
        self.generator = generator
        self.policy_chunk = policy_chunk
        self.policy: torch.nn.Module | None = None
        if cfg.policy == "randaugment":
            self.policy = v2.RandAugment()
        elif cfg.policy == "trivialaugment":
            self.policy = v2.TrivialAugmentWide()

    def _uniform(self, n: int, lo: float, hi: float, ref: torch.Tensor) -> torch.Tensor:
        """n draws from U[lo, hi] on ref's device and dtype."""
        u = torch.rand(n, device=ref.device, dtype=ref.dtype, generator=self.generator)
        return lo + (hi - lo) * u

    def _symmetric(self, n: int, bound: float, ref: torch.Tensor) -> torch.Tensor | float:
        """n draws from U[-bound, bound], or 0.0 when the op is off (no random numbers spent)."""
        return self._uniform(n, -bound, bound, ref) if bound else 0.0

    def _coin(self, n: int, on: bool, ref: torch.Tensor) -> torch.Tensor | bool:
        """n fair coin flips, or False when the op is off."""
        return self._uniform(n, 0.0, 1.0, ref) < 0.5 if on else False

    def _crop_boxes(self, n: int, ref: torch.Tensor) -> torch.Tensor:
        """(N, 4) random resized crop boxes (cx, cy, w, h) in normalised coords."""
        scale = self.cfg.random_resized_crop
        assert scale is not None  # boxes are drawn only when the crop is on
        area = self._uniform(n, float(scale), 1.0, ref)
        ratio = torch.exp(self._uniform(n, math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1]), ref))
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # clamping keeps the box inside the image
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = self._uniform(n, -1.0, 1.0, ref) * (1 - w)
        cy = self._uniform(n, -1.0, 1.0, ref) * (1 - h)
        return torch.stack([cx, cy, w, h], dim=-1)

    def _geometric(self, x: torch.Tensor, side: int | None = None) -> torch.Tensor:
        """All geometric ops in one warp, to ``side`` x ``side`` if given."""
        c, n, (h, w) = self.cfg, x.shape[0], x.shape[-2:]
        shift = torch.stack(
            [
                _per_image(self._symmetric(n, c.width_shift, x), n, x),
                _per_image(self._symmetric(n, c.height_shift, x), n, x),
            ],
            dim=-1,
        )
        theta = affine_theta(
            n,
            h,
            w,
            x,
            angle_deg=self._symmetric(n, c.rotation, x),
            translate_frac=shift,
            scale=1 + self._symmetric(n, c.zoom, x),
            shear_deg=self._symmetric(n, c.shear, x),
            hflip=self._coin(n, self.random_hflip, x),
            vflip=self._coin(n, c.vflip, x),
            crop=self._crop_boxes(n, x) if c.random_resized_crop is not None else None,
        )
        return warp(x, theta, c.fill_mode, side)

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image brightness (multiply) and contrast (blend with the image's grey mean)."""
        n = x.shape[0]
        if self.cfg.brightness is not None:
            x = x * self._uniform(n, *self.cfg.brightness, x).view(n, 1, 1, 1)
        if self.cfg.contrast is not None:
            grey = x if x.shape[1] == 1 else (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
            mean = grey.mean(dim=(-2, -1), keepdim=True).view(n, 1, 1, 1)
            x = mean + (x - mean) * self._uniform(n, *self.cfg.contrast, x).view(n, 1, 1, 1)
        return x.clamp(0.0, 1.0)

    def _apply_policy(self, x: torch.Tensor) -> torch.Tensor:
        """RandAugment / TrivialAugment per chunk, on uint8 (the policies' native, exact type)."""
        assert self.policy is not None
        x8 = x.mul(255).round_().to(torch.uint8)
        out = torch.cat([self.policy(chunk) for chunk in torch.split(x8, self.policy_chunk)])
        return out.to(x.dtype).div_(255)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        """Replace one random box per selected image with uniform noise (timm's 'pixel' mode)."""
        n, _, h, w = x.shape
        hit = self._uniform(n, 0.0, 1.0, x) < self.cfg.random_erasing
        area = self._uniform(n, *_ERASE_AREA, x) * (h * w)
        ratio = torch.exp(self._uniform(n, math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1]), x))
        eh = torch.sqrt(area * ratio).clamp(max=h)
        ew = torch.sqrt(area / ratio).clamp(max=w)
        top = self._uniform(n, 0.0, 1.0, x) * (h - eh)
        left = self._uniform(n, 0.0, 1.0, x) * (w - ew)
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        box = (
            (rows >= top.view(n, 1, 1))
            & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1))
            & (cols < (left + ew).view(n, 1, 1))
        )
        mask = (box & hit.view(n, 1, 1)).unsqueeze(1)
        noise = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=self.generator)
        return torch.where(mask, noise, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a float batch (N, C, H, W) in [0, 1]; returns it unchanged in eval mode."""
        if not self.training or x.shape[0] == 0:
            return x
        if not x.is_floating_point():
            raise TypeError(f"BatchAugment expects a float batch in [0, 1], got {x.dtype}; divide uint8 by 255")
        margin = self.crop is not None and max(x.shape[-2:]) > self.crop
        resized_crop = margin and self.cfg.random_resized_crop is not None
        if margin and not resized_crop:
            assert self.crop is not None  # there is a margin around it
            x = random_crop(x, self.crop, self.generator)
        if self.cfg.translate:
            x = translate(x, self.cfg.translate, self.cfg.fill_mode, self.generator)
        if self.warps:
            x = self._geometric(x, self.crop if resized_crop else None)
        if self.cfg.photometric:
            x = self._photometric(x)
        if self.policy is not None:
            x = self._apply_policy(x)
        if self.cfg.random_erasing:
            x = self._erase(x)
        return x

    def extra_repr(self) -> str:
        return f"cfg={self.cfg}, policy_chunk={self.policy_chunk}, crop={self.crop}"


def build_batch_augment(
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    policy_chunk: int = 16,
    crop: int | None = None,
    loader_flips: bool = False,
) -> BatchAugment | None:
    """A BatchAugment for the config, or None when no per-image op is on (the step pays nothing).

    ``crop``, ``loader_flips``: see BatchAugment. Random crops come with augmentation: a run without
    any trains on the centre crops it is evaluated on, so frozen layers' outputs stay the same each
    epoch (cacheable).
    """
    if not (cfg.translate or cfg.geometric or cfg.photometric or cfg.policy is not None or cfg.random_erasing):
        return None
    return BatchAugment(cfg, generator=generator, policy_chunk=policy_chunk, crop=crop, loader_flips=loader_flips)


def alternating_flip(cfg: AugmentConfig, seed: int) -> AlternatingFlip | None:
    """The training loader's flips for ``--flip-mode alternate`` (None: BatchAugment's coins, if any)."""
    return AlternatingFlip(seed) if cfg.flip_mode == "alternate" else None  # the config checked --hflip
