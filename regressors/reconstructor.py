"""Reconstructors: from a pair of images (before, after a shift) predict which direction was
taken and by how much (Voynov & Babenko, ICML 2020; also used by WarpedGANSpace)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHIFT_WEIGHT = 0.25  # weight of the L1 term on eps in both papers


class Reconstructor(nn.Module):
    """Base: ``forward(x0, x1) -> (logits N x K, shift N)`` from a 6-channel stack."""

    def __init__(self, trunk: nn.Module, features: int, num_directions: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.direction_head = nn.Linear(features, num_directions)
        self.shift_head = nn.Linear(features, 1)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([x0, x1], dim=1))
        return self.direction_head(h), self.shift_head(h).squeeze(1)


class LeNetReconstructor(Reconstructor):
    """A small CNN for small images (the reference uses a LeNet for MNIST-scale models).

    Args:
        num_directions: K, the number of classes.
        resolution: input side in pixels.
        width: channels of the first convolution (doubled in the second).
        hidden: size of the fully connected layer.
    """

    def __init__(self, num_directions: int, resolution: int = 32, width: int = 16,
                 hidden: int = 256) -> None:
        trunk = nn.Sequential(
            nn.Conv2d(6, width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, hidden), nn.ReLU(inplace=True),
        )
        super().__init__(trunk, hidden, num_directions)


class TimmReconstructor(Reconstructor):
    """A timm backbone from scratch (``pretrained=False``: nothing is downloaded) with a
    6-channel input, for large images.

    Args:
        num_directions: K.
        backbone: a timm model name, e.g. ``resnet18``.
        resolution: unused (any input size works).
    """

    def __init__(self, num_directions: int, backbone: str = "resnet18",
                 resolution: int | None = None) -> None:
        # ``resolution`` is accepted for the common (num_directions, resolution) call; the
        # backbone's global pooling takes any size.
        import timm

        trunk = timm.create_model(backbone, pretrained=False, in_chans=6, num_classes=0)
        super().__init__(trunk, trunk.num_features, num_directions)


def build_reconstructor(num_directions: int, resolution: int, kind: str = "auto",
                        width: int = 16, hidden: int = 256) -> Reconstructor:
    """The reconstructor for K directions on images of ``resolution`` px. ``kind``:
    ``"lenet"``, ``"resnet18"`` (or any timm name), or ``"auto"`` (LeNet up to 64 px, ResNet-18
    above). ``width`` and ``hidden`` size the LeNet (a timm backbone has its own sizes)."""
    if kind == "auto":
        kind = "lenet" if resolution <= 64 else "resnet18"
    if kind == "lenet":
        return LeNetReconstructor(num_directions, resolution, width=width, hidden=hidden)
    return TimmReconstructor(num_directions, backbone=kind)


def sample_shifts(n: int, rng: torch.Generator, shift_scale: float, min_shift: float) -> torch.Tensor:
    """eps ~ shift_scale * U(-1, 1) with |eps| < min_shift pushed out to +-min_shift."""
    eps = shift_scale * (2 * torch.rand(n, generator=rng) - 1)
    small = eps.abs() < min_shift
    return torch.where(small, torch.where(eps < 0, -min_shift, min_shift), eps)


def reconstruction_loss(logits: torch.Tensor, eps_hat: torch.Tensor, k: torch.Tensor,
                        eps: torch.Tensor, shift_weight: float = SHIFT_WEIGHT
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voynov & Babenko's reconstructor loss ``CE(logits, k) + w * mean|eps_hat - eps|``;
    returns ``(loss, ce, shift_error)``."""
    ce = F.cross_entropy(logits, k)
    shift_error = (eps_hat - eps).abs().mean()
    return ce + shift_weight * shift_error, ce, shift_error
