"""Latent codes: the "data" of a direction method."""
from __future__ import annotations

import torch

from datamodules.streams import SeededStreamDataModule


class LatentDataModule(SeededStreamDataModule):
    """Batches ``{"latent": N x d (N x L x d in W+), "seed": int}`` of latents from the
    generator's own prior, and ``"y"`` (class indices) for a conditional generator.

    The generator is handed over by train.py (``generator=``): its ``sample(n, generator=rng)``
    defines the distribution (Gaussian z, mapped w, truncation), so the stream needs no copy of it.
    """

    def __init__(self, batch_size: int = 64, seed: int = 0, val_batches: int = 8,
                 generator=None) -> None:
        super().__init__(batch_size, seed, val_batches)
        self.generator = generator

    def make_batch(self, n: int, rng: torch.Generator) -> dict:
        if self.generator is None:
            raise RuntimeError("LatentDataModule needs the generator: pass generator=...")
        latent, y = self.generator.draw(n, generator=rng)
        return {"latent": latent.cpu()} if y is None else {"latent": latent.cpu(), "y": y.cpu()}
