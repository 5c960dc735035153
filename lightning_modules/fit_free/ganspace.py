"""GANSpace, Härkönen et al., "GANSpace: Discovering Interpretable GAN Controls", NeurIPS 2020.

Style-based generators: PCA of w = M(z) over many samples. The principal axes are the
directions and each one's standard deviation sigma_c is its unit, so an edit
``w + alpha * sigma_c * v_c`` moves alpha standard deviations; in W+ an edit may touch a layer
range only.

Generators without a mapping network (the DCGAN): PCA of an early layer's activations F, then
the latent is regressed on the PCA coordinates to find the latent direction of each component.
With the coordinates c_k = u_k^T (F - mean F) uncorrelated and of variance lambda_k, the
least-squares coefficient of z on c_k is Cov(z, F) u_k / lambda_k: one pass over the samples is
enough.

Both are streaming: the sums of x, x x^T (and z F^T) are accumulated in float64 over batches
and across processes (each batch centred on a fixed estimate of the mean and multiplied in
float32), and one eigendecomposition follows. The reference ran scikit-learn's
IncrementalPCA, which gives the same components at a much higher cost
(bench/fit_free.py).
"""
from __future__ import annotations

from typing import Any

import torch

from common.errors import UserError
from common.seeds import FEATURE_SUBSET_SEED
from directions import BasisDirections
from generators.base import Generator
from lightning_modules.fit_free.base import FitFreeMethod, Stats

PROBE_SAMPLES = 1024  # latents of the fixed mean estimate the batches are centred on


def add_moments(total: torch.Tensor, outer: torch.Tensor, x: torch.Tensor,
                shift: torch.Tensor) -> None:
    """Add a batch's sum and sum of outer products to float64 sums, in place. The batch is
    centred on a fixed ``shift`` (near the mean) first, so its products can be taken in float32
    (twice as fast as float64) without the cancellation an uncentred float32 sum would suffer."""
    centred = x.float() - shift
    total += centred.sum(0, dtype=torch.float64)
    outer += (centred.T @ centred).double()


