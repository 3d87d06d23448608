"""Batched data augmentation as tensor ops: a whole batch at once, on whatever device it lives.

No PIL and no per-image Python: each random parameter is drawn for the whole batch with one
``torch.rand`` call on the batch's device, rotation/translation/zoom are fused into one affine
matrix per sample and applied with a single ``grid_sample``, and the random crop is one
advanced-indexing gather. Randomness comes from the global torch RNG, which the trainer seeds
per epoch, so an epoch's augmentation is reproducible.

Drawing (:meth:`Augment.sample`) is separate from applying (:meth:`Augment.apply`) so that the
parameters of a batch can be inspected or replayed (tests, pictures of the augmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one batch; ``None`` means the operation is off (identity)."""

    angle: torch.Tensor | None = None  # degrees, [B], positive = counter-clockwise on screen
    shift: torch.Tensor | None = None  # fraction of (width, height), [B, 2], positive = right/down
    zoom: torch.Tensor | None = None  # [B], > 1 enlarges the content
    crop: torch.Tensor | None = None  # integer (top, left) window offsets into the padded image, [B, 2]
    flip: torch.Tensor | None = None  # bool [B]
    brightness: torch.Tensor | None = None  # multiplier, [B]
    contrast: torch.Tensor | None = None  # multiplier of the deviation from the image mean, [B]


