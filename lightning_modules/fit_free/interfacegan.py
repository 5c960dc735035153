"""InterFaceGAN, Shen et al., "Interpreting the Latent Space of GANs for Semantic Face Editing",
CVPR 2020.

Sampled latents are scored by an attribute predictor (a factor of the generator's regressor);
the top and bottom ``ratio`` (2%) become positives and negatives, split 70 / 30, and a linear
SVM separates them. The unit normal of its hyperplane is the direction (the intercept is
dropped). Conditional manipulation removes from a direction its projection on the directions
of other factors (then renormalises), so moving one factor leaves the others' scores alone to
first order.

Streaming: each factor keeps a fixed-size buffer of the ``ratio * samples`` highest and lowest
scores seen with their latents, so memory does not grow with the stream, and the buffers of
several processes merge into the same global extremes. The SVM is this project's own: an
L2-regularised squared-hinge linear SVM solved by L-BFGS over the whole set in float64 (full
batch, deterministic); bench/fit_free.py compares it with scikit-learn's SVC(kernel="linear").
Accuracy is logged on the 30% validation split and on held-out latents whose scores lie between
the two extremes (the reference's "remaining samples", labelled by the midpoint of the extreme
scores), drawn from the datamodule's held-out batches.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from common.errors import UserError
from common.seeds import SPLIT_SEED
from directions import BasisDirections
from generators.base import Generator
from lightning_modules.fit_free.base import FitFreeMethod, Stats, keep_extremes, load_assessors, merged_extremes
from regressors.attributes import AttributeAssessor


def linear_svm(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, max_iter: int = 500
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b)`` of a linear SVM on ``x`` (N x d) and labels ``y`` in {0, 1}: minimises
    ``0.5 |w|^2 + c * sum max(0, 1 - t (w.x + b))^2`` (t = +-1) with L-BFGS, in float64."""
    x, t = x.double(), y.double() * 2 - 1
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        w, b = params[:-1], params[-1]
        margin = torch.relu(1 - t * (x @ w + b))
        loss = 0.5 * w.dot(w) + c * margin.pow(2).sum()
        loss.backward()
        return loss

    opt.step(objective)
    return params[:-1].detach(), params[-1].detach()