def streaming_pca(count: float, total: torch.Tensor, outer: torch.Tensor, k: int | None = None,
                  shift: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(components K x D, variances K, mean D)`` from ``count`` samples' sum and sum of outer
    products (float64, centred on ``shift`` if given), variance descending."""
    mean = total / count
    cov = (outer - count * torch.outer(mean, mean)) / max(count - 1, 1)
    values, vectors = torch.linalg.eigh(cov)
    order = values.argsort(descending=True)[:k]
    if shift is not None:
        mean = mean + shift.double()
    return vectors[:, order].T, values[order].clamp_min(0), mean


class GANSpace(FitFreeMethod):
    """Principal components of W (or of an early layer's activations, regressed to the latent).

    Args:
        num_directions: K, the top components kept.
        samples: latents the statistics are accumulated over (1,000,000 in the paper's examples).
        layers: W+ only: the per-layer codes the edits move (``all``, ``coarse`` / ``middle`` /
            ``fine``, ``"a-b"``, a list).
        feature_layer: generators without a mapping network: the layer whose activations are
            analysed (``features(latent, layer)``; 0 is the first).
        max_features: activations are subsampled to this many fixed, seeded coordinates when
            larger (their covariance is max_features^2 doubles).
        alpha_range: the |alpha| of grids and the evaluation, in standard deviations.
    """

    method_name = "ganspace"
    value_name = "variance"

    def __init__(self, num_directions: int = 16, samples: int = 1_000_000, layers: Any = "all",
                 feature_layer: int = 0, max_features: int = 2048,
                 alpha_range: float | None = 3.0) -> None:
        super().__init__(samples=samples, alpha_range=alpha_range)
        if samples < 2:
            raise UserError(f"GANSpace needs at least 2 samples, got samples={samples}")
        self.num_directions, self.layer_spec = num_directions, layers
        self.feature_layer, self.max_features = feature_layer, max_features
        self._keep: torch.Tensor | None = None
        self._shift: torch.Tensor | None = None  # set by init_stats

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), num_directions=self.num_directions, layers=self.layer_spec,
                    feature_layer=self.feature_layer, max_features=self.max_features)

    # ---- input checks -------------------------------------------------------------------
    def check(self, generator: Generator) -> None:
        self.check_w_space(generator, "analyses W = M(z) of a style-based generator and edits there")
        dim = generator.latent_dim if generator.style_based else self._feature_dim(generator)
        if not 1 <= self.num_directions <= dim:
            raise UserError(f"num_directions={self.num_directions}: GANSpace finds at most "
                             f"{dim} components here; use 1..{dim}")

    def _feature_dim(self, generator: Generator) -> int:
        try:
            with torch.no_grad():
                latent, y = generator.draw(1)
                probe = generator.features(latent, self.feature_layer, y)
        except NotImplementedError as err:
            raise UserError(f"GANSpace needs a mapping network or intermediate features: {err}") from None
        except UserError as err:
            raise UserError(
                f"GANSpace (no mapping network) analyses the activations of one layer, "
                f"method.feature_layer={self.feature_layer}: an index into the generator's feature "
                "layers, 0 the first (your own network's are the submodules named in "
                f"generator.feature_layers); {err}") from None
        return min(probe[0].numel(), self.max_features)

    # ---- statistics ---------------------------------------------------------------------
    def _features(self, generator: Generator, latent: torch.Tensor, y=None) -> torch.Tensor:
        flat = generator.features(latent, self.feature_layer, y).flatten(1)
        if flat.shape[1] > self.max_features:
            if self._keep is None:  # a fixed subset, the same on every process and resume
                chosen = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(FEATURE_SUBSET_SEED))
                self._keep = chosen[: self.max_features].sort().values
            flat = flat[:, self._keep.to(flat.device)]
        return flat

    def init_stats(self, generator: Generator) -> Stats:
        d, dev = generator.latent_dim, generator.device
        # A fixed estimate of the mean (the same on every process and after a resume) to centre
        # the batches on: the mean of a seeded probe batch (classes drawn where there are any).
        probe = self._analysed(generator, *generator.draw(
            PROBE_SAMPLES, torch.Generator().manual_seed(FEATURE_SUBSET_SEED)))
        self._shift = probe.float().mean(0)
        f = probe.shape[1]
        stats = {"count": torch.zeros((), dtype=torch.float64, device=dev),
                 "sum": torch.zeros(f, dtype=torch.float64, device=dev),
                 "outer": torch.zeros(f, f, dtype=torch.float64, device=dev)}
        if not generator.style_based:  # the regression back to the latent
            stats.update(z_sum=torch.zeros(d, dtype=torch.float64, device=dev),
                         z_outer=torch.zeros(d, d, dtype=torch.float64, device=dev),
                         cross=torch.zeros(d, f, dtype=torch.float64, device=dev))
        return stats

    def _analysed(self, generator: Generator, latent: torch.Tensor, y=None) -> torch.Tensor:
        """What the PCA reads: w (one code of W+ samples, which repeat it) or the features
        (given the classes ``y`` of a conditional generator)."""
        if latent.ndim == 3:
            latent = latent[:, 0]
        return latent if generator.style_based else self._features(generator, latent, y)

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        x = self._analysed(generator, batch["latent"], batch.get("y"))
        stats["count"] += x.shape[0]
        add_moments(stats["sum"], stats["outer"], x, self._shift)
        if not generator.style_based:  # z ~ N(0, I) is centred already
            z = batch["latent"].double()
            stats["z_sum"] += z.sum(0)
            stats["z_outer"] += z.T @ z
            stats["cross"] += z.T @ (x.double() - self._shift.double())

    def solve(self, generator: Generator, stats: Stats) -> tuple[BasisDirections, dict[str, float]]:
        n = float(stats["count"])
        components, variances, _ = streaming_pca(n, stats["sum"], stats["outer"],
                                                 self.num_directions)
        centred_mean = stats["sum"] / n  # of the centred samples
        total_variance = float(torch.diagonal(stats["outer"]).sum() / n
                               - (centred_mean**2).sum()) * n / max(n - 1, 1)
        if generator.style_based:
            basis, sigma = components, variances.sqrt()
        else:
            z_mean = stats["z_sum"] / n
            cov_zf = (stats["cross"] - n * torch.outer(z_mean, centred_mean)) / (n - 1)
            coef = (cov_zf @ components.T) / variances.clamp_min(1e-12)   # d x K
            basis = (coef / coef.norm(dim=0, keepdim=True).clamp_min(1e-12)).T
            cov_zz = (stats["z_outer"] - n * torch.outer(z_mean, z_mean)) / (n - 1)
            sigma = torch.einsum("kd,de,ke->k", basis, cov_zz, basis).clamp_min(0).sqrt()
        directions = BasisDirections.of(basis.float(), scales=sigma.float(),
                                        values=variances.float(), layers=self.edit_layers(generator))
        return directions, {"explained_0": float(variances[0]) / total_variance,
                            "explained_top": float(variances.sum()) / total_variance,
                            "samples": n}
