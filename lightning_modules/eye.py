"""Enjoy Your Editing: Zhuang, Koyejo, Schwing, "Enjoy Your Editing: Controllable GANs for Image
Editing via Latent Space Navigation", ICLR 2021.

Directions T_k for attributes k = 1..K read by a frozen regressor R, trained together. Each
sample draws a target alpha_k ~ U(lo, hi) per attribute, and the step is how far the sample is
from it, so a sample already at its target does not move:

    eps_k = alpha_k - R_k(G(z)),        z' = z + sum_k eps_k T_k(z)

    loss = lambda_reg  * mean_k (R_k(G(z')) - alpha_k)^2            (or BCE on [0, 1] scores)
         + lambda_disc * softplus(-D(G(z')))                        (non-saturating, D frozen)
         + lambda_content * d(G(z), G(z'))                          (Lap1; LPIPS with weights)

D is the generator's own trained discriminator: a generator without one is refused (the
reference code used a freshly initialised D for StyleGAN2, a defect). With ``edit_probability``
below 1 an attribute is left out of a sample's edit with that chance and its target is then its
own current value: the edits of the others must leave it where it was.

Directions (``kind``): ``global`` (one vector per attribute), ``layers`` (one vector per attribute
and per layer of W+) or ``local`` (a vector plus a small network's correction at z).

At the end of fit, on held-out latents, each attribute is edited alone to targets drawn from
the same range: the correlation of R_k after the edit with the target (and its mean absolute
error), the change of every other factor of the regressor (side effects), the Lap1 content
change and the change of D's score are reported, and ``eye_response.png`` plots target against
measurement.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from common.errors import UserError
from common.images import log_image, pyplot
from common.seeds import ANALYSIS_SALT, TRAIN_SALT
from directions import LayerVectors, LocalDirections, VectorDirections
from generators.base import Generator
from lightning_modules.base import DirectionModule
from metrics.curves import pearson
from metrics.distances import ImageDistance, lap1
from metrics.effects import mean_factor_changes
from regressors.attributes import AttributeAssessor, load_regressor

KINDS = ("global", "layers", "local")


class EnjoyYourEditing(DirectionModule):
    """Directions that set attributes to a target value.

    Args:
        generator: the frozen generator (with its discriminator when ``lambda_disc`` > 0).
        factors: the attributes, as scalar reads of the regressor (``x``, ``scale``, ``shape=0``,
            ``hue.cos``; see AttributeAssessor): one direction each.
        regressor: the regressor file (``auto``: the generator's).
        kind: ``global``, ``layers`` (needs ``generator.space=w+``) or ``local``.
        target_range: alpha_k ~ U(lo, hi).
        edit_probability: the chance that an attribute is edited in a sample (1: all, as in
            the paper); otherwise it is held at its current value.
        regression_loss: ``mse`` or ``bce`` (scores in [0, 1]).
        lambda_reg, lambda_disc, lambda_content: the loss weights (the paper's 10 / 0.05 /
            0.05); 0 leaves a term out (the ablations).
        content: the content distance (``lap1``; ``lpips`` needs its weights on disk; a sum
            such as ``l2+lap1``).
        init_scale, init_seed, hidden: the directions' start (and the local network's width).
        optimizer, traversal: see DirectionModule.
    """

    method_name = "eye"
    frozen_submodules = ("generator", "regressor", "assessors", "discriminator", "content")

    def __init__(self, generator: Generator, factors: Sequence[str] = ("x", "scale"),
                 regressor: str = "auto", kind: str = "global",
                 target_range: Sequence[float] = (0.0, 1.0), edit_probability: float = 1.0,
                 regression_loss: str = "mse", lambda_reg: float = 10.0,
                 lambda_disc: float = 0.05, lambda_content: float = 0.05, content: str = "lap1",
                 init_scale: float = 0.1, init_seed: int | None = 0, hidden: int = 64,
                 optimizer: Callable | None = None, traversal: dict | None = None) -> None:
        factors = [str(f) for f in factors]
        lo, hi = (float(v) for v in target_range)
        problems = []
        if not factors or len(set(factors)) != len(factors):
            problems.append(f"factors must be a non-empty list of distinct attributes, got {factors}")
        if kind not in KINDS:
            problems.append(f"kind={kind!r}: use one of {KINDS}")
        if kind == "layers" and generator.space != "w+":
            problems.append(f"kind=layers moves each layer of W+ its own way: use generator.space=w+ "
                            f"({generator.name!r} is in {generator.space!r})")
        if not lo < hi:
            problems.append(f"target_range must be [lo, hi] with lo < hi, got {list(target_range)}")
        if not 0 < edit_probability <= 1:
            problems.append(f"edit_probability must be in (0, 1], got {edit_probability}")
        if regression_loss not in ("mse", "bce"):
            problems.append(f"regression_loss={regression_loss!r}: use mse or bce")
        if regression_loss == "bce" and not (0 <= lo and hi <= 1):
            problems.append("regression_loss=bce needs targets in [0, 1]: set target_range inside it")
        if min(lambda_reg, lambda_disc, lambda_content) < 0 or lambda_reg == 0:
            problems.append("the loss weights must be >= 0, with lambda_reg > 0 (got "
                            f"{lambda_reg} / {lambda_disc} / {lambda_content})")
        if lambda_disc > 0 and getattr(generator, "discriminator", None) is None:
            problems.append(
                f"lambda_disc={lambda_disc} needs the generator's own trained discriminator, and "
                f"{generator.name!r} has none (a random one would judge nothing): use a weights "
                "file that stores it (the built-in generators and rosinality checkpoints do; "
                "NVIDIA pickles with D), or set method.lambda_disc=0")
        if problems:
            raise UserError("; ".join(problems))
        super().__init__(generator, optimizer, traversal, alpha_range=hi - lo)
        self.save_hyperparameters(ignore=["generator", "optimizer"])
        self.factors, self.low, self.high = factors, lo, hi
        self.regressor = load_regressor(self.regressor_path(regressor, needed_for="EYE's attributes"))
        self.assessors = torch.nn.ModuleList(AttributeAssessor(self.regressor, f) for f in factors)
        self.discriminator = generator.discriminator if lambda_disc > 0 else None
        self.content = ImageDistance.named(content) if lambda_content > 0 else None
        d, k = generator.latent_dim, len(factors)
        if kind == "global":
            self.directions = VectorDirections(d, k, init_scale, keep_norm=False, init_seed=init_seed)
        elif kind == "layers":
            self.directions = LayerVectors(d, k, generator.num_layers, init_scale, init_seed)
        else:
            self.directions = LocalDirections(d, k, hidden, init_scale, init_seed)

    # ---- the step -----------------------------------------------------------------------
    def read(self, images: torch.Tensor) -> torch.Tensor:
        """The attributes ``N x K`` of images (one regressor pass)."""
        return self.read_outputs(self.regressor(images))

    def read_outputs(self, raw: torch.Tensor) -> torch.Tensor:
        """The attributes ``N x K`` from the regressor's raw outputs."""
        return torch.stack([a.read(raw) for a in self.assessors], dim=1)

    def read_all(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The attributes ``N x K`` and every factor's decoded prediction, from one pass."""
        raw = self.regressor(images)
        return self.read_outputs(raw), self.regressor.decode(raw)

    def edit(self, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z moved by eps_k along each direction k in turn (``eps``: ``N x K``)."""
        for k in range(eps.shape[1]):
            z = self.directions.shift(z, k, eps[:, k])
        return z

    def draw(self, batch: dict, salt: int = TRAIN_SALT):
        """Targets ``N x K`` ~ U(lo, hi) and which attributes each sample edits."""
        z = batch["latent"]
        rng = self.batch_rng(batch, salt)
        n, k = z.shape[0], len(self.factors)
        target = (self.low + (self.high - self.low) * torch.rand(n, k, generator=rng)).to(z)
        edited = torch.rand(n, k, generator=rng) < self.hparams.edit_probability
        # Every sample edits at least one attribute.
        edited[torch.arange(n), torch.randint(k, (n,), generator=rng)] = True
        return target, edited.to(z.device)

    def terms(self, batch: dict, salt: int = TRAIN_SALT) -> dict[str, torch.Tensor]:
        z, y = batch["latent"], batch.get("y")
        target, edited = self.draw(batch, salt)
        with torch.no_grad():
            before = self.generator(z, y)
            score0 = self.read(before)
        target = torch.where(edited, target, score0)
        after = self.generator(self.edit(z, target - score0), y)
        score = self.read(after)
        if self.hparams.regression_loss == "mse":
            regression = F.mse_loss(score, target)
        else:
            regression = F.binary_cross_entropy(score.clamp(1e-6, 1 - 1e-6), target)
        out = {"regression": regression}
        if self.discriminator is not None:
            out["disc"] = F.softplus(-self.discriminator(after)).mean()
        if self.content is not None:
            out["content"] = self.content(before, after).mean()
        return out

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.hparams
        weights = {"regression": h.lambda_reg, "disc": h.lambda_disc, "content": h.lambda_content}
        return sum(weights[name] * value for name, value in terms.items())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.terms(batch)
        loss = self.total(terms)
        self.check_finite(loss)
        n = batch["latent"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=n)
        return loss

    def loss(self, batch: dict, salt: int = TRAIN_SALT) -> torch.Tensor:
        return self.total(self.terms(batch, salt))

    # ---- the end of fit -----------------------------------------------------------------
    @torch.no_grad()
    def respond(self, z: torch.Tensor, y, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each attribute edited alone to ``target[:, k]``: the reads after (``N x K``), the
        mean change of every regressor factor (``K x F``), Lap1 and D's change (``K``)."""
        regressor = self.regressor
        before = self.generator(z, y)
        score0, base = self.read_all(before)
        d0 = self.generator_d(before)
        n, k = z.shape[0], len(self.factors)
        reached = torch.zeros(n, k, device=z.device)
        changes = torch.zeros(k, len(regressor.targets), dtype=torch.float64, device=z.device)
        content = torch.zeros(k, dtype=torch.float64, device=z.device)
        realism = torch.zeros(k, dtype=torch.float64, device=z.device)
        for j in range(k):
            eps = torch.zeros(n, k, device=z.device)
            eps[:, j] = target[:, j] - score0[:, j]
            after = self.generator(self.edit(z, eps), y)
            score, pred = self.read_all(after)
            reached[:, j] = score[:, j]
            changes[j] = mean_factor_changes(regressor.targets, base, pred) * n
            content[j] = lap1(before, after).double().sum()
            if d0 is not None:
                realism[j] = (self.generator_d(after) - d0).double().sum()
        return {"reached": reached, "score0": score0, "changes": changes, "content": content,
                "realism": realism}

    def generator_d(self, images: torch.Tensor) -> torch.Tensor | None:
        disc = getattr(self.generator, "discriminator", None)
        return None if disc is None else disc.to(images.device)(images).flatten()

    @torch.no_grad()
    def final_evaluation(self) -> dict[str, float]:
        """Per attribute, over the held-out latents of every process: Pearson r and mean
        absolute error of the read after the edit against the target, the mean change of every
        other factor, Lap1 and the change of D's score."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return {}
        was_training = self.training
        self.eval()
        targets, reached, score0 = [], [], []
        sums = None
        for batch in datamodule.val_dataloader():
            batch = {key: v.to(self.device) for key, v in batch.items()}
            target, _ = self.draw(batch, salt=ANALYSIS_SALT)
            out = self.respond(batch["latent"], batch.get("y"), target)
            targets.append(target)
            reached.append(out["reached"])
            score0.append(out["score0"])
            part = [out["changes"], out["content"], out["realism"]]
            sums = part if sums is None else [a + b for a, b in zip(sums, part)]
        self.train(was_training)
        k = len(self.factors)
        def gather(parts):
            return self.all_gather(torch.cat(parts)).reshape(-1, k).float().cpu()

        target, reached, score0 = gather(targets), gather(reached), gather(score0)
        changes, content, realism = (self.trainer.strategy.reduce(s, reduce_op="sum").float().cpu()
                                     for s in sums)
        count = target.shape[0]
        metrics: dict[str, float] = {"eval_samples": count}
        names = [t.name for t in self.regressor.targets]
        for j, factor in enumerate(self.factors):
            metrics[f"r/{factor}"] = pearson(target[:, j], reached[:, j])
            metrics[f"mae/{factor}"] = float((reached[:, j] - target[:, j]).abs().mean())
            metrics[f"r_unedited/{factor}"] = pearson(target[:, j], score0[:, j])
            metrics[f"lap1/{factor}"] = float(content[j]) / count
            if getattr(self.generator, "discriminator", None) is not None:
                metrics[f"d_change/{factor}"] = float(realism[j]) / count
            own = self.assessors[j].factor.split("=")[0].split(".")[0]
            for f, name in enumerate(names):
                if name != own:
                    metrics[f"side/{factor}/{name}"] = float(changes[j, f]) / count
        if self.trainer.global_rank == 0:
            self.plot_response(target, reached, metrics)
        return metrics

    def plot_response(self, target: torch.Tensor, reached: torch.Tensor, metrics: dict) -> Path:
        plt = pyplot()
        k = len(self.factors)
        fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.2), squeeze=False)
        for j, (ax, factor) in enumerate(zip(axes[0], self.factors)):
            ax.scatter(target[:, j], reached[:, j], s=4, alpha=0.5)
            ax.plot([self.low, self.high], [self.low, self.high], "k--", lw=1)
            ax.set_title(f"{factor}: r = {metrics[f'r/{factor}']:.3f}")
            ax.set_xlabel("target")
            ax.set_ylabel("after the edit")
        fig.tight_layout()
        path = Path(self.trainer.default_root_dir) / "eye_response.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        log_image(self.loggers, "eye_response", path, step=self.trainer.global_step)
        return path

