"""A stranger's generator (docs/generators.md, "Your own generator"): a DCGAN of faces in the
architecture of the PyTorch DCGAN tutorial, run by every method through
``generators.adapter.ModuleGenerator`` and the config ``generator/faces_dcgan.yaml`` beside
this file, with no code of the project's. From the repository root:

    PYTHONPATH=examples/faces_dcgan python train.py method=sefa \\
        hydra.searchpath=[file://examples/faces_dcgan] generator=faces_dcgan \\
        generator.weights=/models/dcgan_faces.pt

It reads latents ``N x nz x 1 x 1`` (the config's ``input_shape: [100, 1, 1]`` reshapes the
project's ``N x 100`` latents), draws ``N x 3 x 64 x 64`` images in [-1, 1] (a tanh), and its
training script saved ``{"netG_state_dict": netG.state_dict(), "epoch": ...}`` (the config's
``weights_key: netG_state_dict``). Its batch norms run in eval mode: the adapter freezes them.
"""
from __future__ import annotations

import torch
from torch import nn


def _up(c_in: int, c_out: int, first: bool = False) -> list[nn.Module]:
    """A transposed convolution that doubles the side (or makes 4 x 4 of a 1 x 1 input), batch
    norm, ReLU."""
    conv = (nn.ConvTranspose2d(c_in, c_out, 4, 1, 0, bias=False) if first
            else nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False))
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(True)]


class Generator(nn.Module):
    """z (N x nz x 1 x 1) -> images N x nc x 64 x 64 in [-1, 1]: 1 -> 4 -> 8 -> 16 -> 32 -> 64 px,
    ngf * 8, * 4, * 2, * 1 channels, then nc and a tanh. The layers sit in ``main`` (a
    Sequential), so their names are those of the tutorial's checkpoints: ``main.0`` (the
    ConvTranspose2d that reads z, weight nz x ngf*8 x 4 x 4), ``main.2`` (its ReLU), ..."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        widths = [ngf * 8, ngf * 4, ngf * 2, ngf]
        layers = _up(nz, widths[0], first=True)
        for c_in, c_out in zip(widths, widths[1:]):
            layers += _up(c_in, c_out)
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)
