"""The built-in DCGAN-style generator and its spectral-norm discriminator.

Generator: a linear layer to a 4 x 4 map, then ``log2(resolution / 4)`` blocks of
transposed convolution (4 x 4, stride 2) + batch norm + ReLU that double the resolution and
halve the width, and a 3 x 3 convolution to RGB with tanh (Radford et al., ICLR 2016).
Discriminator: strided 4 x 4 convolutions with spectral normalisation (Miyato et al.,
ICLR 2018), a 3 x 3 stride-1 layer at each resolution below the input's (full-resolution
stride-1 layers cost too much on a CPU for what they add at 32 px), leaky ReLU, a linear head.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from common.errors import UserError
from generators.base import Generator


def _num_blocks(resolution: int) -> int:
    blocks = math.log2(resolution / 4)
    if resolution < 8 or blocks != int(blocks):
        raise UserError(f"resolution must be a power of two >= 8, got {resolution}")
    return int(blocks)


class DCGANGenerator(Generator):
    """DCGAN generator over a Gaussian latent (space "z").

    Args:
        latent_dim: size of the latent code z ~ N(0, I).
        resolution: output side in pixels (a power of two >= 8).
        width: channels of the last block; the 4 x 4 map has ``width * 2**(blocks-1)`` channels.
        name: identifier recorded in checkpoints and directions files.
    """

    def __init__(self, latent_dim: int = 16, resolution: int = 32, width: int = 64,
                 name: str = "dcgan") -> None:
        super().__init__()
        self.z_dim, self.resolution, self.width, self.name = latent_dim, resolution, width, name
        blocks = _num_blocks(resolution)
        channels = [width * 2 ** (blocks - 1 - i) for i in range(blocks)] + [width // 2 or 1]
        self.project = nn.Linear(latent_dim, channels[0] * 16)
        self.project_norm = nn.BatchNorm2d(channels[0])
        self.blocks = nn.Sequential(*[
            nn.Sequential(
                nn.ConvTranspose2d(channels[i], channels[i + 1], 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels[i + 1]),
                nn.ReLU(inplace=True),
            )
            for i in range(blocks)
        ])
        self.to_rgb = nn.Conv2d(channels[-1], 3, 3, padding=1)

    adapter = "dcgan"

    def config(self) -> dict:
        return {"latent_dim": self.z_dim, "resolution": self.resolution, "width": self.width,
                "name": self.name}

    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_latent(latent)
        self.check_classes(y, latent.shape[0])
        x = self.project(latent).view(latent.shape[0], -1, 4, 4)
        x = torch.relu(self.project_norm(x))
        return torch.tanh(self.to_rgb(self.blocks(x)))

    def projection_weight(self, layers=None) -> torch.Tensor:
        """The first linear layer's weight (out x latent_dim): what SeFa factorises."""
        self.layers(layers)  # one layer: "all" / 0 only
        return self.project.weight

    def features(self, latent: torch.Tensor, layer: int | str, y: torch.Tensor | None = None) -> torch.Tensor:
        """GANSpace's hook: activations after the projection (layer 0) or after upsampling
        block ``layer`` (1, 2, ...), ``N x C x H x W``."""
        layer = int(layer)
        if not 0 <= layer <= len(self.blocks):
            raise UserError(f"feature layer {layer}: {self.name} has layers 0..{len(self.blocks)}")
        self.check_latent(latent)
        x = torch.relu(self.project_norm(self.project(latent).view(latent.shape[0], -1, 4, 4)))
        for block in self.blocks[:layer]:
            x = block(x)
        return x


class SNDiscriminator(nn.Module):
    """Spectral-norm convolutional discriminator; returns one unbounded score per image.

    Args:
        resolution: input side in pixels (a power of two >= 8).
        width: channels of the first layer, doubled at each halving of the resolution.
    """

    def __init__(self, resolution: int = 32, width: int = 64) -> None:
        super().__init__()
        self.resolution, self.width = resolution, width
        blocks = _num_blocks(resolution)
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(blocks):
            out_ch = width * 2**i
            layers += [spectral_norm(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.1, inplace=True)]
            if i > 0:  # stride-1 refinement below full resolution
                layers += [spectral_norm(nn.Conv2d(out_ch, out_ch, 3, padding=1)),
                           nn.LeakyReLU(0.1, inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(in_ch * 16, 1))

    def config(self) -> dict:
        return {"resolution": self.resolution, "width": self.width}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1)).squeeze(1)
