"""LowRankGAN, Zhu et al., "Low-Rank Subspaces in GANs", NeurIPS 2021.

Local edits from the Jacobian J of the image with respect to the latent. The image is
channel-averaged and resized to ``jacobian_size`` px; a region of interest splits its pixels
into the foreground f and the background b:

    M_f = J_f^T J_f / n_f,   M_b = J_b^T J_b / n_b      (d x d, averaged over ``samples``)

Robust PCA (principal component pursuit, inexact ALM) finds the rank of each (its low-rank
part's). The candidates are the top right singular vectors of M_f; M_b's right singular vectors
beyond the background's rank span the directions that leave the background alone, and each
candidate is projected onto that null space and renormalised. ``samples = 1`` is the paper's
single-image setting; more samples average M over images, for directions that hold across them.

J comes from one batched call (``torch.func.vmap`` over ``jvp`` for the d latent axes, or over
``vjp`` for the pixels, whichever are fewer) instead of one backward pass per output;
bench/lowrankgan_jacobian.py measures the difference. The
local-edit ratio (mean change inside the region over mean change outside, for each direction at
|alpha| = alpha_range on held-out latents) is logged and reported.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.func import jvp, vjp, vmap

from common.errors import UserError
from directions import BasisDirections
from generators.base import Generator
from lightning_modules.fit_free.base import FitFreeMethod, Stats


def image_jacobian(generator: Generator, latent: torch.Tensor, size: int,
                   chunk_size: int | None = None, mode: str = "auto",
                   y: torch.Tensor | None = None) -> torch.Tensor:
    """``J`` (``size*size x d``) of the channel-averaged image resized to ``size`` px, at one
    latent ``d`` (of class ``y``, one index, on a conditional generator), in one batched call:
    ``forward`` pushes the d latent axes through at once (``vmap`` over ``jvp``: d passes'
    work), ``reverse`` pulls every pixel back at once (``vmap`` over ``vjp``: one per pixel);
    ``auto`` takes the one with fewer, forward on a tie."""
    classes = None if y is None else y.reshape(1)

    def image(z: torch.Tensor) -> torch.Tensor:
        x = generator(z[None], classes).mean(1, keepdim=True)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x.flatten()

    if mode not in ("auto", "forward", "reverse"):
        raise UserError(f"jacobian mode {mode!r}: use auto, forward or reverse")
    d = latent.numel()
    if mode == "forward" or (mode == "auto" and d <= size * size):
        axes = torch.eye(d, dtype=latent.dtype, device=latent.device)
        columns = vmap(lambda t: jvp(image, (latent,), (t,))[1], chunk_size=chunk_size)(axes)
        return columns.T
    out, pullback = vjp(image, latent)
    eye = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
    (rows,) = vmap(pullback, chunk_size=chunk_size)(eye)
    return rows


def robust_pca(m: torch.Tensor, lam: float | None = None, tol: float = 1e-7,
               max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal component pursuit by the inexact augmented Lagrangian method (Lin et al. 2010):
    ``m = low_rank + sparse``; returns both (float64)."""
    m = m.double()
    lam = lam if lam is not None else 1 / math.sqrt(max(m.shape))
    norm_two = torch.linalg.matrix_norm(m, 2)
    if norm_two == 0:
        return torch.zeros_like(m), torch.zeros_like(m)
    y = m / torch.maximum(norm_two, m.abs().max() / lam)
    mu, rho = 1.25 / float(norm_two), 1.5
    mu_max = mu * 1e7
    sparse = torch.zeros_like(m)
    norm_m = torch.linalg.matrix_norm(m)
    for _ in range(max_iter):
        u, s, vh = torch.linalg.svd(m - sparse + y / mu, full_matrices=False)
        low = (u * (s - 1 / mu).clamp_min(0)) @ vh
        t = m - low + y / mu
        sparse = t.sign() * (t.abs() - lam / mu).clamp_min(0)
        gap = m - low - sparse
        y = y + mu * gap
        mu = min(mu * rho, mu_max)
        if torch.linalg.matrix_norm(gap) / norm_m < tol:
            break
    return low, sparse


def numerical_rank(a: torch.Tensor, rel_tol: float = 1e-3) -> int:
    s = torch.linalg.svdvals(a)
    return int((s > rel_tol * s[0]).sum()) if s.numel() and s[0] > 0 else 0


