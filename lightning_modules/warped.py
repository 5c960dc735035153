"""WarpedGANSpace: Tzelepis, Tzimiropoulos, Patras, "WarpedGANSpace: Finding non-linear RBF
paths in GAN latent space", ICCV 2021.

K RBF warping functions f_k (directions/, ``RBFWarps``) replace Voynov's
linear directions; a training shift is one step along the unit gradient of f_k at z, and the
objective and reconstructor are Voynov's (shared: lightning_modules/reconstruction.py):

    min_{warps, R}  E [ CE(R_k(G(z), G(z + eps grad f_k(z) / ||grad f_k(z)||)), k) + 0.25 |R_eps - eps| ]

with eps drawn half from U[min_shift, max_shift] and half from U[-max_shift, -min_shift].
Traversals and evaluation walk the warp in small steps, re-evaluating the gradient each step.
"""
from __future__ import annotations

from typing import Callable

import torch

from directions import RBFWarps
from generators.base import Generator
from lightning_modules.reconstruction import ReconstructorMethod, check_shift_range


def sample_signed_eps(n: int, rng: torch.Generator, min_shift: float, max_shift: float) -> torch.Tensor:
    """Half the batch from U[min, max], the other half from U[-max, -min] (signs in a random
    order, so each sample's sign does not depend on its place in the batch)."""
    magnitude = min_shift + (max_shift - min_shift) * torch.rand(n, generator=rng)
    sign = torch.ones(n)
    sign[n // 2:] = -1.0  # exactly half negative (one more positive when n is odd)
    return magnitude * sign[torch.randperm(n, generator=rng)]


class WarpedGANSpace(ReconstructorMethod):
    """Non-linear RBF paths found with a reconstructor.

    Args:
        generator: the frozen generator.
        num_directions: K warping functions.
        num_dipoles: N dipoles (2N support vectors) a warp.
        min_shift, max_shift: the range of |eps| of a training shift.
        gamma: initial RBF gamma (default 1/d); ``learn_gammas`` learns log-gamma per warp.
        learn_alphas: learn the dipole weights (fixed at +-1 by default).
        radii: radius range of the support vectors across warps.
        traversal_step: the largest step when walking a warp (traversals, evaluation, edits).
        shift_weight, reconstructor: as in Voynov.
        init_seed: seed of the support vectors.
        optimizer, traversal: see DirectionModule.
    """

    method_name = "warped"

    def __init__(self, generator: Generator, num_directions: int = 16, num_dipoles: int = 32,
                 min_shift: float = 0.5, max_shift: float = 6.0, gamma: float | None = None,
                 learn_gammas: bool = True, learn_alphas: bool = False,
                 radii: tuple[float, float] | list[float] = (1.0, 4.0), traversal_step: float = 0.25,
                 shift_weight: float = 0.25, reconstructor: str | Callable = "auto",
                 init_seed: int | None = 0,
                 optimizer: Callable | None = None, traversal: dict | None = None) -> None:
        check_shift_range(min_shift, max_shift)
        super().__init__(generator, num_directions, shift_weight, reconstructor,
                         optimizer, traversal, alpha_range=max_shift)
        # The reconstructor's config is in the run's config.yaml (a callable is no hyperparameter).
        self.save_hyperparameters(ignore=["generator", "optimizer", "reconstructor"])
        self.directions = RBFWarps(generator.latent_dim, num_directions, num_dipoles, gamma,
                                   learn_gammas, learn_alphas, radii, traversal_step, init_seed)

    def sample_eps(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return sample_signed_eps(n, rng, self.hparams.min_shift, self.hparams.max_shift)

    def train_shift(self, z: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.directions.step(z, k, eps)  # one gradient step, as the paper trains
