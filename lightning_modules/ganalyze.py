"""GANalyze: Goetschalckx, Andonian, Oliva, Isola, "GANalyze: Toward Visual Definitions of
Cognitive Image Properties", ICCV 2019.

One direction theta, learned so that a frozen assessor A (any scalar regressor output) rises
by alpha when the latent moves by alpha:

    min_theta  E_{z, alpha ~ U[-r, r]} ( A(G(T(z, alpha))) - (A(G(z)) + alpha) )^2,
    T(z, alpha) = (z + alpha theta) * ||z|| / ||z + alpha theta||

Each sample is rescaled to its own norm (the PyTorch reference rescales by the norm of the whole
batch: a defect not kept). The class-dependent variant learns theta(y) = W one_hot(y), one
vector per class of a conditional generator. At the end of fit the assessor's response is
measured over alpha (slope, R^2) with the side effects on the regressor's other factors.
The class-dependent set holds one theta for each class the generator draws (``generator.classes``
of a BigGAN, else every class) and records which class each belongs to (``direction_classes``
in the Directions file), so every tool gives a latent its own class's theta. A score
bounded by the range the generator draws cannot rise by alpha for samples near its ends, so the
measurement also gives the ceiling that bound allows and the slope where the target stays inside
it (``metrics.curves.bounded_response``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from common.errors import UserError
from common.images import log_image, save_line_plot
from common.seeds import ANALYSIS_SALT, TRAIN_SALT
from directions import VectorDirections, class_index, class_table
from generators.base import Generator
from lightning_modules.base import DirectionModule
from metrics.curves import bounded_response
from metrics.effects import mean_factor_changes
from regressors.attributes import AttributeAssessor, load_regressor


class GANalyze(DirectionModule):
    """A direction along which an assessor's score rises linearly.

    Args:
        generator: the frozen generator.
        regressor: the regressor file (a name in regressors/weights/ or a path) the assessor
            reads; its other factors measure the side effects. ``auto``: the one the
            generator's config names.
        factor: the regressor read used as the assessor A (see AttributeAssessor: a value, a
            class probability ``shape=0``, an angle component ``hue.cos``).
        alpha_range: r: alpha ~ U[-r, r] (0.5 in the paper).
        class_dependent: one theta per class (needs a conditional generator): per class the
            generator draws (a BigGAN's ``generator.classes``, else every class).
        init_scale: theta starts as init_scale times a Gaussian vector.
        init_seed: seed of theta's start.
        eval_alphas: points of the response curve measured at the end of fit.
        optimizer, traversal: see DirectionModule.
    """

    method_name = "ganalyze"
    frozen_submodules = ("generator", "assessor")

    def __init__(self, generator: Generator, regressor: str = "auto",
                 factor: str = "scale", alpha_range: float = 0.5, class_dependent: bool = False,
                 init_scale: float = 0.1, init_seed: int | None = 0, eval_alphas: int = 11,
                 optimizer: Callable | None = None, traversal: dict | None = None) -> None:
        if alpha_range <= 0:
            raise UserError(f"alpha_range must be positive, got {alpha_range}")
        if class_dependent and not generator.num_classes:
            raise UserError(f"class_dependent=true needs a conditional generator; {generator.name!r} "
                             "has no classes (num_classes is None): use class_dependent=false")
        super().__init__(generator, optimizer, traversal, alpha_range=alpha_range)
        self.save_hyperparameters(ignore=["generator", "optimizer"])
        model = load_regressor(self.regressor_path(regressor, needed_for="GANalyze's assessor"))
        self.assessor = AttributeAssessor(model, factor)
        if class_dependent:
            self.direction_classes = list(getattr(generator, "classes", None)
                                          or range(generator.num_classes))
            self.register_buffer("class_table", class_table(self.direction_classes), persistent=False)
        count = len(self.direction_classes) if class_dependent else 1
        self.directions = VectorDirections(generator.latent_dim, count, init_scale, keep_norm=True,
                                           init_seed=init_seed)

    # ---- the step -----------------------------------------------------------------------
    def draw(self, batch: dict, salt: int = TRAIN_SALT):
        z = batch["latent"]
        rng = self.batch_rng(batch, salt)
        n = z.shape[0]
        alpha = (2 * torch.rand(n, generator=rng) - 1).to(z) * self.hparams.alpha_range
        return z, alpha, batch.get("y")  # the batch's classes (conditional generators)

    def index(self, classes: torch.Tensor | None):
        """The theta each sample moves along: its class's (class-dependent), else the one."""
        return class_index(self.class_table, classes, 0) if self.hparams.class_dependent else 0

    def loss(self, batch: dict, salt: int = TRAIN_SALT) -> torch.Tensor:
        z, alpha, classes = self.draw(batch, salt)
        index = self.index(classes)
        with torch.no_grad():
            before = self.assessor(self.generator(z, classes))
        after = self.assessor(self.generator(self.directions.shift(z, index, alpha), classes))
        return ((after - (before + alpha)) ** 2).mean()

    # ---- the end of fit -----------------------------------------------------------------
    @torch.no_grad()
    def response(self, latents: torch.Tensor, classes: torch.Tensor | None = None) -> dict:
        """Each sample's assessor score and its change at each alpha of a grid, and the summed
        change of every factor of the regressor (the side effects)."""
        regressor = self.assessor.regressor
        r = self.hparams.alpha_range
        alphas = torch.linspace(-r, r, self.hparams.eval_alphas).tolist()
        index = self.index(classes)
        images0 = self.generator(latents, classes)
        base = regressor.predict(images0)
        score0 = self.assessor(images0)
        score_change = torch.zeros(latents.shape[0], len(alphas), device=latents.device)
        changes = torch.zeros(len(alphas), len(regressor.targets), device=latents.device,
                              dtype=torch.float64)
        for i, a in enumerate(alphas):
            images = self.generator(self.directions.shift(latents, index, a), classes)
            score_change[:, i] = self.assessor(images) - score0
            changes[i] = mean_factor_changes(regressor.targets, base,
                                             regressor.predict(images)) * latents.shape[0]
        return {"alphas": alphas, "score0": score0, "score_change": score_change,
                "changes": changes, "count": latents.shape[0]}

    @torch.no_grad()
    def final_evaluation(self) -> dict[str, float]:
        """The assessor's response over the held-out latents of every process: the slope and R^2
        of its mean change against alpha, the ceiling a score bounded by the data's range allows
        and the slope where the target stays in that range (``metrics.curves.bounded_response``),
        and each other factor's mean change at |alpha| = r."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return {}
        was_training = self.training
        self.eval()
        outs = []
        for batch in datamodule.val_dataloader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            z, _, classes = self.draw(batch, salt=ANALYSIS_SALT)
            outs.append(self.response(z, classes))
        self.train(was_training)
        alphas = torch.tensor(outs[0]["alphas"])
        # Every process holds the same number of held-out batches: gather the per-sample scores.
        score0 = self.all_gather(torch.cat([o["score0"] for o in outs])).reshape(-1).float().cpu()
        change = self.all_gather(torch.cat([o["score_change"] for o in outs]))
        change = change.reshape(-1, len(alphas)).float().cpu()
        changes = self.trainer.strategy.reduce(sum(o["changes"] for o in outs), reduce_op="sum")
        count = score0.shape[0]
        fit = bounded_response(alphas, score0, change)
        metrics = {"assessor_slope": fit["slope"], "assessor_intercept": fit["intercept"],
                   "assessor_r2": fit["r2"], "assessor_ceiling_slope": fit["ceiling_slope"],
                   "assessor_slope_in_range": fit["slope_in_range"],
                   "assessor_r2_in_range": fit["r2_in_range"],
                   "assessor_range_lo": fit["range_lo"], "assessor_range_hi": fit["range_hi"],
                   "eval_samples": count}
        ends = (changes[0] + changes[-1]).float().cpu() / (2 * count)
        for t, value in zip(self.assessor.regressor.targets, ends):
            metrics[f"change_at_r/{t.name}"] = float(value)
        if self.trainer.global_rank == 0:
            self.plot_response(alphas, fit)
        return metrics

    def plot_response(self, alphas: torch.Tensor, fit: dict) -> Path:
        path = save_line_plot(
            Path(self.trainer.default_root_dir) / "assessor_response.png", alphas,
            [(alphas, "--", "target: slope 1"),
             (fit["mean_change"], "o-", f"mean A(G(T(z, a))) - A(G(z)): slope {fit['slope']:.2f}"),
             (fit["mean_change_in_range"], "s-",
              f"where A(G(z)) + a stays in the data's range: slope {fit['slope_in_range']:.2f}"),
             (fit["ceiling"], ":", f"ceiling of a score bounded by that range: slope "
                                   f"{fit['ceiling_slope']:.2f}")],
            "alpha", f"change of {self.hparams.factor}")
        log_image(self.loggers, "assessor_response", path, step=self.trainer.global_step)
        return path
