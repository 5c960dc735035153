"""Training of the world CLIP through train.py (``experiment=clip_shapes``): contrastive
learning on renders of the shapes world and captions of their true factors (Radford et al.,
ICML 2021; the model and its loss in ``clip_models/world.py``, the captions in
``clip_models/captions.py``):

    L = (CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2   over the pairs of a batch

Under DDP the pairs of every process's batch are the negatives of each (the embeddings gathered,
each process's own keeping its gradients): W processes of N pairs contrast like one batch of W N.
At the end of fit the model is scored on the held-out batches (``metrics/clip.py``: zero-shot
accuracy per attribute, text-to-image retrieval) and written as ``clip.pt`` in the run
directory, the format ``clip_models.world.load_world_clip`` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch

from clip_models.captions import describe
from clip_models.world import WorldClip
from common.io import atomic_write_json
from common.preemption import stopped_by_signal
from common.training import batches_done, cosine_optimizer, pixel_noise
from metrics.clip import clip_scores


class ClipTraining(pl.LightningModule):
    """Fits a ``WorldClip`` to batches ``{"images", "factors", "seed"}`` of the world.

    Args:
        model: the ``WorldClip`` constructor's arguments (embed_dim, width, layers, heads,
            context, backbone, backbone_kwargs, resolution).
        keep: the probability that a caption mentions each attribute (``describe``).
        optimizer: a partial optimizer taking the parameters.
        cosine_steps: length of the cosine decay of the learning rate (0: constant).
        augment_noise: std of Gaussian pixel noise added to training images.
    """

    def __init__(self, model: dict | None = None, keep: float = 0.7,
                 optimizer: Callable | None = None, cosine_steps: int = 0,
                 augment_noise: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.model = WorldClip(**dict(model or {}))
        self.final_metrics: dict[str, float] = {}
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def configure_optimizers(self):
        return cosine_optimizer(self.optimizer_factory, self.model.parameters(), self.hparams.cosine_steps)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = pixel_noise(batch["images"], self.hparams.augment_noise, batch)
        rng = torch.Generator().manual_seed((int(batch["seed"]) + 1) % (2**63 - 1))
        captions = describe(batch["factors"].cpu(), rng, keep=self.hparams.keep)
        gather = self.gather_batch if self.trainer.world_size > 1 else None
        loss, logits = self.model.loss(images, captions, gather)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"CLIP loss is not finite at batch {batches_done(self.trainer)}"
                                     ": lower the learning rate and resume with ckpt_path=last")
        n = images.shape[0]
        accuracy = (logits.argmax(1) == torch.arange(len(logits), device=logits.device)).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/accuracy", accuracy, batch_size=n)
        self.log("train/temperature", 1 / self.model.logit_scale.exp(), batch_size=n)
        return loss

    def gather_batch(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every process's embeddings (process order), this one's own with their gradients."""
        rank, n = self.global_rank, image.shape[0]

        def everyone(local: torch.Tensor) -> torch.Tensor:
            others = self.all_gather(local.detach()).flatten(0, 1)
            return torch.cat([others[:rank * n], local, others[(rank + 1) * n:]])

        return everyone(image), everyone(text)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val.append((batch["images"], batch["factors"]))

    def on_validation_epoch_end(self) -> None:
        if self._val:
            images, factors = (torch.cat(x) for x in zip(*self._val))
            self._val.clear()
            self.log_dict({f"val/{k}": v for k, v in clip_scores(self.model, images, factors).items()})

    @torch.no_grad()
    def on_train_end(self) -> None:
        """Held-out scores (on rank 0: the figures need the whole set) and export."""
        if stopped_by_signal(self.trainer) or self.trainer.global_rank != 0:
            return
        batches = list(self.trainer.datamodule.val_dataloader())
        images = torch.cat([b["images"] for b in batches]).to(self.device)
        factors = torch.cat([b["factors"] for b in batches])
        was_training = self.training
        self.eval()
        self.final_metrics = clip_scores(self.model, images, factors)
        self.final_metrics["held_out_images"] = len(images)
        self.train(was_training)
        run_dir = Path(self.trainer.default_root_dir)
        info: dict[str, Any] = {"held_out": self.final_metrics, "batches": batches_done(self.trainer)}
        self.model.save(run_dir / "clip.pt", info=info)
        atomic_write_json(info, run_dir / "clip_scores.json")
