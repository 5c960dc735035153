"""SeFa, Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021.

The weight A that first reads the latent (a DCGAN's first linear layer; the style affines of
the chosen synthesis layers of a StyleGAN) maps a move n of the latent to a move A n of what
the next layer reads. In S space (the styles themselves) each layer's styles are read by its
own convolution (a move n changes its input by W (x * n)), so A is block-diagonal, one block
per convolution, ``(out k k) x channels``, and its eigenvectors are each layer's: SeFa in S is a
per-layer factorisation, the directions of every chosen layer ranked together by eigenvalue
(ToRGB layers are left out, as in W). The moves that change it most are the top eigenvectors of A^T A, with
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


def sefa_style_directions(blocks: list[tuple[slice, torch.Tensor]], latent_dim: int,
                          num_directions: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SeFa in S space: the weight that reads the styles is block-diagonal (each layer's
    styles are read by that layer's convolution only), so the eigenvectors of A^T A are each
    block's, embedded at its channels. ``blocks``: ``(slice of the S latent, weight out x
    channels)``; the result as ``sefa_directions``', over every block, eigenvalue descending."""
    vectors, values = [], []
    for where, weight in blocks:
        v, e = sefa_directions(weight)
        full = torch.zeros(v.shape[0], latent_dim)
        full[:, where] = v
        vectors.append(full)
        values.append(e)
    values = torch.cat(values)
    order = values.argsort(descending=True, stable=True)[:num_directions]
    return torch.cat(vectors)[order].contiguous(), values[order]


class SeFa(FitFreeMethod):
    """Closed-form directions from the generator's first latent-reading weight.

    Args:
        num_directions: K, the top eigenvectors kept (None: every one, the latent size).
        layers: the per-layer codes whose weights are factorised and which the directions move
            (``all``, ``coarse`` / ``middle`` / ``fine``, ``"a-b"``, a list). Anything but
            ``all`` needs the W+ space (``generator.space=w+``), or S, where it names style
            layers and the directions move those layers' channels only.
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
        if generator.space == "s":  # the layers chosen are factorised; nothing else moves
            most = sum(w.shape[1] for _, w in self.blocks(generator))
        else:
            self.check_w_space(generator, "factorises the style affines, which read W")
            try:
                most = generator.projection_weight(self.layer_spec).shape[1]
            except NotImplementedError as err:
                raise UserError(f"SeFa needs the weight that reads the latent: {err}") from None
        if self.num_directions is not None and not 1 <= self.num_directions <= most:
            raise UserError(f"num_directions={self.num_directions}: SeFa finds at most "
                             f"{most} (the size of what it factorises); use 1..{most} or null")

    def blocks(self, generator: Generator) -> list[tuple[slice, torch.Tensor]]:
        """In S: each chosen convolution's slice of the latent and the weight reading it."""
        slices = generator.style_slices()
        return [(slices[i], w) for i, w in generator.style_reading_weights(self.layer_spec)]

    def solve(self, generator: Generator, stats) -> tuple[BasisDirections, dict[str, float]]:
        if generator.space == "s":
            blocks = self.blocks(generator)
            vectors, values = sefa_style_directions(blocks, generator.latent_dim, self.num_directions)
            rows = sum(w.shape[0] for _, w in blocks)
            channels = generator.style_channels(generator.layers(self.layer_spec))
            if len(channels) < generator.latent_dim:  # a layer range: the set lives on its channels
                directions = BasisDirections.of(vectors[:, channels], values=values).on_channels(channels)
            else:
                directions = BasisDirections.of(vectors, values=values)
        else:
            weight = generator.projection_weight(self.layer_spec)
            vectors, values = sefa_directions(weight, self.num_directions)
            rows = weight.shape[0]
            directions = BasisDirections.of(vectors, values=values, layers=self.edit_layers(generator))
        # With unit rows the eigenvalues sum to the number of rows (the trace of A^T A).
        return directions, {"eigenvalue_0": float(values[0]), "kept_share": float(values.sum()) / rows}
