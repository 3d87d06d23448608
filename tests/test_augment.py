from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from dlx.data.augment import Augment, AugmentParams

ALL_ON = Augment(rotate=20, translate=0.15, scale=(0.8, 1.2), crop_padding=3, hflip=True, brightness=0.5, contrast=0.5)


def batch(b: int = 8, c: int = 1, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def shift_zero_fill(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Content moved dy pixels down and dx right; what comes in from the border is zero."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def test_disabled_returns_the_same_object() -> None:
    x = batch()
    aug = Augment()
    assert not aug.enabled
    assert aug(x) is x


@pytest.mark.parametrize(
    "kwargs",
    [{"rotate": 1}, {"translate": 0.1}, {"scale": (0.9, 1.0)}, {"crop_padding": 1}, {"hflip": True},
     {"brightness": 0.1}, {"contrast": 0.1}],
)  # fmt: skip
def test_any_operation_enables(kwargs: dict[str, Any]) -> None:
    assert Augment(**kwargs).enabled


def test_brightness_only_keeps_geometry() -> None:
    x = batch(16) * 0.5  # at most 0.5, so a factor up to 1.5 never clamps
    torch.manual_seed(0)
    y = Augment(brightness=0.5)(x)
    ratio = y / x
    # Every pixel of a sample is scaled by the same factor: nothing moved, only the intensity changed.
    per_sample = ratio.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert ((per_sample[:, 0] >= 0.5) & (per_sample[:, 0] <= 1.5)).all()
    assert per_sample[:, 0].std() > 0.05  # one factor per sample, not per batch


def test_contrast_only_scales_deviation_from_image_mean() -> None:
    x = 0.25 + batch(16) * 0.5  # mean ~0.5, deviations <= 0.25: a factor <= 1.5 stays inside [0, 1]
    torch.manual_seed(1)
    y = Augment(contrast=0.5)(x)
    dx = x - x.mean(dim=(1, 2, 3), keepdim=True)
    dy = y - y.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    factor = (dy * dx).flatten(1).sum(1) / (dx * dx).flatten(1).sum(1)
    torch.testing.assert_close(dy, dx * factor.view(-1, 1, 1, 1), atol=1e-5, rtol=1e-5)
    assert ((factor >= 0.5) & (factor <= 1.5)).all()


def test_integer_translation_is_a_zero_filled_shift() -> None:
    x = batch(2, c=3, h=20, w=32)
    aug = Augment(translate=0.5)
    # shift is a fraction of (width, height): 4/32 of the width and -5/20 of the height = (+4, -5) pixels.
    params = AugmentParams(shift=torch.tensor([[4 / 32, -5 / 20], [-3 / 32, 2 / 20]]))
    y = aug.apply(x, params)
    torch.testing.assert_close(y[0], shift_zero_fill(x[0], -5, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1], shift_zero_fill(x[1], 2, -3), atol=1e-5, rtol=0)


def test_random_translation_moves_a_bright_pixel_by_the_sampled_shift() -> None:
    b, h, w = 64, 28, 28
    x = torch.zeros(b, 1, h, w)
    x[:, :, 14, 14] = 1.0
    aug = Augment(translate=0.2)
    torch.manual_seed(123)
    params = aug.sample(b)
    torch.manual_seed(123)
    y = aug(x)
    # __call__ draws exactly what sample() draws for the same seed: the shift can be read back.
    torch.testing.assert_close(y, aug.apply(x, params))
    # Bilinear sampling of one pixel spreads it over up to 4 neighbours with weights summing to 1;
    # its centroid lands exactly at the shifted position.
    torch.testing.assert_close(y.sum(dim=(1, 2, 3)), torch.ones(b))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cx = (y[:, 0] * xs).sum(dim=(1, 2)) - 14
    cy = (y[:, 0] * ys).sum(dim=(1, 2)) - 14
    torch.testing.assert_close(cx, params.shift[:, 0] * w, atol=1e-4, rtol=0)
    torch.testing.assert_close(cy, params.shift[:, 1] * h, atol=1e-4, rtol=0)
    assert params.shift.abs().max() <= 0.2
    assert (params.shift < -0.05).any() and (params.shift > 0.05).any()


def test_rotation_by_right_angles_is_exact() -> None:
    x = batch(2, c=3, h=9, w=9)
    aug = Augment(rotate=180)
    y90 = aug.apply(x, AugmentParams(angle=torch.tensor([90.0, -90.0])))
    torch.testing.assert_close(y90[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-5, rtol=0)  # counter-clockwise
    torch.testing.assert_close(y90[1], torch.rot90(x[1], -1, (1, 2)), atol=1e-5, rtol=0)
    # 180 degrees also on a non-square image: the aspect ratio must not turn rotation into shear.
    xr = batch(1, h=10, w=16)
    y180 = aug.apply(xr, AugmentParams(angle=torch.tensor([180.0])))
    torch.testing.assert_close(y180, xr.flip(-1, -2), atol=1e-5, rtol=0)


def reference_affine(x: torch.Tensor, angle: float, shift: tuple[float, float], zoom: float) -> torch.Tensor:
    """Independent per-pixel definition: rotate counter-clockwise (on screen) by ``angle`` degrees about
    the image centre, zoom by ``zoom``, shift by ``shift`` * (W, H) pixels; bilinear, zeros outside."""
    c, h, w = x.shape
    a = math.radians(angle)
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    # Output pixel -> offset from the centre, undo shift, zoom and rotation (y points down on screen).
    u = (j - (w - 1) / 2 - shift[0] * w) / zoom
    v = (i - (h - 1) / 2 - shift[1] * h) / zoom
    sx = math.cos(a) * u - math.sin(a) * v + (w - 1) / 2
    sy = math.sin(a) * u + math.cos(a) * v + (h - 1) / 2
    x0, y0 = sx.floor().long(), sy.floor().long()
    out = torch.zeros(c, h, w, dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (sx - xi).abs()) * (1 - (sy - yi).abs())
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out += torch.where(inside, weight, 0) * x.double()[:, yi.clamp(0, h - 1), xi.clamp(0, w - 1)]
    return out.to(x.dtype)


@pytest.mark.parametrize(("angle", "shift", "zoom"), [(30.0, (0.0, 0.0), 1.0), (-17.0, (0.1, -0.05), 1.3),
                                                      (8.0, (-0.02, 0.07), 0.85)])  # fmt: skip
def test_combined_affine_matches_a_per_pixel_reference(angle: float, shift: tuple[float, float], zoom: float) -> None:
    x = batch(1, c=3, h=20, w=32)
    params = AugmentParams(angle=torch.tensor([angle]), shift=torch.tensor([shift]), zoom=torch.tensor([zoom]))
    y = Augment(rotate=45).apply(x, params)
    torch.testing.assert_close(y[0], reference_affine(x[0], angle, shift, zoom), atol=1e-4, rtol=0)


def test_zoom_enlarges_about_the_centre() -> None:
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 6] = 1.0  # 4 pixels left of the centre pixel (10, 10)
    y = Augment(scale=(2.0, 2.0)).apply(x, AugmentParams(zoom=torch.tensor([2.0])))
    cols = torch.arange(21, dtype=torch.float32)
    assert y[0, 0, 10].sum() > 0
    centroid = (y[0, 0, 10] * cols).sum() / y[0, 0, 10].sum()
    assert centroid.item() == pytest.approx(2.0, abs=1e-4)  # 8 pixels left of the centre


def test_crop_output_is_a_window_of_the_padded_input() -> None:
    p, b, h, w = 3, 32, 12, 10
    x = batch(b, c=2, h=h, w=w) + 0.01  # no exact zeros, so each window matches at one offset only
    torch.manual_seed(7)
    y = Augment(crop_padding=p)(x)
    padded = F.pad(x, (p, p, p, p))
    offsets = []
    for i in range(b):
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(y[i], padded[i, :, dy : dy + h, dx : dx + w])]  # fmt: skip
        assert len(hits) == 1, f"sample {i} is not a window of its padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 5  # offsets are drawn per sample


def test_hflip_flips_about_half_of_the_samples() -> None:
    x = batch(200, h=6, w=7)
    torch.manual_seed(3)
    y = Augment(hflip=True)(x)
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(200)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(200)])
    assert (flipped ^ kept).all()
    assert 70 < int(flipped.sum()) < 130


