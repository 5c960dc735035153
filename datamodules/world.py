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

from common.errors import UserError
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
# Keeps square roots differentiable at 0 (inverse rendering); 1e-5 px of distance at most.
_EPS = 1e-12


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
            raise UserError(f"world resolution must be at least 8 pixels, got {self.resolution}")

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Factors drawn uniformly: shape from {0, 1, 2}, the rest from [0, 1)."""
        factors = torch.rand(n, self.num_factors, generator=generator)
        factors[:, 0] = torch.randint(len(SHAPES), (n,), generator=generator).float()
        return factors

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        """Images ``N x 3 x H x W`` in [-1, 1] for factors ``N x 6`` (see the module docstring)."""
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise UserError(f"factors must be N x {self.num_factors} ({', '.join(FACTORS)}), "
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
            torch.sqrt(pu**2 + pv**2 + _EPS) - r,
            torch.where((shape == 0)[:, None, None],
                        _box_sdf(pu, pv, r * _SQUARE_HALF_SIDE),
                        _triangle_sdf(pu, pv, r * _TRIANGLE_CIRCUMRADIUS)),
        )
        pixel = 2.0 / res
        return (0.5 - dist / pixel).clamp(0.0, 1.0)

    def fit_factors(self, images: torch.Tensor, steps: int = 60, lr: float = 0.03,
                    rotations: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse rendering: the factors whose render best matches each image, and its error.

        For every shape kind and ``rotations`` starting angles, the continuous factors start
        from the image's own statistics (centroid, area, mean colour) and are refined by Adam
        on the mean L1 error through this (differentiable) renderer; the best candidate wins.
        Returns ``(factors N x 6, error N)`` with the error in [-1, 1] units: near 0 for real
        renders, so a generator's samples that "look like the world" score near 0 too.
        """
        n, res = images.shape[0], self.resolution
        images = images.detach().float()
        with torch.no_grad():
            value = (images * 0.5 + 0.5).clamp(0, 1)
            fg = value.max(dim=1).values  # coverage: the world's colours have full value
            area = fg.sum((1, 2)).clamp_min(1.0)
            coords = (torch.arange(res, dtype=torch.float32, device=images.device) + 0.5) / res
            x = (fg.sum(1) * coords).sum(1) / area
            y = (fg.sum(2) * coords).sum(1) / area
            radius = torch.sqrt(area / math.pi) / (res / 2)
            scale = (radius - _MIN_RADIUS) / (_MAX_RADIUS - _MIN_RADIUS)
            mean_rgb = (value * fg[:, None]).sum((2, 3)) / area[:, None]
            hue = rgb_to_hue(mean_rgb)
        candidates = len(SHAPES) * rotations
        shape = torch.arange(len(SHAPES), device=images.device).repeat_interleave(rotations)
        rotation = (torch.arange(rotations, device=images.device) / rotations).repeat(len(SHAPES))
        start = torch.stack([scale.clamp(0, 1), x, y, hue], 1)  # N x 4
        params = start[:, None].expand(n, candidates, 4).clone()
        params = torch.cat([params[..., :1], rotation[None, :, None].expand(n, -1, 1),
                            params[..., 1:]], dim=2).reshape(n * candidates, 5)
        params.requires_grad_(True)
        kinds = shape[None].expand(n, -1).reshape(-1, 1).float()
        target = images.repeat_interleave(candidates, dim=0)
        optimizer = torch.optim.Adam([params], lr=lr)
        for _ in range(steps):
            error = (self.render(torch.cat([kinds, params], 1)) - target).abs().mean((1, 2, 3))
            optimizer.zero_grad()
            error.sum().backward()
            optimizer.step()
            with torch.no_grad():
                params[:, 0].clamp_(-0.2, 1.2)
                params[:, 2:4].clamp_(-0.2, 1.2)
        with torch.no_grad():
            fitted = torch.cat([kinds, params], 1)
            error = (self.render(fitted) - target).abs().mean((1, 2, 3)).view(n, candidates)
            best = error.argmin(1)
            fitted = fitted.view(n, candidates, -1)[torch.arange(n), best]
            fitted[:, 2] = fitted[:, 2] % 1.0
            fitted[:, 5] = fitted[:, 5] % 1.0
        return fitted, error[torch.arange(n), best]


def _box_sdf(pu: torch.Tensor, pv: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    qu, qv = pu.abs() - half, pv.abs() - half
    outside = torch.sqrt(qu.clamp(min=0) ** 2 + qv.clamp(min=0) ** 2 + _EPS)
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
    return -torch.sqrt(x**2 + y**2 + _EPS) * torch.sign(y)


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


def rgb_to_hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1) of RGB colours ``N x 3`` in [0, 1] (grey gets hue 0)."""
    r, g, b = rgb.unbind(1)
    high, low = rgb.max(1).values, rgb.min(1).values
    delta = (high - low).clamp_min(1e-8)
    hue = torch.where(high == r, ((g - b) / delta) % 6,
                      torch.where(high == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return (hue / 6.0) % 1.0
