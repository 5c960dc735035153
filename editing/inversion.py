"""Inversion: the latent of a frozen generator whose image matches a given one.

    latent* = argmin_latent  d(G(latent), target)        (d: an ImageDistance, L2 + Lap1 by default)

optimised with Adam in the generator's editing space (Z, W or W+, whatever ``generator.space``
is: W+ has the most freedom and reconstructs best, Z the least), from several starts at once
(the space's mean and random draws), the best start kept per image. Optionally inside a norm
ball (a Z latent far outside the prior's shell draws images the generator never learned), on a
masked region and from given starting latents (warm starts: Plumerault's trajectories).

The library function of real-image editing (``edit.py image=...``) and of the continuous
factors of variation method; it is not a Lightning module (it trains nothing that is kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from common.errors import UserError
from generators.base import Generator
from metrics.distances import ImageDistance, psnr


@dataclass
class Inversion:
    """What ``invert`` found, per image: the latents (``N x latent_shape``), their images,
    the final distance, the PSNR of the reconstruction (dB) and the start that won."""

    latents: torch.Tensor
    images: torch.Tensor
    distance: torch.Tensor
    psnr: torch.Tensor
    start: torch.Tensor

    def summary(self) -> dict[str, float]:
        return {"distance": float(self.distance.mean()), "psnr": float(self.psnr.mean()),
                "psnr_min": float(self.psnr.min()), "images": int(self.psnr.numel())}


def norm_ball(radius: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A projection onto ``||latent|| <= radius`` (per code: per layer in W+)."""
    if radius <= 0:
        raise UserError(f"the norm ball's radius must be positive, got {radius}")

    def project(latent: torch.Tensor) -> torch.Tensor:
        norm = latent.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return latent * (radius / norm).clamp(max=1.0)
    return project


@torch.no_grad()
def mean_latent(generator: Generator, samples: int = 512, seed: int = 0) -> torch.Tensor:
    """The mean of the generator's latents in its editing space (``latent_shape``): zero in Z,
    about w_avg in W; the first start of an inversion."""
    return generator.sample(samples, generator=torch.Generator().manual_seed(seed)).mean(0)


def check_images(generator: Generator, images: torch.Tensor, what: str = "images") -> None:
    expected = (3, generator.resolution, generator.resolution)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise UserError(f"{what}: expected N x 3 x {generator.resolution} x "
                         f"{generator.resolution} images for generator {generator.name!r}, got "
                         f"{tuple(images.shape)}")


def invert(generator: Generator, targets: torch.Tensor, *, distance: ImageDistance | None = None,
           steps: int = 300, lr: float = 0.05, starts: int = 4, init: torch.Tensor | None = None,
           y: torch.Tensor | None = None, mask: torch.Tensor | None = None,
           project: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
           batch_size: int = 64, progress: bool = True) -> Inversion:
    """Invert ``targets`` (``N x 3 x H x W`` in [-1, 1]) into ``generator``'s editing space.

    Args:
        distance: the objective (default: L2 + Lap1, no weights needed).
        steps, lr: Adam's steps and learning rate.
        starts: starting points per image: ``init`` (or the space's mean) and ``starts - 1``
            random draws from the generator's prior (seeded by ``seed``); the best is kept.
        init: starting latents ``N x latent_shape`` (warm starts).
        y: class indices of a conditional generator (kept fixed).
        mask: ``N x 1 x H x W`` (or ``N x 3 x H x W``) weights of the pixels that count.
        project: applied to the latents after every step (``norm_ball(r)``).
        batch_size: images optimised together (each with its starts).
        progress: a progress bar over the steps.
    """
    check_images(generator, targets, "targets")
    if steps < 1 or starts < 1 or lr <= 0:
        raise UserError(f"inversion needs steps >= 1, starts >= 1 and lr > 0; got steps={steps}, "
                         f"starts={starts}, lr={lr}")
    distance = distance if distance is not None else ImageDistance(l2=1.0, lap1=1.0)
    device = generator.device
    distance = distance.to(device)
    n, shape = targets.shape[0], tuple(generator.latent_shape)
    if init is not None and tuple(init.shape) != (n, *shape):
        raise UserError(f"init: expected {n} x {' x '.join(map(str, shape))} latents, got "
                         f"{tuple(init.shape)}")
    rng = torch.Generator().manual_seed(seed)
    first = init.to(device) if init is not None else mean_latent(generator).expand(n, *shape)
    candidates = [first] + [generator.sample(n, generator=rng, y=y) for _ in range(starts - 1)]
    outs = []
    bar = tqdm(total=steps * ((n + batch_size - 1) // batch_size), desc="inversion",
               disable=not progress, leave=False)
    for lo in range(0, n, batch_size):
        rows = slice(lo, min(n, lo + batch_size))
        outs.append(_invert_batch(generator, targets[rows].to(device),
                                  [c[rows] for c in candidates], distance, steps, lr,
                                  None if y is None else y[rows].to(device),
                                  None if mask is None else mask[rows].to(device), project, bar))
    bar.close()
    latents, images, dist, start = (torch.cat(parts) for parts in zip(*outs))
    return Inversion(latents, images, dist, psnr(images, targets.to(images)), start)


def _invert_batch(generator, targets, candidates, distance, steps, lr, y, mask, project, bar):
    """All starts of one batch of images optimised together (stacked start-major)."""
    s, n = len(candidates), targets.shape[0]
    latent = torch.cat(candidates).detach().clone().requires_grad_(True)
    def repeat(t):
        return None if t is None else t.repeat(s, *([1] * (t.ndim - 1)))

    targets_s, y_s, mask_s = repeat(targets), repeat(y), repeat(mask)
    optimizer = torch.optim.Adam([latent], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            # Each image's loss is its own: the sum gives every latent its own gradient.
            distance(generator(latent, y_s), targets_s, mask_s).sum().backward()
            optimizer.step()
            if project is not None:
                with torch.no_grad():
                    latent.copy_(project(latent))
            bar.update(1)
    with torch.no_grad():
        images = generator(latent, y_s)
        final = distance(images, targets_s, mask_s).view(s, n)
        best = final.argmin(0)
        pick = best * n + torch.arange(n, device=best.device)
        return latent.detach()[pick], images[pick], final.min(0).values, best