def test_same_seed_same_output_different_seed_different() -> None:
    x = batch(32)
    torch.manual_seed(42)
    a = ALL_ON(x)
    torch.manual_seed(42)
    b = ALL_ON(x)
    torch.manual_seed(43)
    c = ALL_ON(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_output_stays_in_unit_range_and_input_is_untouched() -> None:
    x = batch(64)
    x[:, :, :4] = 1.0
    before = x.clone()
    torch.manual_seed(0)
    y = Augment(brightness=1.0, contrast=1.0, rotate=30, hflip=True)(x)
    assert y.min() >= 0 and y.max() <= 1
    assert y.max() == 1  # brightness up to 2x on ones: clamped, not rescaled
    assert torch.equal(x, before)


def test_large_batch_is_fast() -> None:
    x = batch(512)
    ALL_ON(x)  # warm-up
    t0 = time.perf_counter()
    y = ALL_ON(x)
    assert time.perf_counter() - t0 < 1.0
    assert y.shape == (512, 1, 28, 28)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_and_shape_preserved(dtype: torch.dtype) -> None:
    x = batch(4, c=3, h=16, w=12).to(dtype)
    torch.manual_seed(0)
    y = ALL_ON(x)
    assert (y.dtype, y.shape, y.device) == (dtype, x.shape, x.device)
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stays_on_cuda() -> None:
    x = batch(64).cuda().half()
    torch.manual_seed(0)
    y = ALL_ON(x)
    assert (y.device, y.dtype, y.shape) == (x.device, x.dtype, x.shape)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rotate": -1}, "rotate must be"),
        ({"rotate": 200}, "rotate must be"),
        ({"translate": -0.1}, "translate must be"),
        ({"translate": float("nan")}, "translate must be"),
        ({"scale": (1.2, 0.8)}, "0 < low <= high"),
        ({"scale": (0.0, 1.0)}, "0 < low <= high"),
        ({"scale": (1.0,)}, "scale must be a pair"),
        ({"crop_padding": -2}, "crop_padding must be"),
        ({"crop_padding": 1.5}, "crop_padding must be"),
        ({"hflip": "yes"}, "hflip must be"),
        ({"brightness": -0.2}, "brightness must be"),
        ({"contrast": 1.5}, "contrast must be"),
    ],
)
def test_invalid_parameters_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Augment(**kwargs)


