"""Realism of edited images, with nothing downloaded:

- the frozen discriminator's mean score on edited and on unedited samples (when the generator
  brings one), and
- a Frechet distance between the features of unedited samples G(z) and of edited ones, with
  torchmetrics' FrechetInceptionDistance over the attribute regressor's penultimate features in
  place of Inception's (the regressor was trained here, on the world's images).
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance


class _Precomputed(nn.Module):
    """The FID's "extractor" for features computed elsewhere (once, with the predictions)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def feature_fid(num_features: int, **kwargs) -> FrechetInceptionDistance:
    """A FID that takes feature vectors (``update(features, real=...)``): regressor features."""
    return FrechetInceptionDistance(feature=_Precomputed(num_features), reset_real_features=True,
                                    **kwargs)


class DiscriminatorScore(Metric):
    """Mean discriminator output on unedited (``real=True``) and edited images."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, real: bool) -> None:
        i = 0 if real else 1
        self.sums[i] += scores.double().sum()
        self.counts[i] += scores.numel()

    def compute(self) -> dict[str, float]:
        mean = self.sums / self.counts.clamp_min(1)
        return {"d_score_original": float(mean[0]), "d_score_edited": float(mean[1])}
