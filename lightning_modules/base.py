"""The LightningModule bases of the direction methods.

``FrozenGeneratorModule`` holds what every method shares, learnable or fit-free: the frozen
generator (kept out of checkpoints, which record its identity and hash instead), per-batch
random draws from the batch's own seed (so that resumed and distributed runs are
deterministic), the regressor a generator names, traversal grids for a fixed set of seeds, and
the export of the Directions artifact at the end of fit.

``DirectionModule`` adds what only gradient methods need: the optimiser, the loss and its NaN
check, validation, and grids every N batches. The fit-free methods run on
``lightning_modules.fit_free.FitFreeCarrier``, the other subclass.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch

from common.errors import UserError
from common.images import log_image, save_grid
from common.preemption import stopped_by_signal
from common.seeds import TRAIN_SALT, TRAVERSAL_SEED, VALIDATION_SALT
from common.training import batches_done
from directions import Directions, DirectionSet
from generators.base import Generator, identity_mismatch


def regressor_path(generator: Generator, choice: str | None, needed_for: str | None = None,
                   option: str = "method.regressor") -> str | None:
    """The regressor file a method reads: ``auto`` is the one the generator's config names
    (its images' world), never another world's; ``None``: none. ``needed_for``: refuse to go
    without one, saying what it is needed for and which ``option`` to set."""
    if choice == "auto":
        choice = (generator.regressor_spec or {}).get("path")
    if not choice and needed_for:
        raise UserError(f"{needed_for} needs an attribute regressor, and generator "
                         f"{generator.name!r} names none in its config: pass "
                         f"{option}=<regressor.pt> (train one with "
                         "`python train.py experiment=regressor_folder data.root=<images>`)")
    return choice or None


class FrozenGeneratorModule(pl.LightningModule):
    """What every method shares. A subclass sets ``self.directions`` (a DirectionSet) by the end
    of fit; it may override ``final_evaluation`` to add metrics to the artifact.

    Args:
        generator: the frozen generator (frozen here again, whatever it was).
        traversal: ``every_n_steps`` (0: only at the end), ``num_seeds``, ``max_directions``
            (rows), ``alpha`` (the grid spans -alpha..alpha; the method's ``alpha_range`` by
            default), ``steps`` (columns per seed).
        alpha_range: the largest |alpha| the directions are meant for, in their own units;
            recorded in the Directions file so that evaluate.py measures each set on the
            scale it was made for (``None``: unknown, the evaluation's defaults apply).
    """

    method_name: str = "base"
    # Frozen submodules whose weights stay out of checkpoints (a method may add its assessor).
    frozen_submodules: tuple[str, ...] = ("generator",)
    # Class-dependent directions (GANalyze's theta(y)): the class of each stored direction,
    # recorded in the Directions file so that every tool gives a latent its class's direction.
    direction_classes: list[int] | None = None

    def __init__(self, generator: Generator, traversal: dict | None = None,
                 alpha_range: float | None = None) -> None:
        super().__init__()
        self.generator = generator.freeze()
        self.alpha_range = alpha_range
        self.traversal = {"every_n_steps": 500, "num_seeds": 3, "max_directions": 8,
                          "alpha": alpha_range or 3.0, "steps": 7, **(traversal or {})}
        self.final_metrics: dict[str, float] = {}
        self.directions: DirectionSet

    def train(self, mode: bool = True) -> "FrozenGeneratorModule":
        """Lightning switches the module to training mode: the frozen parts stay in eval mode
        (batch norm keeps its running statistics, dropout stays off)."""
        super().train(mode)
        for name in self.frozen_submodules:
            part = getattr(self, name, None)
            if isinstance(part, torch.nn.Module):
                part.eval()
        return self

    # ---- checkpoints without the generator ----------------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        state = super().state_dict(*args, destination=destination, prefix=prefix,
                                   keep_vars=keep_vars)
        frozen = tuple(f"{prefix}{name}." for name in self.frozen_submodules)
        for key in [k for k in state if k.startswith(frozen)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict about everything but the frozen parts, whose weights checkpoints leave out:
        a checkpoint that lacks any of the method's own state, or holds state it does not
        have, is refused (Lightning loads with ``strict_loading``, True here)."""
        frozen = tuple(f"{name}." for name in self.frozen_submodules)
        # a frozen part's weights in an older checkpoint are left out too
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(frozen)}
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(frozen)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"the checkpoint does not fit {type(self).__name__}: missing keys "
                               f"{missing}, unexpected keys {result.unexpected_keys}")
        return result

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["generator_identity"] = self.generator.identity()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("generator_identity")
        if saved is None:
            raise UserError("this checkpoint records no generator identity: it was not written "
                             "by a direction method of this project")
        mismatch = identity_mismatch(saved, self.generator.identity())
        if mismatch:
            raise UserError("the checkpoint was made with another generator: "
                             + ", ".join(f"{k} {a!r} in the checkpoint vs {b!r} now"
                                         for k, (a, b) in mismatch.items())
                             + "; resume with the generator the run started with")

    # ---- shared helpers -----------------------------------------------------------------
    def regressor_path(self, choice: str | None, needed_for: str | None = None) -> str | None:
        """See ``regressor_path``: the regressor file this method's generator calls for."""
        return regressor_path(self.generator, choice, needed_for)

    @staticmethod
    def batch_rng(batch: dict, salt: int = TRAIN_SALT) -> torch.Generator:
        """A CPU generator for this batch's own random draws (directions, shifts)."""
        return torch.Generator().manual_seed((int(batch["seed"]) + salt) % (2**63 - 1))

    # ---- traversal grids ----------------------------------------------------------------
    @torch.no_grad()
    def traversal_grid(self, tag: str) -> Path | None:
        if self.trainer is not None and self.trainer.global_rank != 0:
            return None
        cfg = self.traversal
        was_training = self.directions.training
        self.directions.eval()
        artifact = Directions(self.directions, {"direction_classes": self.direction_classes})
        latents, y = self.generator.draw(cfg["num_seeds"], torch.Generator().manual_seed(TRAVERSAL_SEED))
        # Directions ordered by how much they change the image (mean L1 between -+alpha).
        ends = artifact.traversal_rows(self.generator, latents, range(artifact.num_directions),
                                       [-cfg["alpha"], cfg["alpha"]], y=y)
        change = (ends[:, 1::2] - ends[:, 0::2]).abs().flatten(1).mean(1)
        order = change.argsort(descending=True)[: cfg["max_directions"]].tolist()
        alphas = torch.linspace(-cfg["alpha"], cfg["alpha"], cfg["steps"]).tolist()
        rows = artifact.traversal_rows(self.generator, latents, order, alphas, y=y)
        self.directions.train(was_training)
        root = Path(self.trainer.default_root_dir) if self.trainer is not None else Path(".")
        path = root / ("traversal.png" if tag == "final" else f"traversals/{tag}.png")
        save_grid(rows.flatten(0, 1), path, nrow=cfg["num_seeds"] * cfg["steps"])
        if self.trainer is not None:
            caption = f"{tag}: rows = directions {order}; columns = {cfg['num_seeds']} seeds x alpha " \
                      f"{-cfg['alpha']:g}..{cfg['alpha']:g}"
            log_image(self.loggers, "traversal", path, step=self.trainer.global_step, caption=caption)
        return path

    # ---- the end of fit -----------------------------------------------------------------
    def final_evaluation(self) -> dict[str, float]:
        """Metrics computed once at the end of fit (every rank calls it; reduce across ranks)."""
        return {}

    def export(self) -> Directions:
        meta = {
            "method": self.method_name,
            "generator": self.generator.identity(),
            "generator_source": self.generator.source,
            "space": self.generator.space,
            "layers": self.directions.layers,
            "alpha_range": self.alpha_range,
            "direction_classes": self.direction_classes,
            "config": {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict))
                           else repr(v)) for k, v in self.hparams.items()},
            "metrics": dict(self.final_metrics),
            "batches": batches_done(self.trainer) if self.trainer is not None else None,
        }
        return Directions(self.directions, meta)

    def on_train_end(self) -> None:
        # The end of training, not on_fit_end: here the module is still on its device and every
        # process is still there. Lightning's strategy teardown, before on_fit_end, moves the
        # module to the CPU: the final evaluation would run there, and its reductions of CPU
        # tensors fail under NCCL (measured on one H100: trainer=ddp crashed in the final RCA).
        if stopped_by_signal(self.trainer):  # not finished: resumed later, exported then
            return
        self.final_metrics.update(self.final_evaluation())
        if self.trainer.global_rank != 0:
            return
        self.traversal_grid("final")
        self.export().save(Path(self.trainer.default_root_dir) / "directions.pt")


