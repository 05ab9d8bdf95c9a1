"""Each geometric / photometric op does what it says on a synthetic image with a known pattern."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.augment import BatchAugment, affine_batch, build_batch_augment
from cnnlab.augment.batch import affine_theta, sampling_grid, warp
from cnnlab.config import AugmentConfig, resolve_augment


def bright(x: torch.Tensor) -> list[list[int]]:
    """(row, col) of pixels above 0.5 in a (1, 1, H, W) batch."""
    return (x[0, 0] > 0.5).nonzero().tolist()


def dot(size: int = 32, row: int = 10, col: int = 10) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def test_hflip_moves_bright_left_edge_to_the_right() -> None:
    x = torch.zeros(1, 3, 16, 16)
    x[..., :, :2] = 1.0
    out = affine_batch(x, hflip=True)
    assert out[..., :, -2:].min() > 0.99 and out[..., :, :-2].max() < 0.01


def test_vflip_moves_top_row_to_bottom() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[..., 0, :] = 1.0
    assert torch.allclose(affine_batch(x, vflip=True), x.flip(-2), atol=1e-5)


def test_rotation_90_moves_top_left_corner_to_bottom_left() -> None:
    # Counter-clockwise as seen, like Keras and torchvision: top-left goes to bottom-left.
    assert bright(affine_batch(dot(8, 0, 0), angle_deg=90.0)) == [[7, 0]]


def test_rotation_180_on_non_square_equals_double_flip() -> None:
    x = torch.rand(2, 3, 10, 14)
    assert torch.allclose(affine_batch(x, angle_deg=180.0), x.flip(-1).flip(-2), atol=1e-5)


@pytest.mark.parametrize(
    "frac, expected", [((0.25, 0.0), [[10, 18]]), ((0.0, 0.25), [[18, 10]]), ((-0.25, 0.0), [[10, 2]])]
)
def test_shift_moves_dot_by_expected_pixels(frac: tuple[float, float], expected: list[list[int]]) -> None:
    assert bright(affine_batch(dot(), translate_frac=frac)) == expected  # 0.25 * 32 = 8 px


def test_zoom_in_makes_centred_square_bigger() -> None:
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0  # 64 bright pixels
    bigger = (affine_batch(x, scale=1.5) > 0.5).sum().item()
    smaller = (affine_batch(x, scale=0.5) > 0.5).sum().item()
    assert bigger == pytest.approx(64 * 1.5**2, rel=0.15)
    assert smaller == pytest.approx(64 * 0.5**2, rel=0.3)


def test_random_resized_crop_box_fills_the_output() -> None:
    x = torch.zeros(1, 1, 16, 16)
    x[..., :, 6:] = 1.0  # right half bright, with 2 px margin for bilinear upsampling at its edge
    right_half = torch.tensor([[0.5, 0.0, 0.5, 1.0]])  # (cx, cy, w, h), normalised
    out = warp(x, affine_theta(1, 16, 16, x, crop=right_half))
    assert out.min() > 0.99
    left_half = torch.tensor([[-0.5, 0.0, 0.5, 1.0]])
    assert warp(x, affine_theta(1, 16, 16, x, crop=left_half))[..., :, :8].max() < 0.01


def test_fill_modes_differ_at_the_border() -> None:
    x = torch.zeros(1, 1, 10, 10)
    x[..., :, 0] = 1.0  # bright left column
    x[..., :, 9] = 0.5  # grey right column
    shifted = {
        m: affine_batch(x, translate_frac=(0.2, 0.0), fill_mode=m)[0, 0, 5, :2]
        for m in ("nearest", "constant", "reflect", "wrap")
    }
    assert torch.allclose(shifted["nearest"], torch.tensor([1.0, 1.0]), atol=1e-5)  # edge repeated
    assert torch.allclose(shifted["constant"], torch.tensor([0.0, 0.0]), atol=1e-5)  # fill value 0
    assert torch.allclose(shifted["reflect"], torch.tensor([0.0, 1.0]), atol=1e-5)  # mirror: ..cba|abc
    assert torch.allclose(shifted["wrap"], torch.tensor([0.0, 0.5]), atol=1e-5)  # right edge comes round


def test_brightness_scales_the_mean() -> None:
    x = torch.full((4, 3, 8, 8), 0.4)
    aug = BatchAugment(AugmentConfig(brightness=(0.5, 0.5))).train()
    assert aug(x).mean().item() == pytest.approx(0.2, abs=1e-6)


def test_contrast_keeps_mean_and_shrinks_spread() -> None:
    x = torch.rand(4, 3, 8, 8) * 0.5 + 0.25
    out = BatchAugment(AugmentConfig(contrast=(0.5, 0.5))).train()(x)
    assert out.std().item() == pytest.approx(0.5 * x.std().item(), rel=0.05)


@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (3, 1, 28, 28), (2, 3, 20, 30)])
def test_everything_on_keeps_shape_dtype_and_range(shape: tuple[int, ...]) -> None:
    cfg = resolve_augment(
        "strong",
        shear=10.0,
        vflip=True,
        brightness=(0.5, 1.8),
        contrast=(0.5, 1.5),
        random_resized_crop=0.3,
        fill_mode="wrap",
    )
    x = torch.rand(shape)
    out = BatchAugment(cfg, generator=torch.Generator().manual_seed(0)).train()(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, x)


def test_draws_differ_per_image_and_repeat_with_the_same_generator() -> None:
    x = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()
    cfg = resolve_augment("lesson")
    a = BatchAugment(cfg, generator=torch.Generator().manual_seed(3)).train()(x)
    b = BatchAugment(cfg, generator=torch.Generator().manual_seed(3)).train()(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_random_erasing_always_erases_a_box() -> None:
    x = torch.zeros(16, 1, 32, 32)
    out = BatchAugment(AugmentConfig(random_erasing=1.0)).train()(x)
    erased = (out > 0).flatten(1).sum(1)
    assert (erased > 0).all() and (erased < 32 * 32 * 0.5).all()


def test_eval_mode_is_identity() -> None:
    aug = BatchAugment(resolve_augment("strong")).eval()
    x = torch.rand(4, 3, 8, 8)
    assert aug(x) is x


def test_build_returns_none_when_nothing_is_on() -> None:
    assert build_batch_augment(resolve_augment("none")) is None
    assert build_batch_augment(AugmentConfig(mixup=0.2, label_smoothing=0.1)) is None  # mix_batch's job
    assert isinstance(build_batch_augment(resolve_augment("light")), BatchAugment)


def test_uint8_batch_is_refused() -> None:
    with pytest.raises(TypeError, match="float"):
        BatchAugment(resolve_augment("light")).train()(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


def test_translate_moves_whole_pixels_without_blending() -> None:
    """Each image is the input moved by integers in [-2, 2], so no new (blended) values appear."""
    x = torch.randperm(3 * 12 * 12, dtype=torch.float32).div(1000).view(1, 3, 12, 12)
    x = x.expand(64, -1, -1, -1).contiguous()
    aug = build_batch_augment(AugmentConfig(translate=2, fill_mode="reflect"), torch.Generator().manual_seed(0))
    out = aug.train()(x)
    assert out.shape == x.shape and set(out.unique().tolist()) <= set(x.unique().tolist())
    moves = set()
    for image in out:  # the interior pins the move down
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(image[:, 2:-2, 2:-2], x[0, :, 2 - dy : 10 - dy, 2 - dx : 10 - dx])
        ]
        assert len(found) == 1
        moves.add(found[0])
    assert len(moves) > 10  # of the 25 possible moves, most are drawn among 64 images


def test_translate_alone_turns_augmentation_on_and_caps_at_the_image_side() -> None:
    assert build_batch_augment(AugmentConfig(translate=1)) is not None
    tiny = torch.rand(4, 1, 3, 3)
    assert BatchAugment(AugmentConfig(translate=64, fill_mode="reflect")).train()(tiny).shape == tiny.shape


@pytest.mark.parametrize("n, height, width", [(64, 28, 28), (3, 17, 31), (2, 224, 160)])
def test_sampling_grid_matches_torchs_affine_grid(n: int, height: int, width: int) -> None:
    theta = affine_theta(
        n, height, width, torch.zeros(1), angle_deg=torch.rand(n) * 40 - 20, translate_frac=torch.rand(n, 2) * 0.2
    )
    theta = theta + torch.randn(n, 2, 3) * 0.1  # any matrix, not only those the ops make
    expected = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    grid = sampling_grid(theta, height, width)
    assert grid.shape == expected.shape
    assert torch.allclose(grid, expected, atol=1e-6)
