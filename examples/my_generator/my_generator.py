"""Bring your own generator (README, "Your own generator"): a network defined outside the
project, run by every method through ``generators.adapter.ModuleGenerator`` and the config
``generator/my_generator.yaml`` beside this file. From the repository root:

    PYTHONPATH=examples/my_generator python train.py method=voynov \\
        hydra.searchpath=[file://examples/my_generator] generator=my_generator

``ToyGenerator`` stands for yours: a plain ``nn.Module`` that knows nothing of the project.
It draws images in [0, 1] (a sigmoid), which the config declares with ``output_range: [0, 1]``.
Its weights are a seeded random initialisation, so the example needs no file; a trained
network's come with ``generator.weights=<state_dict.pt>``.
"""
from __future__ import annotations

import torch
from torch import nn


class ToyGenerator(nn.Module):
    """z (N x latent_dim) -> images N x 3 x 32 x 32 in [0, 1]: a linear layer to a 4 x 4 map,
    three (upsample, 3 x 3 convolution, ReLU) blocks, a 1 x 1 convolution to RGB, a sigmoid."""

    def __init__(self, latent_dim: int = 8, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.fc = nn.Linear(latent_dim, width * 16)
            self.blocks = nn.Sequential(*[nn.Sequential(
                nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
                for _ in range(3)])
            self.to_rgb = nn.Conv2d(width, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        return torch.sigmoid(4 * self.to_rgb(self.blocks(x)))
