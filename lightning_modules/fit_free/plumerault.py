"""Plumerault, Le Borgne, Hudelot, "Controlling generative models with continuous factors of
variations", ICLR 2020.

A known image edit T_t (a shift of t pixels, a zoom of 2^t, a brightness step t) is followed in
latent space by inverting the generator on edited images, and a direction is fitted to the
resulting trajectories:

    z_(k+1) = argmin_{||z|| <= r} d_blur(m * G(z), m * T_t(k+1)(G(z0)))   (Adam from z_k)
    (u, g)  = argmin_{||u|| = 1, g increasing} sum_i,k (g(<u, z_i,k>) - g(<u, z_i,0>) - t_k)^2

1. Trajectories: for each latent z0 of the stream and strengths t1 < t2 < ... on both sides of
   0, the image T_t(G(z0)) is inverted with ``editing.inversion.invert``, each point
   warm-started from the previous one (a large t inverted from scratch lands elsewhere). The
   error is blurred (a low-pass error: the generator cannot draw every pixel of an edited
   image), taken on the edit's valid region only (``m_t``, the mask of editing/edits.py),
   and in Z the latent stays in the ball ``||z|| <= radius * sqrt(d)`` (the prior's shell is at
   about sqrt(d); far outside it the generator draws what it never learned).
2. The worst-reconstructed share of the trajectories (``drop``, a decile; by their mean
   inversion error) is dropped: an edit the generator cannot follow (a shape pushed past the
   world's border) says nothing about the direction.
3. The fit: a unit u and a monotone piecewise-linear g (increasing by construction: positive
   slopes, softplus of free parameters, between knots fixed at the quantiles of the baseline's
   projections), by full-batch L-BFGS in float64 from the baseline (deterministic: no random
   draw), with a mild ridge on the effective weights (``ridge``; see
   ``fit_monotone_direction``). The factor of G(z0) is unknown, so each trajectory is anchored
   at its own start: ``model: relative`` fits g(<u, z_t>) - g(<u, z0>) = t (the model of t ~
   g(<u, z_t>) with the unknown factor of each start removed, as the authors' code fits it).
   ``model: absolute`` fits t ~ g(<u, z_t>) + b as written, pooling every start at t = 0.
4. The baseline, not the method: the mean difference ``mean (z_t - z0) / t``, normalised.

The directions file holds the fitted direction alone (a BasisDirections with one vector). Its
unit of alpha is the edit's: ``scales[0]`` is the latent distance along u per edit unit
(pixels for shifts, log2 of the zoom, brightness in [0, 1] image units) under the fitted g,
averaged over the trajectories' starts, and ``alpha_range`` is the largest strength. The
baseline, g (knots, slopes) and the trajectories' summary are written beside it to
``plumerault_fit.pt`` and kept in the checkpoint (the callback's result).

Metrics, on held-out latents after the solve: each latent is moved along a direction to fixed
coordinates ``z = z0 - <v, z0> v + (m + a sd) v`` (a in [-eval_range, eval_range] standard
deviations ``sd`` of the starts' projections around their mean ``m``: the traversal of the
paper's evaluation, where a direction that encodes the factor sets it whatever z0 was) and the
edited factor is read (the regressor's x, y or scale; the mean pixel value for brightness):
the share of latents whose factor rises monotonically with a (up to ``monotone_tol``), the mean
Spearman correlation, the spread (the factor's standard deviation across latents at each a,
averaged over a) and the effect (the mean factor's change end to end), for u and the baseline.

Streaming and DDP: a latent's trajectory is its own, so the statistics are per-sample rows of
fixed-size buffers (``samples`` rows) that each process fills at the rows of its stream
positions; the reduction across processes (a sum of buffers zero elsewhere) gathers every row
in stream order, so any number of processes gives the one-process trajectories and fit.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from common.images import log_image, save_line_plot
from common.io import atomic_torch_save
from directions import BasisDirections
from editing.edits import EDIT_FACTORS, get_edit
from editing.inversion import invert, norm_ball
from generators.base import Generator
from lightning_modules.base import regressor_path
from lightning_modules.fit_free.base import FitFreeMethod, Stats
from metrics.distances import ImageDistance
from regressors.attributes import load_regressor

log = logging.getLogger("fit_free")

# The edits with one continuous parameter whose strengths add up (t and t' make t + t'), and
# what a unit of t is. Zoom's t is log2 of the factor, so that -t undoes +t.
EDIT_UNITS = {"shift_x": "pixels", "shift_y": "pixels", "zoom": "log2 zoom",
              "scale": "log2 scale", "brightness": "brightness ([0, 1] image units)"}
DEFAULT_STRENGTHS = {"shift_x": [1.0, 2.0, 3.0, 4.0], "shift_y": [1.0, 2.0, 3.0, 4.0],
                     "zoom": [0.1, 0.2, 0.3, 0.4], "scale": [0.1, 0.2, 0.3, 0.4],
                     "brightness": [0.05, 0.1, 0.15, 0.2]}
MODELS = ("relative", "absolute")


def edit_parameter(edit: str, t: torch.Tensor) -> torch.Tensor:
    """The parameter of ``get_edit(edit).apply`` for strengths ``t`` (zoom and scale: 2^t)."""
    return torch.exp2(t) if edit in ("zoom", "scale") else t


# ---- the monotone fit ---------------------------------------------------------------------
class MonotonePiecewiseLinear(nn.Module):
    """An increasing piecewise-linear function of one variable: slopes ``softplus(raw) > 0`` on
    the segments between fixed ``knots`` (J + 1 of them, J pieces), extended linearly with the
    end slopes, plus a ``bias``:

        g(s) = b + sum_j c_j clamp(s - k_j, 0, k_j+1 - k_j) + c_0 min(s - k_0, 0)
                 + c_J-1 max(s - k_J, 0)

    Increasing whatever the parameters, so an optimiser cannot leave the monotone family.
    """

    def __init__(self, knots: torch.Tensor, slope: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        knots = knots.double()
        if knots.ndim != 1 or knots.numel() < 2 or not bool((knots[1:] > knots[:-1]).all()):
            raise UserError("knots must be at least 2 strictly increasing values")
        self.register_buffer("knots", knots)
        raw = math.log(math.expm1(max(float(slope), 1e-8)))  # softplus^-1
        self.raw = nn.Parameter(torch.full((knots.numel() - 1,), raw, dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(float(bias), dtype=torch.float64))

    @property
    def slopes(self) -> torch.Tensor:
        return F.softplus(self.raw)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        k, c = self.knots, self.slopes
        inside = (s[..., None] - k[:-1]).clamp(min=0).minimum(k[1:] - k[:-1])
        return (self.bias + (inside * c).sum(-1) + c[0] * (s - k[0]).clamp(max=0)
                + c[-1] * (s - k[-1]).clamp(min=0))

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``g^-1(y)``: g is strictly increasing and piecewise linear, so segment by segment."""
        k, c = self.knots, self.slopes
        at_knots = self.forward(k)
        y = y.to(k)
        seg = (torch.searchsorted(at_knots, y.contiguous(), right=True) - 1).clamp(0, len(c) - 1)
        return k[seg] + (y - at_knots[seg]) / c[seg]