def region_mask(region: Sequence[float] | str, resolution: int, size: int) -> torch.Tensor:
    """The region of interest on the ``size`` x ``size`` Jacobian grid (bool): a box ``[top,
    bottom, left, right]`` in fractions of the image, or the path of a mask image (white =
    region) of ``resolution`` or ``size`` px. Refused when it covers every pixel or none."""
    if isinstance(region, str):
        from torchvision.io import ImageReadMode, read_image

        path = Path(region)
        if not path.is_file():
            raise UserError(f"region mask {path} does not exist: pass a PNG of "
                             f"{resolution} x {resolution} (white = region) or a box "
                             "[top, bottom, left, right] in fractions of the image")
        mask = read_image(str(path), ImageReadMode.GRAY)[0].float() / 255
        if tuple(mask.shape) not in ((resolution, resolution), (size, size)):
            raise UserError(f"region mask {path} is {mask.shape[1]} x {mask.shape[0]} px; it "
                             f"must be {resolution} x {resolution} (the generator's images) or "
                             f"{size} x {size} (method.jacobian_size)")
        mask = F.interpolate(mask[None, None], size=(size, size), mode="area")[0, 0] > 0.5
    else:
        box = [float(v) for v in region]
        if len(box) != 4 or not (0 <= box[0] < box[1] <= 1 and 0 <= box[2] < box[3] <= 1):
            raise UserError(f"region={region!r}: a box is [top, bottom, left, right] "
                             "in fractions of the image, with top < bottom and left < right")
        edges = (torch.arange(size) + 0.5) / size
        rows = (edges >= box[0]) & (edges < box[1])
        cols = (edges >= box[2]) & (edges < box[3])
        mask = rows[:, None] & cols[None, :]
    if mask.all() or not mask.any():
        raise UserError(f"region {region!r} covers {'every' if mask.all() else 'no'} "
                         f"pixel of the {size} x {size} Jacobian grid: it needs both a region "
                         "and a rest")
    return mask