def condition(direction: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """``direction`` with its projection on the span of ``others`` (M x d) removed, renormalised."""
    q, _ = torch.linalg.qr(others.T.double())
    free = direction.double() - q @ (q.T @ direction.double())
    norm = free.norm()
    if norm < 1e-6:
        raise UserError("a conditioned direction vanished: it lies in the span of the directions "
                         "it is conditioned on")
    return (free / norm).to(direction.dtype)


class InterFaceGAN(FitFreeMethod):
    """One SVM normal per factor of the regressor.

    Args:
        factors: what to find a direction for, one each, in order: any scalar read of the
            regressor (a value ``scale``, a class probability ``shape=0``, an angle component
            ``hue.cos``; see AttributeAssessor).
        conditions: ``{factor: [other factors]}``: that factor's direction made orthogonal to
            the others' (which are fitted on the same samples even when not in ``factors``).
        regressor: ``auto`` (the generator's) or a regressor file.
        samples: latents scored (20,000 in W; the reference recommends 500,000 in Z).
        ratio: the share of samples taken from each end as positives / negatives (0.02).
        val_share: the share of those held out for validation accuracy (0.3).
        svm_c: the SVM's C.
        layers: W+ only: the per-layer codes the directions move.
        alpha_range: |alpha| of grids and the evaluation (unit directions).
    """

    method_name = "interfacegan"
    value_name = "validation accuracy"

    def __init__(self, factors: list[str] | str = ("scale",), conditions: dict | None = None,
                 regressor: str = "auto", samples: int = 20_000, ratio: float = 0.02,
                 val_share: float = 0.3, svm_c: float = 1.0, layers: Any = "all",
                 alpha_range: float | None = 3.0) -> None:
        super().__init__(samples=samples, alpha_range=alpha_range)
        self.factors = [factors] if isinstance(factors, str) else list(factors)
        self.conditions = {k: list(v) for k, v in (conditions or {}).items()}
        self.regressor_choice, self.ratio, self.val_share = regressor, ratio, val_share
        self.svm_c, self.layer_spec = svm_c, layers
        fitted = list(self.factors)
        for extra in (f for others in self.conditions.values() for f in others):
            if extra not in fitted:
                fitted.append(extra)
        self.fitted = fitted  # every factor an SVM is fitted for
        self.per_end = math.ceil(ratio * samples)
        self.assessors: list[AttributeAssessor] = []

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), factors=self.factors, conditions=self.conditions,
                    regressor=self.regressor_choice, ratio=self.ratio, val_share=self.val_share,
                    svm_c=self.svm_c, layers=self.layer_spec)

    # ---- input checks -------------------------------------------------------------------
    def check(self, generator: Generator) -> None:
        self.check_layers(generator)  # Z, W or W+: the hyperplane lives where the samples do
        if not self.factors:
            raise UserError("InterFaceGAN needs at least one factor: method.factors=[scale]")
        unknown = set(self.conditions) - set(self.factors)
        if unknown:
            raise UserError(f"conditions name {sorted(unknown)}, which are not among factors "
                             f"{self.factors}")
        if not 0 < self.ratio <= 0.5 or not 0 < self.val_share < 1:
            raise UserError(f"ratio must be in (0, 0.5] and val_share in (0, 1), got "
                             f"{self.ratio} and {self.val_share}")
        per_split = math.floor(self.per_end * self.val_share)
        if per_split < 2 or self.per_end - per_split < 2:
            raise UserError(
                f"too few samples for the split: {self.samples} samples x ratio {self.ratio} = "
                f"{self.per_end} a side, {per_split} of them for validation; raise "
                f"samples to at least {math.ceil(4 / (self.ratio * min(self.val_share, 1 - self.val_share)))}")
        self.assessors = load_assessors(generator, self.regressor_choice, "InterFaceGAN's scores", self.fitted)

    # ---- statistics: the extremes of each factor's scores -------------------------------
    def init_stats(self, generator: Generator) -> Stats:
        f, k, d, dev = len(self.fitted), self.per_end, generator.latent_dim, generator.device
        for a in self.assessors:
            a.to(dev)
        return {"top_scores": torch.full((f, k), -math.inf, device=dev),
                "top_latents": torch.zeros(f, k, d, device=dev),
                "bottom_scores": torch.full((f, k), math.inf, device=dev),
                "bottom_latents": torch.zeros(f, k, d, device=dev)}

    def scores(self, generator: Generator, latent: torch.Tensor, y=None) -> torch.Tensor:
        images = generator(latent, y)
        return torch.stack([a(images) for a in self.assessors])  # F x N

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        latent = batch["latent"]
        s = self.scores(generator, latent, batch.get("y"))
        codes = (latent[:, 0] if latent.ndim == 3 else latent)[None].expand(len(self.fitted), -1, -1)
        for end, largest in (("top", True), ("bottom", False)):
            stats[f"{end}_scores"], stats[f"{end}_latents"] = keep_extremes(
                stats[f"{end}_scores"], stats[f"{end}_latents"], s, codes, largest)

    def reduced_stats(self, strategy) -> Stats:
        """The global extremes: every process's buffers gathered and merged."""
        return merged_extremes(strategy, self.stats, (("top", True), ("bottom", False)))

    # ---- the SVMs -----------------------------------------------------------------------
    def solve(self, generator: Generator, stats: Stats) -> tuple[BasisDirections, dict[str, float]]:
        normals, metrics = [], {}
        k = self.per_end
        n_val = math.floor(k * self.val_share)
        order = torch.randperm(k, generator=torch.Generator().manual_seed(SPLIT_SEED))
        val, train = order[:n_val], order[n_val:]
        self.svms = []
        for i, name in enumerate(self.fitted):
            pos, neg = stats["top_latents"][i].cpu(), stats["bottom_latents"][i].cpu()
            x_train = torch.cat([pos[train], neg[train]])
            y_train = torch.cat([torch.ones(len(train)), torch.zeros(len(train))])
            w, b = linear_svm(x_train, y_train, self.svm_c)
            x_val = torch.cat([pos[val], neg[val]]).double()
            y_val = torch.cat([torch.ones(n_val), torch.zeros(n_val)])
            metrics[f"{name}/val_accuracy"] = float(((x_val @ w + b > 0).float() == y_val).float().mean())
            midpoint = float(stats["top_scores"][i].max() + stats["bottom_scores"][i].min()) / 2
            self.svms.append((w, b, float(stats["bottom_scores"][i].max()),
                              float(stats["top_scores"][i].min()), midpoint))
            normals.append((w / w.norm()).float())
        normals = torch.stack(normals)
        rows = []
        for name in self.factors:
            v = normals[self.fitted.index(name)]
            others = self.conditions.get(name)
            if others:
                v = condition(v, normals[[self.fitted.index(o) for o in others]])
            rows.append(v)
        directions = BasisDirections.of(torch.stack(rows), layers=self.edit_layers(generator))
        directions.values.copy_(torch.tensor([metrics[f"{f}/val_accuracy"] for f in self.factors]))
        return directions, metrics

    def finish(self, module) -> None:
        super().finish(module)
        # Accuracy on held-out latents whose scores lie between the extremes, every process.
        batches = self.held_out_batches(module)
        if not batches:
            return
        counts = torch.zeros(len(self.fitted), 2, dtype=torch.float64, device=module.device)
        for batch in batches:
            latent = batch["latent"]
            s = self.scores(module.generator, latent, batch.get("y"))
            codes = (latent[:, 0] if latent.ndim == 3 else latent).double().cpu()
            for i, (w, b, low, high, midpoint) in enumerate(self.svms):
                middle = (s[i] > low) & (s[i] < high)
                predicted = (codes @ w + b > 0)
                truth = (s[i] >= midpoint).cpu()
                keep = middle.cpu()
                counts[i, 0] += (predicted[keep] == truth[keep]).sum()
                counts[i, 1] += keep.sum()
        counts = module.trainer.strategy.reduce(counts, reduce_op="sum")
        for i, name in enumerate(self.fitted):
            if counts[i, 1] > 0:
                self.result["metrics"][f"{name}/remaining_accuracy"] = float(counts[i, 0] / counts[i, 1])
