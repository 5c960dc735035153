"""Known image edits of GAN Steerability, with the mask of the pixels each edit keeps.

Jahanian, Chai, Isola, "On the "steerability" of generative adversarial networks", ICLR 2020,
learn a latent walk ``z + alpha w`` whose generated image matches ``edit(G(z), alpha)`` for a
known image edit: zoom, shifts, rotation (geometric) and colour, brightness (photometric).
Plumerault et al. (2020) learn from the same kind of edits, so they live here, shared.

An edit is a function ``apply(images, alpha) -> (edited, mask)``:

- ``images``: float ``N x 3 x H x W`` in [-1, 1] (the world's black background is -1);
- ``alpha``: the edit's parameter per sample, ``N`` (``N x 3`` for ``color``); a Python number
  or a 0-d tensor is taken for every sample;
- ``edited``: the edited images, in [-1, 1];
- ``mask``: float ``N x 1 x H x W``, 1 where the edited pixel comes from inside the original
  image and 0 where the edit had to invent it (the columns uncovered by a shift, the border of
  a zoom-out, the corners of a rotation). A loss multiplied by the mask ignores what the edit
  made up, so the walk is not pushed to paint an arbitrary fill: the paper's masked L2.

Geometric edits resample with ``affine_grid`` + bilinear ``grid_sample`` (``align_corners=False``,
so a shift by whole pixels moves pixels exactly). Their invalid pixels are filled with -1,
black, the background of the built-in world, a neutral guess that the mask tells a loss to
ignore anyway. A pixel whose bilinear footprint is only partly inside the original counts as
invalid (the mask of a warped tensor of ones is thresholded at 0.999).

``EDITS`` describes each edit for a learning method (``Edit``: how to draw training
parameters, how a parameter maps to a step of the walk); ``get_edit(name)`` looks one up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from common.errors import UserError

# A warped tensor of ones reads slightly below 1 from rounding even where it is fully inside,
# and clearly below 1 where part of the bilinear footprint falls outside the image.
_VALID_THRESHOLD = 0.999
_BACKGROUND = -1.0


def _per_sample(alpha: torch.Tensor | float, images: torch.Tensor, dims: int,
                name: str) -> torch.Tensor:
    """``alpha`` as ``N`` (dims 1) or ``N x dims`` values on the images' device and dtype."""
    n = images.shape[0]
    alpha = torch.as_tensor(alpha, device=images.device, dtype=images.dtype)
    expected = (n,) if dims == 1 else (n, dims)
    if alpha.ndim == 0:
        alpha = alpha.expand(expected)
    elif dims > 1 and alpha.shape == (dims,):
        alpha = alpha.expand(expected)
    if tuple(alpha.shape) != expected:
        raise UserError(f"edit {name!r} takes alpha of shape {expected} for {n} images, "
                         f"got {tuple(alpha.shape)}")
    return alpha


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"edit {name!r} takes images N x 3 x H x W, got {tuple(images.shape)}")


def _warp(images: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resamples with ``theta`` (N x 2 x 3, output -> input in normalised coordinates)."""
    n, _, h, w = images.shape
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    ones = torch.ones(n, 1, h, w, device=images.device, dtype=images.dtype)
    coverage = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)
    mask = (coverage > _VALID_THRESHOLD).to(images.dtype)
    # Zero padding would blend grey (0) into the pixels near the edge; they are invalid and
    # filled with the background colour instead.
    edited = torch.where(mask.bool(), warped, torch.full_like(warped, _BACKGROUND))
    return edited, mask


def _theta(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
           tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """N x 2 x 3 affine matrices ``[[a, b, tx], [c, d, ty]]`` from per-sample entries."""
    return torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)


def zoom(images: torch.Tensor, alpha: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales the content by ``alpha`` (> 0) about the image centre: 2 doubles it, 0.5 halves it."""
    _check_images(images, "zoom")
    alpha = _per_sample(alpha, images, 1, "zoom")
    if bool((alpha <= 0).any()):
        raise UserError(f"zoom factors must be positive, got min {alpha.min().item():g}")
    inv = 1.0 / alpha
    zero = torch.zeros_like(alpha)
    # Output pixel p shows the input at p / alpha.
    return _warp(images, _theta(inv, zero, zero, inv, zero, zero))


def content_centre(images: torch.Tensor) -> torch.Tensor:
    """The centre of what is drawn on the black background: N x 2 (x, y), normalised units.

    The mean position of the pixels, weighted by how far their brightest channel rises above
    the background (a margin of 0.1 ignores a generator's faint background noise); the image
    centre (0, 0) where nothing is drawn.
    """
    n, _, h, w = images.shape
    weight = (images.amax(1) - _BACKGROUND - 0.1).clamp(min=0)            # N x H x W
    ys = (torch.arange(h, device=images.device, dtype=images.dtype) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=images.device, dtype=images.dtype) + 0.5) * (2.0 / w) - 1.0
    total = weight.sum((1, 2)).clamp(min=1e-6)
    cx = (weight * xs[None, None, :]).sum((1, 2)) / total
    cy = (weight * ys[None, :, None]).sum((1, 2)) / total
    return torch.stack([cx, cy], 1)


