"""Training of attribute regressors through train.py (``experiment=regressor_shapes`` for the
built-in world, ``experiment=regressor_folder`` for an image folder with a CSV of labels).

    L = sum over targets t of mean_i loss_t(R(x_i), y_i,t)    (losses in regressors/attributes.py)

At the end of fit the regressor is scored on the held-out batches (R^2 per value or angle,
accuracy per class) and written as ``regressor.pt`` in the run directory, the format that
``regressors.attributes.load_regressor`` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch

from common.errors import UserError
from common.io import atomic_write_json
from common.preemption import stopped_by_signal
from common.training import batches_done, cosine_optimizer, pixel_noise
from metrics.attributes import AttributeScores
from regressors.attributes import AttributeRegressor, Target


class RegressorTraining(pl.LightningModule):
    """Fits an ``AttributeRegressor`` to batches ``{"images", "factors"}``.

    Args:
        targets: ``"world"``, a list of target specs, or ``"data"``: the datamodule's
            ``targets`` (an image folder infers them from its CSV).
        backbone, backbone_kwargs, resolution: see ``AttributeRegressor``.
        optimizer: a partial optimizer taking the parameters.
        cosine_steps: length of the cosine decay of the learning rate (0: constant).
        augment_noise: std of Gaussian pixel noise added to training images (robustness to the
            small artefacts of generated images).
    """

    def __init__(self, targets: str | Sequence[dict] = "world", backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, resolution: int = 32,
                 optimizer: Callable | None = None, cosine_steps: int = 0,
                 augment_noise: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.model: AttributeRegressor | None = None
        self.final_metrics: dict[str, float] = {}
        if targets != "data":
            self._build(targets)

    def _build(self, targets: str | Sequence[dict | Target]) -> None:
        hp = self.hparams
        self.model = AttributeRegressor(targets, hp.backbone, hp.backbone_kwargs, hp.resolution)
        self.scores = AttributeScores(self.model.factor_names, [t.kind for t in self.model.targets])

    def configure_model(self) -> None:
        if self.model is None:  # targets="data": known once the datamodule has read its labels
            datamodule = self.trainer.datamodule
            if not hasattr(datamodule, "targets"):
                raise UserError("targets='data' needs a datamodule with a `targets` attribute "
                                 "(datamodules.image_folder.ImageFolderDataModule)")
            self._build(datamodule.targets)

    def configure_optimizers(self):
        return cosine_optimizer(self.optimizer_factory, self.model.parameters(), self.hparams.cosine_steps)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = pixel_noise(batch["images"], self.hparams.augment_noise, batch)
        loss, parts = self.model.loss(self.model(images), batch["factors"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"regressor loss is not finite at batch {batches_done(self.trainer)}"
                                     ": lower the learning rate and resume with ckpt_path=last")
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, batch_size=images.shape[0])
        return loss

    def _score(self, batch: dict) -> None:
        predicted = self.model.predict(batch["images"])
        labels = batch["factors"]
        self.scores.update(predicted["values"], labels, self.model.label_mask(labels))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch)

    def on_validation_epoch_end(self) -> None:
        values = self.scores.compute()
        values.pop("labelled_images")
        self.scores.reset()
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=False)

    @torch.no_grad()
    def on_train_end(self) -> None:
        """Held-out scores (every process scores its share; the metric sums them) and export."""
        if stopped_by_signal(self.trainer):  # not finished: resumed later, exported then
            return
        datamodule = self.trainer.datamodule
        was_training = self.training
        self.eval()
        self.scores.reset()
        batches = list(datamodule.val_dataloader())
        if not getattr(datamodule, "val_sharded", False):  # e.g. an image folder: split it
            batches = batches[self.trainer.global_rank::self.trainer.world_size]
        for batch in batches:
            self._score({k: v.to(self.device) for k, v in batch.items()})
        self.final_metrics = {k: round(v, 5) for k, v in self.scores.compute().items()}
        self.final_metrics["held_out_images"] = self.final_metrics.pop("labelled_images")
        self.scores.reset()
        self.train(was_training)
        if self.trainer.global_rank != 0:
            return
        run_dir = Path(self.trainer.default_root_dir)
        info: dict[str, Any] = {"held_out": self.final_metrics, "batches": batches_done(self.trainer),
                                "data": type(datamodule).__name__}
        self.model.save(run_dir / "regressor.pt", info=info)
        atomic_write_json(info, run_dir / "regressor_scores.json")
