"""Voynov & Babenko, "Unsupervised Discovery of Interpretable Directions in the GAN Latent
Space", ICML 2020.

A direction set A (K directions) and a reconstructor R are trained together so that R, shown
G(z) and G(z + eps * A_k), can tell which direction k was taken and how far:

    min_{A, R}  E_{z, k, eps} [ CE(R_k(G(z), G(z + eps A_k)), k) + 0.25 * |R_eps(...) - eps| ]

with k ~ U{0..K-1} and eps ~ 6 * U(-1, 1), magnitudes below 0.5 pushed to +-0.5. Directions
that R can tell apart are the ones that change the image in distinct ways. The fixed "random"
and "id" (coordinate axes) sets train R only: they are the baselines of the Reconstructor
Classification Accuracy (RCA), the accuracy of R's guess of k.

Unlike the reference loop, G(z) is computed without a graph and no gradient flows into the
generator's weights (it is frozen): the same objective at about two thirds of the cost.
"""
from __future__ import annotations

from typing import Callable

import torch

from common.errors import UserError
from directions import BASELINE_KINDS, DirectionSet, LinearDirections, OrthoDirections, ProjDirections, baseline_set
from generators.base import Generator
from lightning_modules.reconstruction import ReconstructorMethod, check_shift_range
from regressors.reconstructor import sample_shifts

DIRECTION_TYPES = ("linear", "ortho", "proj", "random", "id")


def make_directions(kind: str, latent_dim: int, num_directions: int,
                    init_seed: int | None = None, layers: list[int] | None = None) -> DirectionSet:
    """The direction sets of the paper: learned (linear, ortho, proj) or fixed (random, id),
    on every layer or on ``layers`` of W+ only."""
    if kind == "linear":
        return LinearDirections(latent_dim, num_directions, init="randn", init_seed=init_seed,
                                layers=layers)
    if kind == "ortho":
        return OrthoDirections(latent_dim, num_directions, layers=layers)
    if kind == "proj":
        return ProjDirections(latent_dim, num_directions, layers=layers)
    if kind in BASELINE_KINDS:
        return baseline_set(kind, latent_dim, num_directions, init_seed=init_seed, layers=layers)
    raise UserError(f"unknown directions_type {kind!r}; choose one of {', '.join(DIRECTION_TYPES)}")


class Voynov(ReconstructorMethod):
    """Unsupervised directions with a reconstructor (the shared step: lightning_modules/
    reconstruction.py).

    Args:
        generator: the frozen generator.
        num_directions: K (must equal the latent size for ``ortho``; None: the latent size).
        directions_type: ``linear``, ``ortho``, ``proj``; ``random`` or ``id`` are fixed baselines.
        shift_scale: largest |eps|.
        min_shift: smallest |eps|.
        shift_weight: weight of the L1 term on eps (0.25 in the paper).
        reconstructor: a nested config or kind name (see ReconstructorMethod).
        init_seed: seed of the initial directions (the run's seed in configs).
        layers: W+ or S only: the per-layer codes the directions move (``coarse``, ``middle``,
            ``fine``, ``"a-b"``, a list; None: every layer); in S the style layers, whose
            channels the directions then live on.
        optimizer, traversal: see DirectionModule.
    """

    method_name = "voynov"

    def __init__(self, generator: Generator, num_directions: int | None = 16,
                 directions_type: str = "linear", shift_scale: float = 6.0,
                 min_shift: float = 0.5, shift_weight: float = 0.25,
                 reconstructor: str | Callable = "auto",
                 init_seed: int | None = 0, layers: str | list[int] | None = None,
                 optimizer: Callable | None = None, traversal: dict | None = None) -> None:
        if layers is not None and generator.space not in ("w+", "s"):
            raise UserError(f"layers={layers!r} edits some per-layer codes only: it needs "
                             f"generator.space=w+ or s (the generator is in {generator.space!r})")
        # In S a layer range is the channels of those style layers: the set lives on them.
        channels = generator.style_channels(generator.layers(layers)) \
            if layers is not None and generator.space == "s" else None
        dim = generator.latent_dim if channels is None else len(channels)
        if num_directions is None:  # one per latent dimension
            num_directions = dim
        check_shift_range(min_shift, shift_scale, "shift_scale")
        super().__init__(generator, num_directions, shift_weight, reconstructor,
                         optimizer, traversal, alpha_range=shift_scale)
        # The reconstructor's config is in the run's config.yaml (a callable is no hyperparameter).
        self.save_hyperparameters(ignore=["generator", "optimizer", "reconstructor"])
        self.directions = make_directions(
            directions_type, dim, num_directions, init_seed,
            layers=None if layers is None or channels is not None else generator.layers(layers))
        if channels is not None:
            self.directions.on_channels(channels)

    def sample_eps(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return sample_shifts(n, rng, self.hparams.shift_scale, self.hparams.min_shift)
