"""Text-guided direction learning: one direction per prompt, trained so that CLIP sees the edit
the text describes, while the image keeps its content and the latent stays where the generator's
samples are. In the spirit of StyleCLIP's latent optimisation (Patashnik et al., ICCV 2021),
but a global direction rather than one edit per image, and with StyleGAN-NADA's directional
CLIP loss (Gal et al., SIGGRAPH 2022):

    min_theta  E_{z, alpha ~ U[a0, r]}  [ 1 - cos(E_I(G(z + alpha theta_k)) - E_I(G(z)), dt_k)
                                          + lambda_c  d(G(z + alpha theta_k), G(z))
                                          + lambda_l  mean_i (alpha theta_k,i / sigma_i)^2 ]

    dt_k = normalise(E_T(prompt_k) - E_T(neutral))

Why the directional loss: the global loss 1 - cos(E_I(G(z')), E_T(prompt)) pulls every image
toward the one picture CLIP finds most like the prompt (a large shape becomes a large red circle
in the middle), so everything the prompt does not mention changes too; the directional loss
asks only that the *change* of the image embedding point the way the text changes, which leaves
the other attributes where they were. ``loss=global`` keeps the other for comparison.

d is the content distance (Lap1 by default; L2; LPIPS with its weights on disk); sigma is each
latent coordinate's standard deviation over the generator's samples, so the latent term is the
shift's mean square in standard deviations. Works in Z, W, W+ (``layers``) and S (``layers``: the
channels of those style layers).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from clip_models.base import ClipModel, check_words
from common.errors import UserError
from common.seeds import ANALYSIS_SALT, TRAIN_SALT
from directions import VectorDirections
from editing.styleclip import text_direction
from generators.base import Generator
from lightning_modules.base import DirectionModule
from metrics.distances import ImageDistance

LOSSES = ("directional", "global")


class TextGuided(DirectionModule):
    """A direction per prompt, learned through a CLIP.

    Args:
        generator: the frozen generator.
        clip: the CLIP (the ``clip`` config group).
        prompts: the texts, a direction each.
        neutral: the text of the unedited image (the directional loss's origin).
        loss: ``directional`` (StyleGAN-NADA's) or ``global`` (cosine to the prompt).
        templates: patterns the texts are averaged over (``"{}"``: the text itself).
        alpha_range, min_alpha: alpha ~ U[min_alpha, alpha_range] (the edit's strength).
        lambda_content: weight of the content distance ``content`` (ImageDistance weights).
        lambda_latent: weight of the latent term.
        layers: W+ or S only: the per-layer codes (style layers' channels in S) moved.
        init_scale, init_seed: theta starts as init_scale times a Gaussian vector.
        std_samples: samples the latent coordinates' standard deviations come from.
        optimizer, traversal: see DirectionModule.
    """

    method_name = "text_guided"
    frozen_submodules = ("generator", "clip")

    def __init__(self, generator: Generator, clip: ClipModel, prompts: Sequence[str] = ("a large shape",),
                 neutral: str = "a shape", loss: str = "directional", templates: Sequence[str] = ("{}",),
                 alpha_range: float = 3.0, min_alpha: float = 1.5, lambda_content: float = 1.0,
                 content: dict | None = None, lambda_latent: float = 0.1,
                 layers: str | list[int] | None = None, init_scale: float = 0.1,
                 init_seed: int | None = 0, std_samples: int = 2000,
                 optimizer: Callable | None = None, traversal: dict | None = None) -> None:
        prompts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        if not isinstance(clip, ClipModel):
            raise UserError("method.clip must be a CLIP (the clip config group: clip.path=, clip.arch=)")
        if not prompts or not all(p.strip() for p in prompts):
            raise UserError("method.prompts: give at least one text, such as [a large shape]")
        if loss not in LOSSES:
            raise UserError(f"method.loss={loss!r}: use one of {LOSSES}")
        if not 0 <= min_alpha < alpha_range:
            raise UserError(f"method.min_alpha={min_alpha} and method.alpha_range={alpha_range}: "
                            "need 0 <= min_alpha < alpha_range")
        if lambda_content < 0 or lambda_latent < 0:
            raise UserError("method.lambda_content and method.lambda_latent must be >= 0")
        if not templates or not all("{}" in t for t in templates):
            raise UserError(f"method.templates={list(templates)}: each needs a {{}} for the text")
        if layers is not None and generator.space not in ("w+", "s"):
            raise UserError(f"layers={layers!r} edits some per-layer codes only: it needs "
                            f"generator.space=w+ or s (the generator is in {generator.space!r})")
        check_words(clip, [neutral, *prompts])
        super().__init__(generator, optimizer, traversal, alpha_range=alpha_range)
        self.save_hyperparameters(ignore=["generator", "optimizer", "clip"])
        self.clip = clip.freeze()
        self.distance = ImageDistance(**(content or {"l2": 0.0, "lap1": 1.0}))
        channels = generator.style_channels(generator.layers(layers)) \
            if layers is not None and generator.space == "s" else None
        dim = generator.latent_dim if channels is None else len(channels)
        self.directions = VectorDirections(
            dim, len(prompts), init_scale, keep_norm=False, init_seed=init_seed,
            layers=None if layers is None or channels is not None else generator.layers(layers))
        if channels is not None:
            self.directions.on_channels(channels)
        with torch.no_grad():
            samples = generator.draw(std_samples, torch.Generator().manual_seed(0))[0].float().cpu()
            std = samples.std(0)
            if std.ndim == 2:  # W+: the layers' codes share a distribution
                std = std.mean(0)
            if channels is not None:
                std = std[channels]
        self.register_buffer("sigma", std.clamp_min(1e-6), persistent=False)
        targets = torch.stack([text_direction(clip, p, neutral, templates) for p in prompts])
        self.register_buffer("text_deltas", targets, persistent=False)  # K x E, for "directional"
        with torch.no_grad():
            embedded = torch.stack([F.normalize(clip.encode_text([t.format(p) for t in templates])
                                                .mean(0), dim=0) for p in prompts])
        self.register_buffer("text_targets", embedded.cpu(), persistent=False)  # for "global"

    def draw(self, batch: dict, salt: int = TRAIN_SALT):
        z = batch["latent"]
        rng = self.batch_rng(batch, salt)
        n = z.shape[0]
        k = torch.arange(n) % self.directions.num_directions
        low, high = self.hparams.min_alpha, self.hparams.alpha_range
        alpha = (low + (high - low) * torch.rand(n, generator=rng)).to(z)
        return z, k.to(z.device), alpha, batch.get("y")

    def terms(self, batch: dict, salt: int = TRAIN_SALT) -> dict[str, torch.Tensor]:
        z, k, alpha, classes = self.draw(batch, salt)
        with torch.no_grad():
            before = self.generator(z, classes)
            e0 = self.clip.encode_image(before)
        after = self.generator(self.directions.shift(z, k, alpha), classes)
        e1 = self.clip.encode_image(after)
        if self.hparams.loss == "directional":
            clip_term = 1 - F.cosine_similarity(e1 - e0, self.text_deltas[k], dim=1)
        else:
            clip_term = 1 - (e1 * self.text_targets[k]).sum(1)
        step = alpha[:, None] * self.directions.theta[k] / self.sigma
        return {"clip": clip_term.mean(), "content": self.distance(after, before).mean(),
                "latent": step.pow(2).mean(1).mean(),
                "target_gain": ((e1 - e0) * self.text_targets[k]).sum(1).mean().detach()}

    def loss(self, batch: dict, salt: int = TRAIN_SALT) -> torch.Tensor:
        terms = self.terms(batch, salt)
        total = (terms["clip"] + self.hparams.lambda_content * terms["content"]
                 + self.hparams.lambda_latent * terms["latent"])
        n = batch["latent"].shape[0]
        stage = "train" if salt == TRAIN_SALT else "val"
        self.log_dict({f"{stage}/{name}": value for name, value in terms.items()}, batch_size=n,
                      sync_dist=stage == "val")
        return total

    @torch.no_grad()
    def final_evaluation(self) -> dict[str, float]:
        """The loss terms on the held-out latents (alphas drawn as in training, every prompt in
        turn), and the mean length of the learned vectors."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return {}
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in datamodule.val_dataloader():
            batch = {key: v.to(self.device) for key, v in batch.items()}
            for name, value in self.terms(batch, ANALYSIS_SALT).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            count += 1
        self.train(was_training)
        metrics = {f"final_{name}": value / max(count, 1) for name, value in sums.items()}
        metrics["direction_norm_mean"] = float(self.directions.theta.norm(dim=1).mean())
        return metrics
