"""The generator that GLO trains and exports (``lightning_modules/glo.py``): the built-in DCGAN
sampled through a full-covariance Gaussian fitted to the codes GLO learned.

GLO (Bojanowski et al., ICML 2018) learns a code z_i per training image and has no prior to
sample from; new images come from a Gaussian N(mu, Sigma) fitted to the learned codes. Every
direction method of this project draws latents from N(0, I), so the editing latent of this
generator is the standard-normal n, and the network's input is

    z = mu + L n,        L L^T = Sigma  (lower-triangular Cholesky factor),

applied inside ``forward``: ``sample()``, ``draw()``, directions, traversals and the evaluation
all work unchanged, and a step along a direction is a step in units of the codes' own spread.
``mu`` and ``L`` are buffers, so they travel in the weights file with the network. A sampled z
is not projected back onto the unit sphere the codes lived on: a Gaussian fitted to unit codes
already draws norms close to 1 (E|z|^2 = tr Sigma + |mu|^2 = 1).
"""
from __future__ import annotations

import torch

from common.errors import UserError
from generators.dcgan import DCGANGenerator


class GLOGenerator(DCGANGenerator):
    """A DCGAN over the standard-normal latent n, with z = mean + L n (see the module docstring).

    Args:
        latent_dim, resolution, width, name: as for ``DCGANGenerator`` (latent_dim: the size of
            the GLO codes, and of n).

    Buffers:
        code_mean: ``d``, the mean of the learned codes (zeros until ``set_gaussian``).
        code_scale: ``d x d``, the Cholesky factor of their covariance (identity until then).
    """

    adapter = "glo"

    def __init__(self, latent_dim: int = 16, resolution: int = 32, width: int = 64,
                 name: str = "glo") -> None:
        super().__init__(latent_dim, resolution, width, name)
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_scale", torch.eye(latent_dim))

    def set_gaussian(self, codes: torch.Tensor) -> "GLOGenerator":
        """Fit the sampling Gaussian to learned codes (``N x d``) and keep it in the buffers."""
        mean, scale = fit_gaussian(codes)
        self.code_mean.copy_(mean)
        self.code_scale.copy_(scale)
        return self

    def to_code(self, latent: torch.Tensor) -> torch.Tensor:
        """The network's input z = mean + L n for editing latents n (``N x d``)."""
        self.check_latent(latent)
        return self.code_mean + latent @ self.code_scale.T

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images of GLO codes z themselves (what training and reconstruction use)."""
        return super().forward(codes)

    def forward(self, latent: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(self.to_code(latent), y)

    def projection_weight(self, layers=None) -> torch.Tensor:
        """SeFa's weight, read from n: the first layer computes W (mean + L n) + b, so W L."""
        return super().projection_weight(layers) @ self.code_scale

    def features(self, latent: torch.Tensor, layer: int | str, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().features(self.to_code(latent), layer, y)


def fit_gaussian(codes: torch.Tensor, jitter: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean d, L d x d)`` of the Gaussian fitted to ``codes`` (``N x d``): their mean, and
    ``L`` the lower Cholesky factor of their sample covariance (unbiased, N - 1).

    Computed in float64. A covariance that is not positive definite (fewer codes than
    dimensions, or codes on a subspace) gets ``jitter`` times its mean variance added to the
    diagonal, tenfold until the factorisation succeeds.
    """
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise UserError(f"fitting a Gaussian needs N x d codes with N >= 2, got {tuple(codes.shape)}")
    x = codes.detach().double()
    mean = x.mean(0)
    cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    level = jitter * float(cov.diagonal().mean().clamp_min(1e-12))
    scale, info = torch.linalg.cholesky_ex(cov)
    while int(info) != 0:
        scale, info = torch.linalg.cholesky_ex(cov + level * eye)
        level *= 10
    return mean.to(codes.dtype), scale.to(codes.dtype)
