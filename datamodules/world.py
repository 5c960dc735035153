"""The built-in procedural world: coloured shapes with known ground-truth factors.

A dSprites-like world in colour. Every image is rendered from a factor vector by vectorised
torch code (signed distance functions with a one-pixel anti-aliased edge), so the world gives
unlimited labelled data and the ground truth that the metrics need, and rendering is never the
bottleneck of a training step (about a millisecond for 64 images of 32 x 32 on one core).

Factors, each stored as a float in one row of an ``N x 6`` tensor (the order of ``FACTORS``):

========  ===========  ======================================================================
name      kind         meaning
========  ===========  ======================================================================
shape     categorical  0 square, 1 circle, 2 equilateral triangle
scale     continuous   [0, 1] -> circle radius 0.30-0.55 of the half-canvas (10-18 px across
                       at 32 px); the square and triangle are scaled to a similar area
rotation  circular     [0, 1) fraction of the shape's symmetry period (90, 360, 120 degrees):
                       0 and 1 are the same picture; a circle does not change with it
x         continuous   [0, 1] -> centre from left (0) to right (1), within +-0.4 half-canvas
y         continuous   [0, 1] -> centre from top (0) to bottom (1), within +-0.4 half-canvas
hue       circular     [0, 1) HSV hue at full saturation and value, on a black background
========  ===========  ======================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass


import torch

from datamodules.streams import SeededStreamDataModule

FACTORS: tuple[str, ...] = ("shape", "scale", "rotation", "x", "y", "hue")
FACTOR_KINDS: dict[str, str] = {
    "shape": "categorical",
    "scale": "continuous",
    "rotation": "circular",
    "x": "continuous",
    "y": "continuous",
    "hue": "circular",
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
# Rotational symmetry order of each shape: a rotation of 360/order degrees maps it onto itself.
_SYMMETRY = torch.tensor([4.0, 1.0, 3.0])

_MIN_RADIUS, _MAX_RADIUS = 0.30, 0.55  # circle radius, in half-canvas units
_POSITION_RANGE = 0.4  # the centre stays within +-0.4 of the half-canvas
# Size of the square (half side) and triangle (circumradius) relative to the circle's radius:
# close to equal areas, so that scale means the same amount of colour for every shape.
_SQUARE_HALF_SIDE = 0.89
_TRIANGLE_CIRCUMRADIUS = 1.25


@dataclass(frozen=True)
class ShapesWorld:
    """Renders images of coloured shapes from factor vectors.

    Args:
        resolution: side of the square image in pixels (32 by default; 64 works too).
    """

    resolution: int = 32

    num_factors: int = len(FACTORS)
    factor_names: tuple[str, ...] = FACTORS

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"world resolution must be at least 8 pixels, got {self.resolution}")

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Factors drawn uniformly: shape from {0, 1, 2}, the rest from [0, 1)."""
        factors = torch.rand(n, self.num_factors, generator=generator)
        factors[:, 0] = torch.randint(len(SHAPES), (n,), generator=generator).float()
        return factors

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        """Images ``N x 3 x H x W`` in [-1, 1] for factors ``N x 6`` (see the module docstring)."""
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"factors must be N x {self.num_factors} ({', '.join(FACTORS)}), "
                             f"got shape {tuple(factors.shape)}")
        coverage = self.mask(factors)
        rgb = hue_to_rgb(factors[:, 5])
        return (coverage[:, None] * rgb[:, :, None, None]) * 2.0 - 1.0

    def mask(self, factors: torch.Tensor) -> torch.Tensor:
        """Anti-aliased coverage ``N x H x W`` in [0, 1] of the shape in each image."""
        factors = factors.float()
        device = factors.device
        res = self.resolution
        shape = factors[:, 0].round().long().clamp(0, len(SHAPES) - 1)
        radius = _MIN_RADIUS + (_MAX_RADIUS - _MIN_RADIUS) * factors[:, 1]
        angle = factors[:, 2] * (2 * math.pi) / _SYMMETRY.to(device)[shape]
        cx = (factors[:, 3] * 2 - 1) * _POSITION_RANGE
        cy = (factors[:, 4] * 2 - 1) * _POSITION_RANGE

        # Pixel centres in [-1, 1]; v grows downwards like image rows.
        coords = (torch.arange(res, device=device, dtype=torch.float32) + 0.5) / res * 2 - 1
        u = coords[None, None, :] - cx[:, None, None]
        v = coords[None, :, None] - cy[:, None, None]
        # Rotate the sample points by -angle, which rotates the shape by +angle.
        cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
        pu, pv = cos * u + sin * v, -sin * u + cos * v
        r = radius[:, None, None]

        dist = torch.where(
            (shape == 1)[:, None, None],
            torch.sqrt(pu**2 + pv**2) - r,
            torch.where((shape == 0)[:, None, None],
                        _box_sdf(pu, pv, r * _SQUARE_HALF_SIDE),
                        _triangle_sdf(pu, pv, r * _TRIANGLE_CIRCUMRADIUS)),
        )
        pixel = 2.0 / res
        return (0.5 - dist / pixel).clamp(0.0, 1.0)


def _box_sdf(pu: torch.Tensor, pv: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    qu, qv = pu.abs() - half, pv.abs() - half
    outside = torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2)
    return outside + torch.maximum(qu, qv).clamp(max=0)


def _triangle_sdf(pu: torch.Tensor, pv: torch.Tensor, circumradius: torch.Tensor) -> torch.Tensor:
    """Exact signed distance to an equilateral triangle pointing up (apex at -v)."""
    k = math.sqrt(3.0)
    half_side = circumradius * k / 2
    # Flip so that the apex points to -v (up on the image), and centre on the centroid.
    x = pu.abs() - half_side
    y = -pv + half_side / k
    fold = (x + k * y) > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - torch.minimum(torch.maximum(x, -2 * half_side), torch.zeros_like(x))
    return -torch.sqrt(x**2 + y**2) * torch.sign(y)


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (``N x 3``) of HSV colours with the given hue and full saturation and value."""
    offsets = torch.tensor([5.0, 3.0, 1.0], device=hue.device)
    k = (offsets[None, :] + hue[:, None] * 6.0) % 6.0
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


class WorldDataModule(SeededStreamDataModule):
    """Endless batches ``{"images", "factors", "seed"}`` rendered from uniform factors.

    Args:
        batch_size: images per batch on each process.
        seed: the stream's seed.
        resolution: image side in pixels.
    """

    def __init__(self, batch_size: int = 64, seed: int = 0, val_batches: int = 8,
                 resolution: int = 32) -> None:
        super().__init__(batch_size, seed, val_batches)
        self.world = ShapesWorld(resolution)

    def make_batch(self, n: int, rng: torch.Generator) -> dict:
        factors = self.world.sample_factors(n, generator=rng)
        return {"images": self.world.render(factors), "factors": factors}
