"""Fits of a measured response curve (a factor or a score against a step)."""
from __future__ import annotations

import torch


# Hand-written: lstsq gives a constant x a min-norm slope (not 0); torchmetrics' r2_score is 1 for residuals < 1e-4.
def linear_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R^2 of y against x."""
    x, y = x.double(), y.double()
    xm, ym = x.mean(), y.mean()
    slope = ((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum().clamp_min(1e-12)
    intercept = ym - slope * xm
    residual = ((y - (slope * x + intercept)) ** 2).sum()
    total = ((y - ym) ** 2).sum().clamp_min(1e-12)
    return float(slope), float(intercept), float(1 - residual / total)


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson's correlation of two samples (0 when either is constant)."""
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() and (x.min() == x.max() or y.min() == y.max()):
        return 0.0  # torch.corrcoef's 0 / 0 gives nan there
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def bounded_response(alphas: torch.Tensor, base: torch.Tensor, change: torch.Tensor,
                     quantile: float = 0.01) -> dict[str, float]:
    """How a score follows a step when the score lives in a bounded range (GANalyze's test).

    ``base`` (N) are the scores before the step and ``change`` (N x A) their change at each of
    the A ``alphas``. The range the scores reach on the data is [lo, hi], the ``quantile`` and
    1 - ``quantile`` points of ``base``. Returns:

    - ``slope``, ``intercept``, ``r2``: the fit of the mean change over all samples;
    - ``ceiling_slope``: the slope of a perfect step that stops at the data's range (the mean of
      clip(base + alpha, lo, hi) - base): what the mean change can reach if the generator cannot
      go beyond what it draws; a factor uniform over its range caps it near 0.81 for alpha in
      [-0.5, 0.5] and a range of 1;
    - ``slope_in_range``, ``r2_in_range``: the fit of the mean change over the (sample, alpha)
      pairs whose target base + alpha lies inside [lo, hi], the steps the data can show;
    - ``range_lo``, ``range_hi``.
    """
    alphas, base, change = alphas.double(), base.double(), change.double()
    slope, intercept, r2 = linear_fit(alphas, change.mean(0))
    lo, hi = torch.quantile(base, quantile), torch.quantile(base, 1 - quantile)
    target = base[:, None] + alphas[None]
    ceiling = (target.clamp(lo, hi) - base[:, None]).mean(0)
    inside = (target >= lo) & (target <= hi)
    counts = inside.sum(0)
    mean_inside = (change * inside).sum(0) / counts.clamp_min(1)
    keep = counts > 0
    slope_in, _, r2_in = linear_fit(alphas[keep], mean_inside[keep]) if keep.sum() >= 3 \
        else (float("nan"), 0.0, float("nan"))
    return {"slope": slope, "intercept": intercept, "r2": r2,
            "ceiling_slope": linear_fit(alphas, ceiling)[0],
            "slope_in_range": slope_in, "r2_in_range": r2_in,
            "range_lo": float(lo), "range_hi": float(hi),
            "mean_change": change.mean(0).float(), "mean_change_in_range": mean_inside.float(),
            "ceiling": ceiling.float()}
