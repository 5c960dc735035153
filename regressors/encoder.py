"""The encoder of the ground-truth benchmark: images to the codes of K directions.

Locatello et al. (ICML 2019) use this 4-block convolutional encoder for every model they compare,
and Khrulkov et al. (ICML 2021) and DisCo (ICLR 2022) train it from generated images to the
directions' codes: four 4 x 4 convolutions of stride 2 (32, 32, 64, 64 channels, ReLU), a
256-unit fully connected layer, and a linear read-out of K codes.
"""
from __future__ import annotations

import torch
from torch import nn

from common.errors import UserError


class CodeEncoder(nn.Module):
    """``forward(images N x 3 x r x r in [-1, 1]) -> codes N x K`` (r a multiple of 16)."""

    def __init__(self, num_codes: int, resolution: int = 32, hidden: int = 256) -> None:
        super().__init__()
        if resolution < 16 or resolution % 16:
            raise UserError(f"the encoder reads images of a multiple of 16 pixels (four stride-2 "
                            f"convolutions), got {resolution}")
        if num_codes < 1:
            raise UserError(f"the encoder needs at least one code, got {num_codes}")
        channels = (3, 32, 32, 64, 64)
        blocks = []
        for c_in, c_out in zip(channels, channels[1:]):
            blocks += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        side = resolution // 16
        self.net = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(64 * side * side, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, num_codes))
        self.num_codes, self.resolution = num_codes, resolution

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
