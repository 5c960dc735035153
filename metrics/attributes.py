"""How well a regressor reads each factor: R^2 for values and angles, accuracy for classes."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torchmetrics import Metric


def _embed(kind: str, values: torch.Tensor) -> torch.Tensor:
    """Values as vectors whose squared distances define R^2: angles on the unit circle."""
    if kind == "circular":
        angle = 2 * math.pi * values
        return torch.stack([angle.cos(), angle.sin()], -1)
    return values[..., None]


class AttributeScores(Metric):
    """Per-factor scores of predictions against labels, summed over batches and processes.

    ``R^2 = 1 - SSE / SST`` for continuous factors and for circular ones (on the unit vector of
    the angle, so that 0.99 and 0.01 are close); accuracy for categorical and binary factors
    (binary labels > 0 count as present, predictions > 0.5). Labels that are missing (NaN) or
    undefined (``mask`` False) are left out.

    Args:
        names: factor names, in column order.
        kinds: their kinds (see ``regressors.attributes.Target``).
    """

    full_state_update = False

    def __init__(self, names: Sequence[str], kinds: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names, self.kinds = list(names), list(kinds)
        n = len(self.names)
        for state in ("sse", "sum_sq", "count", "correct"):
            self.add_state(state, torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_y", torch.zeros(n, 2, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> None:
        predicted, labels = predicted.double(), labels.double()
        for i, kind in enumerate(self.kinds):
            m = mask[:, i] & ~torch.isnan(labels[:, i])
            p, y = predicted[m, i], labels[m, i]
            self.count[i] += m.sum()
            if kind == "categorical":
                self.correct[i] += (p.round() == y.round()).sum()
            elif kind == "binary":
                self.correct[i] += ((p > 0.5) == (y > 0)).sum()
            else:
                ey, ep = _embed(kind, y), _embed(kind, p)
                self.sse[i] += ((ep - ey) ** 2).sum()
                self.sum_sq[i] += (ey ** 2).sum()
                self.sum_y[i, : ey.shape[1]] += ey.sum(0)

    def compute(self) -> dict[str, float]:
        scores: dict[str, float] = {}
        for i, (name, kind) in enumerate(zip(self.names, self.kinds)):
            n = float(self.count[i])
            if n == 0:
                continue
            if kind in ("categorical", "binary"):
                scores[f"acc_{name}"] = float(self.correct[i]) / n
            else:
                sst = float(self.sum_sq[i]) - float((self.sum_y[i] ** 2).sum()) / n
                scores[f"r2_{name}"] = 1.0 - float(self.sse[i]) / max(sst, 1e-12)
        # Read here, where the states are summed over processes (not after compute returns).
        scores["labelled_images"] = int(self.count.max())
        return scores
