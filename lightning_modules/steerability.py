"""GAN Steerability: Jahanian, Chai, Isola, "On the 'steerability' of generative adversarial
networks", ICLR 2020.

A walk in latent space learned to reproduce a known image edit (editing/edits.py):

    min_walk  E_{z, alpha} || m(alpha) * ( G(walk(z, alpha)) - edit(G(z), alpha) ) ||

over the region m(alpha) the edit leaves valid (what a shift or zoom-out invents does not
count), with L2, the Laplacian-pyramid L1 or LPIPS (when its weights are on disk). The walk is
linear, z + alpha w (one w per slider: three for colour), or non-linear: a residual MLP applied
once per step, forward and backward nets apart, renormalised to ||z||. alpha is drawn as in the
paper (zoom half in, half out) and enters the walk in slider units (log2 of the zoom, the shift
as a fraction of a quarter image, degrees / 45). At the end of fit the matching factor read by
the regressor (x for shift_x, scale for zoom, ...) is measured along the walk: its linear fit,
the reachable range and where the walk saturates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from common.errors import UserError
from common.images import log_image, save_line_plot
from common.seeds import TRAIN_SALT
from directions import MLPWalk, VectorDirections
from editing.edits import EDIT_FACTORS, get_edit
from generators.base import Generator
from lightning_modules.base import DirectionModule
from metrics.curves import linear_fit
from metrics.distances import ImageDistance
from regressors.attributes import load_regressor

WALKS = ("linear", "mlp")
# The regressor factor each edit moves (for the end-of-fit measurement).


class Steerability(DirectionModule):
    """A latent walk that reproduces an image edit.

    Args:
        generator: the frozen generator.
        edit: ``zoom``, ``scale`` (a zoom about the object's own centre), ``shift_x``,
            ``shift_y``, ``rotate``, ``color`` (3 sliders), ``brightness``.
        walk: ``linear`` or ``mlp`` (one-slider edits).
        loss: ``l2``, ``lap1``, ``lpips`` (needs torchvision's weights on disk) or a sum such
            as ``l2+lap1`` (``metrics.distances.ImageDistance``).
        lpips_net: LPIPS backbone (``alex`` or ``vgg``).
        init_scale: the linear walk's w starts as init_scale times a Gaussian vector.
        hidden, step_size: the MLP walk's hidden width and step length (slider units).
        regressor: reads the edited factor at the end of fit (None: no measurement; ``auto``:
            the one the generator's config names).
        eval_points: points of that measurement over the slider range.
        init_seed, optimizer, traversal: see DirectionModule.
    """

    method_name = "steerability"
    frozen_submodules = ("generator", "image_distance", "_regressor")

    def __init__(self, generator: Generator, edit: str = "shift_x", walk: str = "linear",
                 loss: str = "l2", lpips_net: str = "alex", init_scale: float = 0.1,
                 hidden: int = 64, step_size: float = 0.25,
                 regressor: str | None = "auto", eval_points: int = 13,
                 init_seed: int | None = 0, optimizer: Callable | None = None,
                 traversal: dict | None = None) -> None:
        self_edit = get_edit(edit)
        if walk not in WALKS:
            raise UserError(f"unknown walk {walk!r}; use one of {WALKS}")
        if walk == "mlp" and self_edit.dims > 1:
            raise UserError(f"walk=mlp walks one slider; edit {edit!r} has {self_edit.dims}: use "
                             "walk=linear")
        super().__init__(generator, optimizer, traversal, alpha_range=self_edit.walk_range)
        self.save_hyperparameters(ignore=["generator", "optimizer"])
        self.edit = self_edit
        self.image_distance = ImageDistance.named(loss, lpips_net=lpips_net)
        if walk == "linear":
            self.directions = VectorDirections(generator.latent_dim, self_edit.dims, init_scale,
                                               keep_norm=False, init_seed=init_seed)
        else:
            self.directions = MLPWalk(generator.latent_dim, 1, hidden, step_size, init_seed)
        regressor = self.regressor_path(regressor)
        self._regressor = load_regressor(regressor) if regressor else None

    # ---- the step -----------------------------------------------------------------------
    def walk(self, z: torch.Tensor, slider: torch.Tensor) -> torch.Tensor:
        """Walk ``slider`` (N x dims, slider units) from z: one shift per slider."""
        for k in range(slider.shape[1]):
            z = self.directions.shift(z, k, slider[:, k])
        return z

    def distance(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-image distance on the valid region (the edit fills the rest with the
        background, which the walk is not asked to paint)."""
        return self.image_distance(x, target, mask)

    def loss(self, batch: dict, salt: int = TRAIN_SALT) -> torch.Tensor:
        z, y = batch["latent"], batch.get("y")
        rng = self.batch_rng(batch, salt)
        res = self.generator.resolution
        alpha = self.edit.sample(z.shape[0], rng, res).to(z)
        with torch.no_grad():
            target, mask = self.edit.apply(self.generator(z, y), alpha)
        x = self.generator(self.walk(z, self.edit.to_walk(alpha, res).to(z)), y)
        return self.distance(x, target, mask).mean()

    # ---- the end of fit -----------------------------------------------------------------
    @torch.no_grad()
    def final_evaluation(self) -> dict[str, float]:
        """The edited factor along the walk and along the edit itself, over the slider range
        (held-out latents, summed over processes): linear fit, reachable range, saturation."""
        factor = EDIT_FACTORS.get(self.hparams.edit)
        datamodule = self.trainer.datamodule
        if factor is None or self._regressor is None or datamodule is None:
            return {}
        regressor = self._regressor.to(self.device)
        f = regressor.factor_names.index(factor)
        # The sampled range: log2 zoom from 1/4 to 4, shifts of up to a quarter image.
        sliders = torch.linspace(-1.0, 1.0, self.hparams.eval_points) * self.edit.walk_range
        walked = torch.zeros(len(sliders), device=self.device, dtype=torch.float64)
        edited = torch.zeros_like(walked)
        count = torch.zeros((), device=self.device, dtype=torch.float64)
        was_training = self.training
        self.eval()
        for batch in datamodule.val_dataloader():
            z = batch["latent"].to(self.device)
            y = batch["y"].to(self.device) if "y" in batch else None
            x0 = self.generator(z, y)
            for i, s in enumerate(sliders.tolist()):
                slider = torch.full((z.shape[0], self.edit.dims), s, device=self.device)
                walked[i] += regressor.predict(self.generator(self.walk(z, slider), y))["values"][:, f].double().sum()
                alpha = self.edit.from_walk(slider, self.generator.resolution)
                edited[i] += regressor.predict(self.edit.apply(x0, alpha)[0])["values"][:, f].double().sum()
            count += z.shape[0]
        self.train(was_training)
        # Each total is reduced once (a DDP reduction sums in place).
        totals = self.trainer.strategy.reduce(torch.cat([walked, edited, count[None]]), reduce_op="sum")
        count = totals[-1]
        walked, edited = (totals[:len(sliders)] / count).float().cpu(), \
            (totals[len(sliders):-1] / count).float().cpu()
        metrics = steer_summary(sliders, walked, edited)
        metrics["eval_samples"] = int(count)
        if self.trainer.global_rank == 0:
            self.plot(sliders, walked, edited, factor)
        return metrics

    def plot(self, sliders: torch.Tensor, walked: torch.Tensor, edited: torch.Tensor,
             factor: str) -> Path:
        zoom = f" (log2 {self.hparams.edit})" if self.hparams.edit in ("zoom", "scale") else ""
        path = save_line_plot(
            Path(self.trainer.default_root_dir) / "steerability_response.png", sliders,
            [(edited, "o--", "the edit applied to G(z)"), (walked, "o-", "G(walk(z, alpha))")],
            f"{self.hparams.edit} slider{zoom}", f"mean {factor} (regressor)")
        log_image(self.loggers, "steerability_response", path, step=self.trainer.global_step)
        return path


def steer_summary(sliders: torch.Tensor, walked: torch.Tensor, edited: torch.Tensor) -> dict[str, float]:
    """Where the walk follows the slider: the reachable range (the walked factor's span), the
    slider values where it saturates (the step-to-step change falls below a quarter of the
    central change), and the R^2 of a linear fit inside that unsaturated range."""
    diffs = walked[1:] - walked[:-1]
    centre = len(diffs) // 2
    central = diffs[max(0, centre - 1): centre + 1].mean()
    lo, hi = 0, len(sliders) - 1
    for i in range(centre, -1, -1):  # walk out to the left from the centre
        if diffs[i] * central.sign() < 0.25 * central.abs():
            lo = i + 1
            break
    for i in range(centre, len(diffs)):
        if diffs[i] * central.sign() < 0.25 * central.abs():
            hi = i
            break
    slope, _, r2 = linear_fit(sliders[lo:hi + 1], walked[lo:hi + 1]) if hi - lo >= 2 else (0.0, 0.0, 0.0)
    _, _, r2_all = linear_fit(sliders, walked)
    return {"slope": slope, "r2_unsaturated": r2, "r2_full_range": r2_all,
            "saturates_below": float(sliders[lo]), "saturates_above": float(sliders[hi]),
            "reachable_min": float(walked.min()), "reachable_max": float(walked.max()),
            "edit_min": float(edited.min()), "edit_max": float(edited.max())}