def test_all_problems_reported_together_and_list_scale_accepted() -> None:
    with pytest.raises(ValueError, match=r"rotate must be.*brightness must be"):
        Augment(rotate=-5, brightness=3)
    aug = Augment(scale=[0.9, 1.1])  # e.g. straight from YAML
    assert aug.scale == (0.9, 1.1)
    hash(aug)


def test_rejects_non_batch_input() -> None:
    with pytest.raises(ValueError, match=r"float batch \[B, C, H, W\]"):
        Augment(hflip=True)(torch.rand(28, 28))


# --- the data path on several processes (rank shards of an epoch)


@pytest.mark.parametrize("n", [0, 1, 7, 100, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_epoch_shards_are_disjoint_equal_and_cover_the_permutation(n: int, world: int) -> None:
    from dlx.data.loader import shard

    order = torch.randperm(n, generator=torch.Generator().manual_seed(n * 10 + world))
    train = [shard(order, r, world, equal=True) for r in range(world)]
    assert {len(s) for s in train} == {n // world}  # every rank takes the same number of steps
    seen = torch.cat(train).tolist()
    assert len(seen) == len(set(seen))  # disjoint: no image twice in an epoch
    assert set(seen) == set(order[: (n // world) * world].tolist())  # only the ragged tail is left out
    evaluation = torch.cat([shard(order, r, world, equal=False) for r in range(world)]).tolist()
    assert sorted(evaluation) == sorted(order.tolist())  # evaluation covers every image exactly once


def test_batches_of_two_ranks_split_each_epoch_and_one_rank_is_unchanged() -> None:
    from dlx.data.loader import Batches, Split

    n = 103
    split = Split(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n))  # labels are the indices
    kw = dict(mean=None, std=None, shuffle=True, drop_last=True)

    def batches(rank: int, world: int, size: int, seed: int = 5) -> list[list[int]]:
        b = Batches(split, batch_size=size, rank=rank, world=world, **kw)
        b.set_epoch(seed)  # the trainer seeds every epoch's order the same way on every rank
        torch.manual_seed(rank)  # the global RNG (augmentation, dropout) differs per rank: the order must not
        return [y.tolist() for _, y in b]

    def flat(parts: list[list[int]]) -> list[int]:
        return [i for part in parts for i in part]

    today = torch.randperm(n, generator=torch.Generator().manual_seed(5))[:100].tolist()
    assert flat(batches(0, 1, 10)) == today  # world 1: the seeded permutation, ragged tail dropped
    assert batches(0, 1, 10, seed=6) != batches(0, 1, 10)  # another epoch, another order
    a, b = batches(0, 2, 5), batches(1, 2, 5)
    assert len(flat(a)) == len(flat(b)) == 50 and not set(flat(a)) & set(flat(b))
    # Batch i of rank 0 and of rank 1 together hold exactly the images of the single process's batch i (global
    # batch 10 = 2 x 5): a 2-process run takes the same steps over the same images as one process.
    assert [sorted(x + y) for x, y in zip(a, b, strict=True)] == [sorted(x) for x in batches(0, 1, 10)]
    assert len(Batches(split, batch_size=10, rank=1, world=2, **kw)) == 5
    evaluation = [Batches(split, batch_size=10, mean=None, std=None, rank=r, world=2) for r in (0, 1)]
    assert sorted(torch.cat([y for e in evaluation for _, y in e]).tolist()) == list(range(n))
    with pytest.raises(ValueError, match=r"rank 2 is not in 0\.\.1"):
        Batches(split, batch_size=10, rank=2, world=2, **kw)