@dataclass(frozen=True)
class Augment:
    """Random augmentation of a float batch [B, C, H, W] with values in [0, 1]."""

    rotate: float = 0.0  # max degrees, angle ~ U(-rotate, rotate) per sample
    translate: float = 0.0  # max fraction of width/height, shift ~ U(-t, t) per sample and axis
    scale: tuple[float, float] = (1.0, 1.0)  # zoom factor ~ U(lo, hi) per sample
    crop_padding: int = 0  # random crop: pad by p with zeros, take a random HxW window per sample
    hflip: bool = False  # flip horizontally with p=0.5 per sample
    brightness: float = 0.0  # multiply by U(1-b, 1+b) per sample
    contrast: float = 0.0  # (x - per-image mean) * U(1-c, 1+c) + mean per sample

    def __post_init__(self) -> None:
        problems = []
        # `not (lo <= v <= hi)` also rejects NaN, which plain `v < lo` comparisons would let through.
        if not _is_real(self.rotate) or not 0 <= self.rotate <= 180:
            problems.append(f"rotate must be a number of degrees in [0, 180], got {self.rotate!r}")
        if not _is_real(self.translate) or not 0 <= self.translate <= 1:
            problems.append(f"translate must be a fraction of the image size in [0, 1], got {self.translate!r}")
        try:
            lo, hi = self.scale
        except (TypeError, ValueError):
            problems.append(f"scale must be a pair (low, high), got {self.scale!r}")
        else:
            if not (_is_real(lo) and _is_real(hi) and 0 < lo <= hi and math.isfinite(hi)):
                problems.append(f"scale must be (low, high) with 0 < low <= high, got {self.scale!r}")
            else:
                # A list would make the frozen dataclass unhashable; store the canonical tuple.
                object.__setattr__(self, "scale", (float(lo), float(hi)))
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            problems.append(f"crop_padding must be a whole number of pixels >= 0, got {self.crop_padding!r}")
        if not isinstance(self.hflip, bool):
            problems.append(f"hflip must be true or false, got {self.hflip!r}")
        # Above 1 the multiplier range U(1-b, 1+b) would include negative factors.
        if not _is_real(self.brightness) or not 0 <= self.brightness <= 1:
            problems.append(f"brightness must be in [0, 1], got {self.brightness!r}")
        if not _is_real(self.contrast) or not 0 <= self.contrast <= 1:
            problems.append(f"contrast must be in [0, 1], got {self.contrast!r}")
        if problems:
            raise ValueError("invalid augmentation: " + "; ".join(problems))

    @property
    def geometric(self) -> bool:
        """Whether the affine step (rotate/translate/scale) does anything."""
        return self.rotate > 0 or self.translate > 0 or self.scale != (1.0, 1.0)

    @property
    def enabled(self) -> bool:
        return self.geometric or self.crop_padding > 0 or self.hflip or self.brightness > 0 or self.contrast > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x  # the loader relies on this costing nothing
        return self.apply(x, self.sample(x.shape[0], x.device))

    def sample(self, batch: int, device: torch.device | str = "cpu") -> AugmentParams:
        """Draw the parameters of every enabled operation for ``batch`` samples (global RNG on ``device``)."""

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.rand(batch, *shape, device=device) * (hi - lo) + lo

        p = self.crop_padding
        return AugmentParams(
            angle=uniform(-self.rotate, self.rotate) if self.rotate > 0 else None,
            shift=uniform(-self.translate, self.translate, 2) if self.translate > 0 else None,
            zoom=uniform(*self.scale) if self.scale != (1.0, 1.0) else None,
            crop=torch.randint(0, 2 * p + 1, (batch, 2), device=device) if p > 0 else None,
            flip=torch.rand(batch, device=device) < 0.5 if self.hflip else None,
            brightness=uniform(1 - self.brightness, 1 + self.brightness) if self.brightness > 0 else None,
            contrast=uniform(1 - self.contrast, 1 + self.contrast) if self.contrast > 0 else None,
        )

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply drawn parameters to ``x`` [B, C, H, W]; same shape, dtype and device back."""
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"augmentation needs a float batch [B, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if params.angle is not None or params.shift is not None or params.zoom is not None:
            x = _affine(x, params.angle, params.shift, params.zoom)
        if params.crop is not None:
            x = _crop(x, params.crop, self.crop_padding)
        if params.flip is not None:
            x = torch.where(params.flip.view(-1, 1, 1, 1), x.flip(-1), x)
        photometric = False
        if params.brightness is not None:
            x = x * params.brightness.to(x.dtype).view(-1, 1, 1, 1)
            photometric = True
        if params.contrast is not None:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * params.contrast.to(x.dtype).view(-1, 1, 1, 1) + mean
            photometric = True
        # Geometric steps only take convex combinations of pixels and zeros: they stay in [0, 1].
        return x.clamp_(0.0, 1.0) if photometric else x


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _affine(
    x: torch.Tensor, angle: torch.Tensor | None, shift: torch.Tensor | None, zoom: torch.Tensor | None
) -> torch.Tensor:
    """Rotate about the image centre, zoom, then shift: one matrix per sample, one grid_sample per batch."""
    b, _, h, w = x.shape
    # The matrix is built in float32 (half-precision trig would blur exact shifts); the grid is
    # then sampled in x's dtype where grid_sample supports it.
    f32 = dict(device=x.device, dtype=torch.float32)
    a = torch.deg2rad(angle.float()) if angle is not None else torch.zeros(b, **f32)
    s = zoom.float() if zoom is not None else torch.ones(b, **f32)
    # affine_grid maps output to input coordinates, so theta is the inverse of the forward map
    # p_out = s * R(a) p_in + t. Coordinates are normalized to [-1, 1] per axis, so for H != W
    # the rotation is conjugated with diag(W, H) to stay a rotation in pixels, not a shear.
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # The inverse rotation in pixel space (y points down): positive a turns the content counter-clockwise,
    # as torchvision's rotate() does.
    theta = torch.empty(b, 2, 3, **f32)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    if shift is not None:
        t = 2.0 * shift.float()  # the full width/height spans 2 normalized units
        theta[:, :, 2] = -(theta[:, :, :2] @ t.unsqueeze(-1)).squeeze(-1)
    else:
        theta[:, :, 2] = 0.0
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    xs = x if _grid_sample_supports(x) else x.float()
    out = F.grid_sample(xs, grid.to(xs.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype)


def _grid_sample_supports(x: torch.Tensor) -> bool:
    # CPU grid_sample has no half/bfloat16 kernels; CUDA has them.
    return x.dtype in (torch.float32, torch.float64) or x.device.type == "cuda"


def _crop(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad by ``pad`` zeros and take the HxW window at ``offsets`` (top, left) of each sample, in one gather."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # [B, H]
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # [B, W]
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[bi, ci, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
