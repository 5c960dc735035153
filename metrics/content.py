"""Content preservation: how much of G(z) survives an edit along a direction.

    Lap1 = E_{z,k,s} Lap1(G(z), G(shift(z, k, s * alpha))),   L2 likewise,   LPIPS likewise

at one fixed step alpha for every method (lower is better: the edit keeps more of the image).
LPIPS only when its weights are on disk (``metrics.distances.make_lpips``).
"""
from __future__ import annotations

import torch
from torchmetrics import Metric

from metrics.distances import l2, lap1


class ContentPreservation(Metric):
    """Mean Lap1, L2 (and LPIPS with ``lpips``: a module from ``make_lpips``) of edits.

    Args:
        lpips: an LPIPS module, or None to leave LPIPS out.
        levels: levels of the Laplacian pyramid.
    """

    full_state_update = False

    def __init__(self, lpips: torch.nn.Module | None = None, levels: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lpips, self.levels = lpips, levels
        for state in ("lap1", "l2", "lpips_sum", "count"):
            self.add_state(state, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, original: torch.Tensor | None = None, edited: torch.Tensor | None = None,
               distances: dict[str, torch.Tensor] | None = None) -> None:
        """Edits as image pairs, or as their ``distances`` (computed once by ``distances`` and
        given to several metrics: overall and per class)."""
        if distances is None:
            distances = self.distances(original, edited)
        self.lap1 += distances["lap1"].double().sum()
        self.l2 += distances["l2"].double().sum()
        if self.lpips is not None:
            self.lpips_sum += distances["lpips"].double().sum()
        self.count += distances["l2"].shape[0]

    def distances(self, original: torch.Tensor, edited: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each edit's distances (``N`` each)."""
        out = {"lap1": lap1(original, edited, self.levels), "l2": l2(original, edited)}
        if self.lpips is not None:
            out["lpips"] = self.lpips(original, edited).flatten()
        return out

    def compute(self) -> dict[str, float]:
        n = float(self.count.clamp_min(1))
        out = {"lap1": float(self.lap1) / n, "l2": float(self.l2) / n, "edits": int(n)}
        if self.lpips is not None:
            out["lpips"] = float(self.lpips_sum) / n
        return out