def scale(images: torch.Tensor, alpha: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales the content by ``alpha`` (> 0) about its own centre (``content_centre``), so that
    an object off the image centre grows or shrinks in place: zoom's change of size without
    zoom's move away from (or toward) the centre. For the centred objects of photographs the
    two are one edit; in the shapes world, where objects sit anywhere, only this one moves the
    size alone."""
    _check_images(images, "scale")
    alpha = _per_sample(alpha, images, 1, "scale")
    if bool((alpha <= 0).any()):
        raise UserError(f"scale factors must be positive, got min {alpha.min().item():g}")
    inv = 1.0 / alpha
    centre = content_centre(images)
    zero = torch.zeros_like(alpha)
    # Output pixel p shows the input at c + (p - c) / alpha.
    shift = centre * (1.0 - inv)[:, None]
    return _warp(images, _theta(inv, zero, zero, inv, shift[:, 0], shift[:, 1]))


def _shift(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = images.shape[2:]
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    # Output pixel p shows the input at p - shift; one pixel is 2 / size in normalised units.
    return _warp(images, _theta(one, zero, zero, one, -2.0 * dx / w, -2.0 * dy / h))


def shift_x(images: torch.Tensor, alpha: torch.Tensor | float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves the content ``alpha`` pixels to the right (left where negative)."""
    _check_images(images, "shift_x")
    alpha = _per_sample(alpha, images, 1, "shift_x")
    return _shift(images, alpha, torch.zeros_like(alpha))


def shift_y(images: torch.Tensor, alpha: torch.Tensor | float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves the content ``alpha`` pixels down (up where negative)."""
    _check_images(images, "shift_y")
    alpha = _per_sample(alpha, images, 1, "shift_y")
    return _shift(images, torch.zeros_like(alpha), alpha)


def rotate(images: torch.Tensor, alpha: torch.Tensor | float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates the content ``alpha`` degrees counter-clockwise as seen on screen, about the centre."""
    _check_images(images, "rotate")
    alpha = _per_sample(alpha, images, 1, "rotate")
    h, w = images.shape[2:]
    rad = alpha * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(alpha)
    # With y pointing down, a counter-clockwise turn on screen maps (x, y) to
    # (x cos + y sin, -x sin + y cos); output p shows the input at the inverse turn of p,
    # (x cos - y sin, x sin + y cos). The h / w factors make the turn a true rotation in
    # pixels when the image is not square (normalised units stretch x and y differently).
    return _warp(images, _theta(cos, -sin * (h / w), sin * (w / h), cos, zero, zero))


def color(images: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adds ``alpha`` (N x 3, in [0, 1] image units) to R, G, B, clamped; nothing is invented."""
    _check_images(images, "color")
    alpha = _per_sample(alpha, images, 3, "color")
    edited = (images + 2.0 * alpha[:, :, None, None]).clamp(-1.0, 1.0)
    return edited, torch.ones_like(images[:, :1])


def brightness(images: torch.Tensor, alpha: torch.Tensor | float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adds ``alpha`` (N, in [0, 1] image units) to every channel, clamped; nothing is invented."""
    _check_images(images, "brightness")
    alpha = _per_sample(alpha, images, 1, "brightness")
    edited = (images + 2.0 * alpha[:, None, None, None]).clamp(-1.0, 1.0)
    return edited, torch.ones_like(images[:, :1])


def _uniform(n: int, rng: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=rng, device=rng.device)


def _sample_zoom(n: int, rng: torch.Generator, resolution: int) -> torch.Tensor:
    # As many zoom-outs as zoom-ins, shuffled so that neither owns a fixed half of the batch.
    half = n // 2
    alpha = torch.cat([_uniform(half, rng, 0.25, 1.0), _uniform(n - half, rng, 1.0, 4.0)])
    return alpha[torch.randperm(n, generator=rng, device=rng.device)]


def _sample_shift(n: int, rng: torch.Generator, resolution: int) -> torch.Tensor:
    return _uniform(n, rng, -resolution / 4, resolution / 4)


def _sample_rotate(n: int, rng: torch.Generator, resolution: int) -> torch.Tensor:
    return _uniform(n, rng, -45.0, 45.0)


def _sample_color(n: int, rng: torch.Generator, resolution: int) -> torch.Tensor:
    return _uniform(n, rng, -0.5, 0.5, 3)


def _sample_brightness(n: int, rng: torch.Generator, resolution: int) -> torch.Tensor:
    return _uniform(n, rng, -0.5, 0.5)


def _walk_zoom(alpha: torch.Tensor, resolution: int) -> torch.Tensor:
    # Zoom is multiplicative: zoom 2 and zoom 0.5 are one step forward and one back.
    return torch.log2(alpha)[:, None]


def _walk_shift(alpha: torch.Tensor, resolution: int) -> torch.Tensor:
    # The sampled range +-resolution/4 becomes steps in [-1, 1] at every resolution.
    return (alpha / (resolution / 4))[:, None]


def _walk_rotate(alpha: torch.Tensor, resolution: int) -> torch.Tensor:
    return (alpha / 45.0)[:, None]


def _walk_color(alpha: torch.Tensor, resolution: int) -> torch.Tensor:
    return alpha


def _walk_brightness(alpha: torch.Tensor, resolution: int) -> torch.Tensor:
    return alpha[:, None]


# The inverses: the edit parameters that a walk step (N x dims) stands for.
def _unwalk_zoom(step: torch.Tensor, resolution: int) -> torch.Tensor:
    return torch.exp2(step[:, 0])


def _unwalk_shift(step: torch.Tensor, resolution: int) -> torch.Tensor:
    return step[:, 0] * (resolution / 4)


def _unwalk_rotate(step: torch.Tensor, resolution: int) -> torch.Tensor:
    return step[:, 0] * 45.0


def _unwalk_color(step: torch.Tensor, resolution: int) -> torch.Tensor:
    return step


def _unwalk_brightness(step: torch.Tensor, resolution: int) -> torch.Tensor:
    return step[:, 0]


@dataclass(frozen=True)
class Edit:
    """One known edit, as a learning method needs it.

    Attributes:
        name: the registry key.
        apply: ``apply(images, alpha) -> (edited, mask)`` (see the module docstring).
        dims: the size of one sample's parameter: 1, or 3 for ``color``.
        sample: ``sample(n, rng, resolution) -> alpha``, the training parameters of the paper:
            ``N`` values (``N x 3`` for colour) drawn with the generator ``rng``.
        to_walk: ``to_walk(alpha, resolution) -> N x dims``, the step of the latent walk that
            should produce the edit ``alpha`` (0 for the identity; the sampled range maps to
            about [-1, 1]).
        identity: the parameter value that leaves an image unchanged (for every component).
        from_walk: ``from_walk(step, resolution) -> alpha``, the inverse of ``to_walk``.
        walk_range: the largest |step| of the sampled range (2 for zoom: 1/4 to 4 in log2).
    """

    name: str
    apply: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    dims: int
    sample: Callable[[int, torch.Generator, int], torch.Tensor]
    to_walk: Callable[[torch.Tensor, int], torch.Tensor]
    identity: float
    from_walk: Callable[[torch.Tensor, int], torch.Tensor]
    walk_range: float

    def identity_alpha(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The parameters ``N`` (``N x dims`` when dims > 1) that leave ``n`` images unchanged."""
        shape = (n,) if self.dims == 1 else (n, self.dims)
        return torch.full(shape, self.identity, device=device)


EDITS: dict[str, Edit] = {
    edit.name: edit
    for edit in (
        Edit("zoom", zoom, 1, _sample_zoom, _walk_zoom, 1.0, _unwalk_zoom, 2.0),
        Edit("scale", scale, 1, _sample_zoom, _walk_zoom, 1.0, _unwalk_zoom, 2.0),
        Edit("shift_x", shift_x, 1, _sample_shift, _walk_shift, 0.0, _unwalk_shift, 1.0),
        Edit("shift_y", shift_y, 1, _sample_shift, _walk_shift, 0.0, _unwalk_shift, 1.0),
        Edit("rotate", rotate, 1, _sample_rotate, _walk_rotate, 0.0, _unwalk_rotate, 1.0),
        Edit("color", color, 3, _sample_color, _walk_color, 0.0, _unwalk_color, 0.5),
        Edit("brightness", brightness, 1, _sample_brightness, _walk_brightness, 0.0,
             _unwalk_brightness, 0.5),
    )
}


# The shapes world's factor each edit moves (what a regressor measures along an edit's path).
EDIT_FACTORS = {"shift_x": "x", "shift_y": "y", "zoom": "scale", "scale": "scale"}


def get_edit(name: str) -> Edit:
    """The registered edit called ``name``; a ValueError lists the known ones otherwise."""
    try:
        return EDITS[name]
    except KeyError:
        raise UserError(f"unknown edit {name!r}; known edits: {', '.join(EDITS)}") from None