@dataclass
class MonotoneFit:
    """What ``fit_monotone_direction`` found: the unit direction, g, the R^2 of the fit
    (1 - mean squared residual / the spread of t: its variance, or its mean square in the
    relative model, where t = 0 is every trajectory's start) and the final objective."""

    direction: torch.Tensor
    g: MonotonePiecewiseLinear
    r2: float
    loss: float


def fit_monotone_direction(z: torch.Tensor, t: torch.Tensor, init: torch.Tensor,
                           anchors: torch.Tensor | None = None, knots: int = 6,
                           steps: int = 300, smooth: float = 1e-3, ridge: float = 0.0
                           ) -> MonotoneFit:
    """A unit ``u`` and an increasing piecewise-linear ``g`` with

        t ~ g(<u, z>) - g(<u, anchor>)      (``anchors`` given: each t relative to its start)
        t ~ g(<u, z>)                        (``anchors`` None: g has a free bias)

    minimising the mean squared error over the spread of t (see MonotoneFit), plus ``smooth``
    times the squared changes of g's slope between neighbouring pieces (relative to its mean
    slope: a piece with few points stays close to its neighbours), plus ``ridge`` times g's
    mean squared slope: the slopes times u are the fit's effective weights, so this is a ridge
    regression's penalty (scaled so that ridge = 1 weighs like an average latent axis). A plain
    least-squares fit of t turns u away from every axis along which the trajectories wander
    without following t (it predicts t, it does not follow the edit); the ridge pulls it back
    towards the t-weighted mean difference, which it reaches as ridge grows.

    Full-batch L-BFGS in float64 from ``init`` (the baseline direction), with g's knots at the
    quantiles of the projections on ``init`` and its slopes at the least-squares slope there:
    deterministic, no random draw.

    Args:
        z: ``M x d`` points; t: ``M`` values; init: ``d`` starting direction (its sign sets
            which way t grows: the fit keeps g increasing and lets u turn);
        anchors: ``M x d`` starting points (None: the absolute model);
        knots: pieces of g; steps: L-BFGS iterations; smooth, ridge: the penalties' weights.
    """
    z, t = z.double(), t.double()
    anchors = None if anchors is None else anchors.double()
    u0 = init.double() / init.double().norm().clamp_min(1e-12)
    s0 = z @ u0
    a0 = None if anchors is None else anchors @ u0
    # Knots at the quantiles of every projection the fit reads (points and starts), widened a
    # little so that the end pieces hold points too.
    every = s0 if a0 is None else torch.cat([s0, a0])
    qs = torch.linspace(0, 1, knots + 1, dtype=torch.float64)
    edges = torch.quantile(every, qs)
    span = float(edges[-1] - edges[0]) or 1.0
    edges[0] -= 0.01 * span
    edges[-1] += 0.01 * span
    for j in range(1, len(edges)):  # repeated values (a cluster of points) pulled apart
        edges[j] = torch.maximum(edges[j], edges[j - 1] + 1e-6 * span)
    # Least-squares line through the baseline's projections: g's starting slope and bias.
    x = s0 - (a0 if a0 is not None else s0.mean())
    centred_t = t if a0 is not None else t - t.mean()
    slope = float((x * centred_t).sum() / (x * x).sum().clamp_min(1e-12))
    if slope <= 0:
        raise UserError("the trajectories do not move along the baseline direction as t grows "
                         "(its least-squares slope is not positive): the inversions did not "
                         "follow the edit; raise method.steps or lower the strengths")
    bias = 0.0 if a0 is not None else float(t.mean() - slope * (s0.mean() - edges[0]))
    g = MonotonePiecewiseLinear(edges, slope, bias)
    v = nn.Parameter(u0.clone())
    params = [v, g.raw] + ([g.bias] if anchors is None else [])
    var_t = (t.var(unbiased=False) if anchors is None else (t * t).mean()).clamp_min(1e-12)
    # Ridge on the effective weights c_j u: scaled by the mean eigenvalue of the design's
    # second moments, so that ridge = 1 weighs as much as an average latent axis.
    design = (z - anchors) if anchors is not None else (z - z.mean(0))
    ridge_unit = (design * design).sum(1).mean() / z.shape[1] / var_t
    opt = torch.optim.LBFGS(params, lr=1, max_iter=steps, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def objective(grad: bool = True):
        if grad:
            opt.zero_grad()
        u = v / v.norm()
        pred = g(z @ u) - (g(anchors @ u) if anchors is not None else 0.0)
        c = g.slopes
        loss = ((pred - t) ** 2).mean() / var_t
        if smooth and c.numel() > 1:
            loss = loss + smooth * ((c[1:] - c[:-1]) ** 2).sum() / c.mean() ** 2
        if ridge:
            loss = loss + ridge * ridge_unit * (c * c).mean()
        loss = loss + 1e-3 * (v.dot(v) - 1) ** 2  # the length of v is free: pin it near 1
        if grad:
            loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    with torch.no_grad():
        u = (v / v.norm()).detach()
        pred = g(z @ u) - (g(anchors @ u) if anchors is not None else 0.0)
        r2 = 1 - float(((pred - t) ** 2).mean() / var_t)
        loss = float(objective(grad=False))
    g.requires_grad_(False)
    return MonotoneFit(u, g, r2, loss)


# Hand-written: torchmetrics' spearman_corrcoef averages tied ranks (a flat row: 0, here 1) and adds 1e-6 (float32).
def spearman_rows(values: torch.Tensor) -> torch.Tensor:
    """Spearman's correlation of each row of ``values`` (``N x A``) with 0, 1, ..., A - 1."""
    a = values.shape[1]
    ranks = values.argsort(1).argsort(1).double()
    d = ranks - torch.arange(a, dtype=torch.float64, device=values.device)
    return 1 - 6 * (d * d).sum(1) / (a * (a * a - 1))


# ---- the method ---------------------------------------------------------------------------
class Plumerault(FitFreeMethod):
    """A latent direction for a known image edit, fitted to inversion trajectories.

    Args:
        edit: ``shift_x``, ``shift_y``, ``zoom``, ``scale`` (a zoom about the object's centre) or
            ``brightness`` (editing/edits.py).
        strengths: t1 < t2 < ... > 0, each used with both signs, in the edit's units (pixels,
            log2 zoom, brightness); null: the edit's default (``DEFAULT_STRENGTHS``).
        samples: trajectories (latents), all processes together.
        steps, lr: Adam steps and learning rate of the inversion of each trajectory point.
        distance: the inversion error, ``l2``, ``lap1`` or a sum (``ImageDistance.named``).
        blur_sigma: the Gaussian blur of both images in the error (pixels; 0: none).
        radius: Z only: the ball ``||z|| <= radius * sqrt(d)`` the latents stay in (null: none).
        drop: the share of trajectories dropped, the worst by mean inversion error, in [0, 1).
        model: ``relative`` (each trajectory anchored at its start) or ``absolute``.
        knots: pieces of the monotone g; fit_steps: L-BFGS iterations; smooth: g's slope
            smoothness weight; ridge: the ridge on the fit's weights (0: plain least squares;
            large: u tends to the t-weighted mean difference).
        regressor: reads the edited factor in the metrics (``auto``: the generator's; null:
            none, the factor metrics are left out except brightness's mean pixel value).
        eval_samples: held-out latents of the metrics, per process; eval_points, eval_range:
            the traversal's coordinates, in standard deviations along the direction;
            monotone_tol: a drop of the factor smaller than this still counts as monotone.
        inversion_batch: images inverted together (both signs of a trajectory count).
        alpha_range: |alpha| of grids and the evaluation, in edit units (null: the largest
            strength).
    """

    method_name = "plumerault"
    value_name = "fit R^2"

    def __init__(self, edit: str = "shift_x", strengths: Sequence[float] | None = None,
                 samples: int = 128, steps: int = 30, lr: float = 0.05, distance: str = "l2",
                 blur_sigma: float = 1.0, radius: float | None = 1.5, drop: float = 0.1,
                 model: str = "relative", knots: int = 6, fit_steps: int = 300,
                 smooth: float = 1e-3, ridge: float = 1.0, regressor: str | None = "auto",
                 eval_samples: int = 128, eval_points: int = 9, eval_range: float = 2.0,
                 monotone_tol: float = 0.01, inversion_batch: int = 128,
                 alpha_range: float | None = None) -> None:
        if edit not in EDIT_UNITS:
            known = ", ".join(EDIT_UNITS)
            raise UserError(f"Plumerault's method follows an edit with one additive strength: "
                             f"edit={edit!r} is not one of {known} (method.edit)")
        strengths = DEFAULT_STRENGTHS[edit] if strengths is None else strengths
        try:
            s = [float(v) for v in strengths]
        except (TypeError, ValueError):
            raise UserError(f"strengths must be a list of numbers such as [1, 2, 3, 4], got "
                             f"{strengths!r}") from None
        if not s or s[0] <= 0 or any(b <= a for a, b in zip(s, s[1:])):
            raise UserError(f"strengths must be positive and strictly increasing (each is used "
                             f"with both signs; the trajectory goes out step by step), got {s}: "
                             f"e.g. {DEFAULT_STRENGTHS[edit]}")
        if edit == "brightness" and s[-1] >= 1:
            raise UserError(f"brightness strengths are in [0, 1] image units: {s[-1]:g} would "
                             "turn every pixel white or black; use values below 1")
        if samples < 1:
            raise UserError(f"samples must be >= 1 (trajectories to fit), got {samples}")
        if not 0 <= drop < 1:
            raise UserError(f"drop is the share of trajectories dropped, in [0, 1); got {drop}")
        if steps < 1 or lr <= 0 or blur_sigma < 0:
            raise UserError(f"the inversion needs steps >= 1, lr > 0 and blur_sigma >= 0; got "
                             f"steps={steps}, lr={lr}, blur_sigma={blur_sigma}")
        if radius is not None and radius <= 0:
            raise UserError(f"radius is the latent ball's radius in units of sqrt(latent size): "
                             f"positive, or null for no ball; got {radius}")
        if model not in MODELS:
            raise UserError(f"model={model!r}: use one of {MODELS}")
        if knots < 1 or fit_steps < 1 or smooth < 0 or ridge < 0:
            raise UserError(f"the fit needs knots >= 1, fit_steps >= 1, smooth >= 0 and ridge "
                             f">= 0; got knots={knots}, fit_steps={fit_steps}, smooth={smooth}, "
                             f"ridge={ridge}")
        if eval_points < 2 or eval_range <= 0 or eval_samples < 0 or monotone_tol < 0:
            raise UserError(f"the metrics need eval_points >= 2, eval_range > 0, eval_samples "
                             f">= 0 and monotone_tol >= 0; got eval_points={eval_points}, "
                             f"eval_range={eval_range}, eval_samples={eval_samples}, "
                             f"monotone_tol={monotone_tol}")
        if inversion_batch < 1:
            raise UserError(f"inversion_batch must be positive, got {inversion_batch}")
        super().__init__(samples=samples, alpha_range=s[-1] if alpha_range is None else alpha_range)
        self.edit_name, self.edit, self.strengths = edit, get_edit(edit), s
        self.image_distance = ImageDistance.named(distance, blur_sigma=blur_sigma)
        self.steps, self.lr, self.distance_name, self.blur_sigma = steps, lr, distance, blur_sigma
        self.radius, self.drop, self.model = radius, drop, model
        self.knots, self.fit_steps, self.smooth, self.ridge = knots, fit_steps, smooth, ridge
        self.regressor_choice, self.eval_samples = regressor, eval_samples
        self.eval_points, self.eval_range, self.monotone_tol = eval_points, eval_range, monotone_tol
        self.inversion_batch = inversion_batch
        # The trajectory's points: t = -t_K .. -t_1, t_1 .. t_K (the start, t = 0, comes first
        # in the latents buffer).
        self.t = torch.tensor([-v for v in reversed(s)] + s, dtype=torch.float64)
        self.factor: str | None = EDIT_FACTORS.get(edit)
        self.regressor = None
        self.fit: dict[str, Any] = {}
        self._starts: torch.Tensor | None = None  # the kept starts, for the metrics' coordinates
        self._offset: int | None = None

    def describe(self) -> dict[str, Any]:
        return dict(super().describe(), edit=self.edit_name, strengths=self.strengths,
                    steps=self.steps, lr=self.lr, distance=self.distance_name,
                    blur_sigma=self.blur_sigma, radius=self.radius, drop=self.drop,
                    model=self.model, knots=self.knots, fit_steps=self.fit_steps,
                    smooth=self.smooth, ridge=self.ridge, regressor=self.regressor_choice,
                    eval_samples=self.eval_samples, eval_points=self.eval_points,
                    eval_range=self.eval_range, monotone_tol=self.monotone_tol)

    # ---- input checks -------------------------------------------------------------------
    def check(self, generator: Generator) -> None:
        if generator.space == "w+":
            raise UserError("Plumerault's method fits one direction for the whole latent: run "
                             "it with generator.space=z or w")
        if self.edit_name.startswith("shift") and self.strengths[-1] >= generator.resolution / 2:
            raise UserError(f"a shift of {self.strengths[-1]:g} px leaves less than half of a "
                             f"{generator.resolution} px image valid: use strengths below "
                             f"{generator.resolution / 2:g}")
        path = regressor_path(generator, self.regressor_choice)
        if self.factor is not None and path is None:
            log.warning("plumerault: no regressor (generator %r names none): the metrics of %s "
                        "along the direction are left out; pass method.regressor="
                        "<regressor.pt> to get them", generator.name, self.factor)
        if self.factor is not None and path is not None:
            self.regressor = load_regressor(path)
            if self.factor not in self.regressor.factor_names:
                raise UserError(f"the regressor {path} has no factor {self.factor!r} (the one "
                                 f"edit {self.edit_name!r} moves); its factors: "
                                 f"{self.regressor.factor_names}")

    # ---- statistics: every trajectory, one row each -------------------------------------
    def init_stats(self, generator: Generator) -> Stats:
        n, p, d, dev = self.samples, len(self.t), generator.latent_dim, generator.device
        return {"latents": torch.zeros(n, p + 1, d, device=dev),
                "distance": torch.zeros(n, p, device=dev),
                "psnr": torch.zeros(n, p, device=dev),
                "filled": torch.zeros(n, device=dev)}

    def step(self, module, batch: dict) -> bool:
        # This batch holds the stream's latents seen + rank * n ... (see FitFreeMethod.step):
        # their rows in the buffers.
        self._offset = self.seen + module.global_rank * batch["latent"].shape[0]
        return super().step(module, batch)

    def trajectories(self, generator: Generator, z0: torch.Tensor, y: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents ``N x (P + 1) x d`` (the start, then t = -t_K .. t_K), inversion distances and
        PSNR ``N x P`` of the recursive trajectories of ``z0``: both signs go out together,
        each point warm-started from the previous one."""
        n, k = z0.shape[0], len(self.strengths)
        with torch.no_grad():
            x0 = generator(z0, y)
        project = (norm_ball(self.radius * math.sqrt(generator.latent_dim))
                   if self.radius is not None and generator.space == "z" else None)
        both_x, both_y = torch.cat([x0, x0]), None if y is None else torch.cat([y, y])
        current = torch.cat([z0, z0])
        sign = torch.cat([torch.ones(n), -torch.ones(n)]).to(x0)
        points = [None] * (2 * k)
        distance = torch.zeros(n, 2 * k, device=x0.device)
        psnr = torch.zeros_like(distance)
        for i, strength in enumerate(self.strengths):
            t = sign * strength
            with torch.no_grad():
                target, mask = self.edit.apply(both_x, edit_parameter(self.edit_name, t))
            found = invert(generator, target, distance=self.image_distance, steps=self.steps,
                           lr=self.lr, starts=1, init=current, y=both_y, mask=mask,
                           project=project, batch_size=self.inversion_batch, progress=False)
            current = found.latents.detach()
            # columns: t = -t_K .. -t_1 (k - 1 - i for -t_i), then t_1 .. t_K (k + i)
            points[k + i], points[k - 1 - i] = current[:n], current[n:]
            distance[:, k + i], distance[:, k - 1 - i] = found.distance[:n], found.distance[n:]
            psnr[:, k + i], psnr[:, k - 1 - i] = found.psnr[:n], found.psnr[n:]
        return torch.stack([z0] + points, 1), distance, psnr

    def accumulate(self, generator: Generator, batch: dict, stats: Stats) -> None:
        z0 = batch["latent"]
        start = self._offset if self._offset is not None else int(stats["filled"].sum())
        self._offset = None
        rows = slice(start, start + z0.shape[0])
        log.info("plumerault: trajectories of latents %d-%d (%d points x %d inversion steps)",
                 rows.start, rows.stop - 1, len(self.t), self.steps)
        latents, distance, psnr = self.trajectories(generator, z0, batch.get("y"))
        stats["latents"][rows] = latents.to(stats["latents"])
        stats["distance"][rows] = distance.to(stats["distance"])
        stats["psnr"][rows] = psnr.to(stats["psnr"])
        stats["filled"][rows] = 1.0

    # ---- the solve ----------------------------------------------------------------------
    def kept(self, stats: Stats) -> torch.Tensor:
        """Indices of the trajectories kept: all but the ``drop`` share with the largest mean
        inversion distance (ties: the later one goes)."""
        n = stats["distance"].shape[0]
        score = stats["distance"].double().mean(1).cpu()
        order = torch.sort(score, stable=True).indices
        return order[: n - math.floor(self.drop * n)].sort().values

    @staticmethod
    def along(vector: torch.Tensor, z: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> float:
        """The latent distance along ``vector`` per unit of t: least squares of <v, z - z0> on t."""
        moved = (z - z0) @ vector
        return float((moved * t).sum() / (t * t).sum())

    def solve(self, generator: Generator, stats: Stats) -> tuple[BasisDirections, dict[str, float]]:
        if int(stats["filled"].sum()) != self.samples:
            raise RuntimeError(f"plumerault: {int(stats['filled'].sum())} of {self.samples} "
                               "trajectories were filled before the solve")
        keep = self.kept(stats)
        latents = stats["latents"].double().cpu()[keep]          # n x (P + 1) x d
        n, p = latents.shape[0], len(self.t)
        z0, points = latents[:, 0], latents[:, 1:]
        t = self.t[None].expand(n, -1)
        steps = ((points - z0[:, None]) / t[..., None]).reshape(-1, points.shape[-1])
        baseline = steps.mean(0)
        if float(baseline.norm()) < 1e-8:
            raise UserError("the trajectories do not move: the mean difference (z_t - z0) / t "
                             "is zero; raise method.steps or lr")
        baseline = baseline / baseline.norm()
        flat_z, flat_t = points.reshape(-1, points.shape[-1]), t.reshape(-1)
        anchors = z0[:, None].expand(-1, p, -1).reshape(-1, z0.shape[-1])
        if self.model == "relative":
            fit = fit_monotone_direction(flat_z, flat_t, baseline, anchors, self.knots,
                                         self.fit_steps, self.smooth, self.ridge)
        else:  # the starts are points at t = 0
            fit = fit_monotone_direction(torch.cat([z0, flat_z]),
                                         torch.cat([flat_t.new_zeros(n), flat_t]), baseline,
                                         None, self.knots, self.fit_steps, self.smooth, self.ridge)
        u, g = fit.direction, fit.g
        # alpha in edit units: the distance along u that moves t by one under g, least squares
        # over every start and strength (g^-1(g(s0) + t) - s0 against t).
        s0 = z0 @ u
        moved = g.inverse(g(s0)[:, None] + t) - s0[:, None]
        scale = float((moved * t).sum() / (t * t).sum())
        baseline_scale = self.along(baseline, flat_z, anchors, flat_t)
        # The baseline's own model, a line: how much of t the best t ~ k <b, z_t - z0> explains.
        x = (flat_z - anchors) @ baseline
        line = x * float((x * flat_t).sum() / (x * x).sum().clamp_min(1e-12))
        baseline_r2 = 1 - float(((line - flat_t) ** 2).mean() / (flat_t ** 2).mean())
        psnr = stats["psnr"].double().cpu()
        kept_psnr = psnr[keep]
        dropped = torch.ones(psnr.shape[0], dtype=torch.bool)
        dropped[keep] = False
        slopes = g.slopes
        metrics = {"samples": float(self.samples), "kept": float(n),
                   "dropped_share": float(dropped.float().mean()),
                   "psnr_mean": float(kept_psnr.mean()), "psnr_min": float(kept_psnr.min()),
                   "psnr_far": float(kept_psnr[:, [0, -1]].mean()),
                   "psnr_dropped": float(psnr[dropped].mean()) if dropped.any() else float("nan"),
                   "fit_r2": fit.r2, "baseline_fit_r2": baseline_r2,
                   "cos_baseline": float(u @ baseline), "scale": scale,
                   "baseline_scale": baseline_scale,
                   "g_slope_ratio": float(slopes.max() / slopes.min())}
        directions = BasisDirections.of(u[None].float(), scales=torch.tensor([scale]),
                                        values=torch.tensor([fit.r2]))
        self._starts = z0.float()
        self.fit = {"direction": u.float(), "baseline": baseline.float(),
                    "baseline_scale": torch.tensor(baseline_scale), "knots": g.knots.float(),
                    "slopes": slopes.detach().float(), "bias": g.bias.detach().float(),
                    "t": self.t.float(), "kept": keep, "starts_mean": float(s0.mean()),
                    "model": self.model, "edit": self.edit_name,
                    "unit": EDIT_UNITS[self.edit_name]}
        return directions, metrics

    # ---- after the solve: the metrics on held-out latents, the plot, the fit file -------
    def factor_of(self, images: torch.Tensor) -> torch.Tensor | None:
        """The edited factor of each image: the regressor's, or the mean pixel value in [0, 1]
        for brightness; None when nothing can read it."""
        if self.factor is None:
            return (images.float().mean((1, 2, 3)) + 1) / 2
        if self.regressor is None:
            return None
        column = self.regressor.factor_names.index(self.factor)
        return self.regressor.predict(images)["values"][:, column]

    def coordinates(self, vector: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """The metrics' coordinates along ``vector``: ``eval_points`` values over
        +-``eval_range`` standard deviations of the starts' projections around their mean."""
        s = starts.double() @ vector.double().to(starts.device)
        grid = torch.linspace(-self.eval_range, self.eval_range, self.eval_points).double()
        return s.mean() + grid.to(s) * s.std()

    @torch.no_grad()
    def response_sums(self, generator: Generator, vector: torch.Tensor, coords: torch.Tensor,
                      batches: list[dict]) -> torch.Tensor | None:
        """Each latent moved to the coordinates ``coords`` along the unit ``vector``
        (``z - <v, z> v + c v``) and its factor read: the sums ``[count, monotone count,
        Spearman sum, sum of f at each coordinate, sum of f^2 at each]`` (float64; add them
        across processes), or None when nothing reads the factor."""
        a, dev = len(coords), generator.device
        v = vector.to(dev)
        sums = torch.zeros(3 + 2 * a, dtype=torch.float64, device=dev)
        for batch in batches:
            latent, y = batch["latent"].to(dev), batch.get("y")
            base = latent - (latent @ v)[:, None] * v
            walked = base[:, None] + coords.to(latent)[None, :, None] * v
            f = self.factor_of(generator(walked.flatten(0, 1),
                                         None if y is None else y.to(dev).repeat_interleave(a)))
            if f is None:
                return None
            f = f.double().view(-1, a)
            rising = ((f[:, 1:] - f[:, :-1]) >= -self.monotone_tol).all(1)
            head = torch.tensor([f.shape[0], float(rising.sum()), float(spearman_rows(f).sum())],
                                dtype=torch.float64, device=dev)
            sums += torch.cat([head, f.sum(0), (f * f).sum(0)])
        return sums

    @staticmethod
    def response_metrics(sums: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """Monotone share, mean Spearman, spread (mean over coordinates of the factor's
        standard deviation across latents) and effect from ``response_sums``; the mean
        factor at each coordinate."""
        a = (len(sums) - 3) // 2
        count = float(sums[0])
        mean = sums[3:3 + a] / count
        std = (sums[3 + a:] / count - mean ** 2).clamp_min(0).sqrt()
        return ({"monotone_share": float(sums[1] / count), "spearman": float(sums[2] / count),
                 "spread": float(std.mean()), "effect": float(mean[-1] - mean[0])},
                mean.float().cpu())

    def finish(self, module) -> None:
        super().finish(module)
        self.result["fit"] = self.fit
        if self.regressor is not None:
            self.regressor.to(module.device)
        held_out, left = [], self.eval_samples
        for batch in self.held_out_batches(module):
            if left <= 0:
                break
            held_out.append({k: v[:left] if torch.is_tensor(v) and v.ndim else v
                             for k, v in batch.items()})
            left -= held_out[-1]["latent"].shape[0]
        metrics = self.result["metrics"]
        for name in ("u", "baseline"):
            vector = self.fit["direction" if name == "u" else "baseline"]
            coords = self.coordinates(vector, self._starts)
            sums = self.response_sums(module.generator, vector, coords, held_out)
            if sums is None:  # no regressor: every process knows it alike, nothing to reduce
                break
            sums = module.trainer.strategy.reduce(sums, reduce_op="sum")
            if float(sums[0]) == 0:
                break
            values, mean = self.response_metrics(sums)
            metrics.update({f"{name}/{k}": v for k, v in values.items()})
            metrics["eval_samples"] = float(sums[0])
            self.fit[f"{name}_response"] = mean
        if module.trainer.global_rank == 0:
            grid = torch.linspace(-self.eval_range, self.eval_range, self.eval_points)
            self.save_outputs(module, grid)

    def save_outputs(self, module, grid: torch.Tensor) -> None:
        """The fit file and the response plot in the run directory (rank 0)."""
        root = Path(module.trainer.default_root_dir)
        atomic_torch_save({k: v for k, v in self.fit.items()}, root / "plumerault_fit.pt")
        if "u_response" not in self.fit:
            return
        factor = self.factor or "mean pixel value"
        path = save_line_plot(root / "plumerault_response.png", grid.tolist(),
                              [(self.fit["u_response"].tolist(), "o-", "u (monotone fit)"),
                               (self.fit["baseline_response"].tolist(), "s--",
                                "baseline (mean difference)")],
                              "coordinate along the direction (sd of the starts)",
                              f"mean {factor} (held-out latents)")
        log_image(module.loggers, "plumerault_response", path, step=module.trainer.global_step,
                  caption=f"plumerault {self.edit_name}: {factor} along u and the baseline")