class DirectionModule(FrozenGeneratorModule):
    """Base of the learnable (gradient) methods. A subclass sets ``self.directions`` and
    implements ``loss`` (or ``training_step``).

    Args:
        generator, traversal, alpha_range: see FrozenGeneratorModule (``alpha_range``: the
            largest |alpha| the method trains its directions on).
        optimizer: a partial optimizer (``_partial_: true`` in config) taking the parameters.
    """

    def __init__(self, generator: Generator, optimizer: Callable | None = None,
                 traversal: dict | None = None, alpha_range: float | None = None) -> None:
        super().__init__(generator, traversal, alpha_range)
        self.optimizer_factory = optimizer or partial(torch.optim.Adam, lr=1e-4)

    def check_finite(self, loss: torch.Tensor, what: str = "loss") -> None:
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"{what} is not finite at batch {batches_done(self.trainer)}: training stopped; "
                "the last good checkpoint and directions file are kept. Lower the learning rate "
                "or the shift range, then resume with ckpt_path=last or start a new run.")

    # ---- a method with one loss (GANalyze, Steerability): define loss(batch, salt) ------
    def loss(self, batch: dict, salt: int = TRAIN_SALT) -> torch.Tensor:  # pragma: no cover - abstract
        """The method's loss on a batch; ``salt`` separates validation draws from training's."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.check_finite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["latent"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch, salt=VALIDATION_SALT), sync_dist=True, prog_bar=True,
                 batch_size=batch["latent"].shape[0])

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        return self.optimizer_factory(params=self.trainable_parameters())

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every = self.traversal["every_n_steps"]
        done = batches_done(self.trainer)
        if every and done % every == 0:
            self.traversal_grid(f"step_{done:06d}")