class LowRankGAN(FitFreeMethod):
    """Directions that edit a region of the image and leave the rest.

    Args:
        region: the region of interest: a box ``[top, bottom, left, right]`` in fractions of
            the image (0..1), or the path of a mask image (white = region) of the generator's
            resolution or of ``jacobian_size``.
        num_directions: K, the foreground candidates kept (at most the foreground's rank).
        samples: latents whose M_f, M_b are averaged (1: the paper's single image).
        jacobian_size: the side the image is resized to before the Jacobian (pixels = outputs).
        rank_foreground, rank_background: ranks of the low-rank parts (None: from robust PCA).
        chunk_size: latent axes or pixels a vmap chunk (None: all at once; lower it to save memory).
        jacobian_mode: ``auto`` (forward-mode when the latent has fewer axes than the grid has
            pixels, else reverse), ``forward`` or ``reverse``.
        alpha_range: |alpha| of grids, the local-edit ratio and the evaluation.
    """

    method_name = "lowrankgan"
    value_name = "singular value of M_f"

    def __init__(self, region: Sequence[float] | str = (0.25, 0.75, 0.25, 0.75),
                 num_directions: int = 5, samples: int = 4, jacobian_size: int = 32,
                 rank_foreground: int | None = None, rank_background: int | None = None,
                 chunk_size: int | None = None, jacobian_mode: str = "auto",
                 alpha_range: float | None = 3.0) -> None:
        super().__init__(samples=samples, alpha_range=alpha_range)
        if samples < 1:
            raise UserError(f"LowRankGAN needs at least one sample, got samples={samples}")
        self.region, self.num_directions, self.jacobian_size = region, num_directions, jacobian_size
        self.rank_foreground, self.rank_background = rank_foreground, rank_background
        self.chunk_size, self.jacobian_mode = chunk_size, jacobian_mode
        self.mask: torch.Tensor | None = None   # jacobian_size x jacobian_size, bool

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), region=self.region if isinstance(self.region, str)
                    else list(self.region), num_directions=self.num_directions,
                    jacobian_size=self.jacobian_size, rank_foreground=self.rank_foreground,
                    rank_background=self.rank_background, jacobian_mode=self.jacobian_mode)

    # ---- the region ---------------------------------------------------------------------
    def make_mask(self, resolution: int) -> torch.Tensor:
        return region_mask(self.region, resolution, self.jacobian_size)

    def check(self, generator: Generator) -> None:
        if generator.space == "w+":
            raise UserError("LowRankGAN edits one latent for the whole image: run it with "
                             "generator.space=z or w")
        self.mask = self.make_mask(generator.resolution)
        d = generator.latent_dim
        if not 1 <= self.num_directions <= d:
            raise UserError(f"num_directions={self.num_directions}: use 1..{d} (the latent size)")
        for name, rank in (("rank_foreground", self.rank_foreground),
                           ("rank_background", self.rank_background)):
            if rank is not None and not 0 < rank < d:
                raise UserError(f"{name}={rank}: use 1..{d - 1} or null (from robust PCA)")

    # ---- statistics ---------------------------------------------------------------------
    def init_stats(self, generator: Generator) -> Stats:
        d, dev = generator.latent_dim, generator.device
        return {"count": torch.zeros((), dtype=torch.float64, device=dev),
                "fore": torch.zeros(d, d, dtype=torch.float64, device=dev),
                "back": torch.zeros(d, d, dtype=torch.float64, device=dev)}

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        mask = self.mask.flatten().to(generator.device)
        classes = batch.get("y")
        for i, latent in enumerate(batch["latent"]):
            with torch.enable_grad():
                jac = image_jacobian(generator, latent, self.jacobian_size, self.chunk_size,
                                     self.jacobian_mode,
                                     None if classes is None else classes[i]).double()
            fore, back = jac[mask], jac[~mask]
            stats["fore"] += fore.T @ fore / fore.shape[0]
            stats["back"] += back.T @ back / back.shape[0]
            stats["count"] += 1

    # ---- the solve ----------------------------------------------------------------------
    def solve(self, generator: Generator, stats: Stats) -> tuple[BasisDirections, dict[str, float]]:
        n = float(stats["count"])
        m_f, m_b = stats["fore"].cpu() / n, stats["back"].cpu() / n
        # Robust PCA gives the ranks; the subspaces come from the SVD of M itself, whose
        # vectors beyond the rank are well defined (those of a degenerate low-rank part, as of
        # a sparse M, would be arbitrary).
        rank_f = self.rank_foreground or numerical_rank(robust_pca(m_f)[0])
        rank_b = self.rank_background or numerical_rank(robust_pca(m_b)[0])
        d = m_f.shape[0]
        if rank_b >= d:
            raise UserError(f"the background's Jacobian has full rank ({d}): no direction leaves it "
                             "unchanged; shrink the region or set "
                             "method.rank_background below the latent size")
        _, s_f, vh_f = torch.linalg.svd(m_f)
        _, _, vh_b = torch.linalg.svd(m_b)
        null = vh_b[rank_b:]                                   # (d - r_b) x d
        k = min(self.num_directions, max(rank_f, 1))
        candidates = vh_f[:k]
        projected = (candidates @ null.T) @ null
        kept = projected.norm(dim=1) > 1e-6
        if not kept.any():
            raise UserError("every foreground direction lies in the background's span: no local "
                             "edit found; try another region or a lower rank_background")
        directions = BasisDirections.of(projected[kept].float(), values=s_f[:k][kept].float())
        return directions, {"rank_foreground": float(rank_f), "rank_background": float(rank_b),
                            "directions": float(kept.sum())}

    def finish(self, module) -> None:
        super().finish(module)
        # The local-edit ratio on held-out latents: mean |change| inside / outside the region.
        batches = self.held_out_batches(module)
        if not batches:
            return
        directions = self.directions(module.device)
        alpha = self.alpha_range or 1.0
        sums = torch.zeros(directions.num_directions, 2, dtype=torch.float64, device=module.device)
        size = self.jacobian_size
        mask = self.mask.to(module.device)
        for batch in batches:
            z, y = batch["latent"], batch.get("y")
            base = F.interpolate(module.generator(z, y).mean(1, keepdim=True), size=(size, size),
                                 mode="area")
            for k in range(directions.num_directions):
                moved = module.generator(directions.shift(z, k, alpha), y).mean(1, keepdim=True)
                moved = F.interpolate(moved, size=(size, size), mode="area")
                change = (moved - base).abs()[:, 0]
                sums[k, 0] += change[:, mask].mean(1).sum()
                sums[k, 1] += change[:, ~mask].mean(1).sum()
        sums = module.trainer.strategy.reduce(sums, reduce_op="sum")
        ratios = sums[:, 0] / sums[:, 1].clamp_min(1e-12)
        self.result["metrics"].update({"local_edit_ratio": float(ratios.mean()),
                                       "local_edit_ratio_top": float(ratios[0])})
