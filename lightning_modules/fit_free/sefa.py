"""SeFa, Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021.

The weight A that first reads the latent (a DCGAN's first linear layer; the style affines of
the chosen synthesis layers of a StyleGAN) maps a move n of the latent to a move A n of what
the next layer reads. The moves that change it most are the top eigenvectors of A^T A, with
each row of A normalised to unit length:

    directions = eigenvectors of A^T A, eigenvalue descending      (torch.linalg.eigh)

Nothing is sampled: one batch runs. The reference solved with ``eig`` and did not sort, which
can misorder the directions; ``eigh`` on the symmetric matrix is exact and sorted here.
"""
from __future__ import annotations

from typing import Any

import torch

from common.errors import UserError
from directions import BasisDirections
from generators.base import Generator
from lightning_modules.fit_free.base import FitFreeMethod


def sefa_directions(weight: torch.Tensor, num_directions: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(directions K x d, eigenvalues K)``, eigenvalue descending, from a weight ``out x d``
    whose rows are normalised first. Computed in float64."""
    a = weight.detach().double()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh(a.T @ a)          # ascending
    order = values.argsort(descending=True)[:num_directions]
    return vectors[:, order].T.float().contiguous(), values[order].float()


class SeFa(FitFreeMethod):
    """Closed-form directions from the generator's first latent-reading weight.

    Args:
        num_directions: K, the top eigenvectors kept (None: every one, the latent size).
        layers: the per-layer codes whose weights are factorised and which the directions move
            (``all``, ``coarse`` / ``middle`` / ``fine``, ``"a-b"``, a list). Anything but
            ``all`` needs the W+ space (``generator.space=w+``).
        alpha_range: the |alpha| of the grids and the evaluation (unit directions).
    """

    method_name = "sefa"
    value_name = "eigenvalue of A^T A"

    def __init__(self, num_directions: int | None = 16, layers: Any = "all",
                 alpha_range: float | None = 3.0) -> None:
        super().__init__(samples=0, alpha_range=alpha_range)
        self.num_directions, self.layer_spec = num_directions, layers

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), num_directions=self.num_directions, layers=self.layer_spec)

    def check(self, generator: Generator) -> None:
        self.check_w_space(generator, "factorises the style affines, which read W")
        try:
            weight = generator.projection_weight(self.layer_spec)
        except NotImplementedError as err:
            raise UserError(f"SeFa needs the weight that reads the latent: {err}") from None
        if self.num_directions is not None and not 1 <= self.num_directions <= weight.shape[1]:
            raise UserError(f"num_directions={self.num_directions}: SeFa finds at most "
                             f"{weight.shape[1]} (the latent size); use 1..{weight.shape[1]} or null")

    def solve(self, generator: Generator, stats) -> tuple[BasisDirections, dict[str, float]]:
        weight = generator.projection_weight(self.layer_spec)
        vectors, values = sefa_directions(weight, self.num_directions)
        directions = BasisDirections.of(vectors, values=values, layers=self.edit_layers(generator))
        # With unit rows the eigenvalues sum to the number of rows (the trace of A^T A).
        return directions, {"eigenvalue_0": float(values[0]),
                            "kept_share": float(values.sum()) / weight.shape[0]}
