"""The Generator interface every method talks to (see the architecture section of README.md).

A generator is a frozen ``nn.Module``: eval mode, no gradient on its own parameters. A method
only ever sees ``latent_dim``, ``resolution``, ``space``, ``num_layers``, ``sample`` and
``forward``, plus the optional hooks below, so a new generator is one adapter file and one config.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Generator(nn.Module):
    """Base class of frozen generators.

    Attributes:
        name: a short identifier recorded in checkpoints and directions files.
        latent_dim: size of one latent code in the editing space.
        resolution: side of the square output images in pixels.
        space: the editing space, ``"z"`` (the input noise) or ``"w"`` (an intermediate space).
        num_layers: number of per-layer codes (> 1 when per-layer W+ edits are possible).
        num_classes: number of classes of a conditional generator, else ``None``.
        sha256: hash of the weights file the generator was loaded from (``None`` if built random).
    """

    name: str = "generator"
    latent_dim: int
    resolution: int
    space: str = "z"
    num_layers: int = 1
    num_classes: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.sha256: str | None = None
        self.discriminator: nn.Module | None = None

    # ---- the interface -------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents ``n x latent_dim`` in the editing space, on the generator's device."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z.to(self.device)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Images ``N x 3 x H x W`` in [-1, 1] for latents ``N x d`` (or ``N x L x d``)."""
        raise NotImplementedError

    def projection_weight(self, layers: Any = None) -> torch.Tensor:
        """The weight that first reads the latent (SeFa); optional."""
        raise NotImplementedError(f"{type(self).__name__} does not expose a projection weight")

    def features(self, latent: torch.Tensor, layer: int | str) -> torch.Tensor:
        """Activations of an intermediate layer (GANSpace); optional."""
        raise NotImplementedError(f"{type(self).__name__} does not expose intermediate features")

    # ---- frozen-ness ---------------------------------------------------------------------
    def freeze(self) -> "Generator":
        """Eval mode and no gradients on the weights, for good (``train()`` keeps eval mode)."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)
        self._frozen = True
        return self

    def train(self, mode: bool = True) -> "Generator":
        # Lightning calls .train() on the whole LightningModule at the start of fit; a frozen
        # generator must stay in eval mode (batch-norm statistics, no dropout) regardless.
        return super().train(False if getattr(self, "_frozen", False) else mode)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def identity(self) -> dict[str, Any]:
        """What a checkpoint or directions file records instead of the generator's weights."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "latent_dim": self.latent_dim,
            "resolution": self.resolution,
            "space": self.space,
            "num_layers": self.num_layers,
        }


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
