"""Fits of a measured response curve (a factor or a score against a step)."""
from __future__ import annotations

import torch


def linear_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R^2 of y against x."""
    x, y = x.double(), y.double()
    xm, ym = x.mean(), y.mean()
    slope = ((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum().clamp_min(1e-12)
    intercept = ym - slope * xm
    residual = ((y - (slope * x + intercept)) ** 2).sum()
    total = ((y - ym) ** 2).sum().clamp_min(1e-12)
    return float(slope), float(intercept), float(1 - residual / total)
