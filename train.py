"""Train any method (or pretrain the built-in GAN) with one command.

    python train.py method=voynov
    python train.py method=voynov run_name=exp1 ckpt_path=last      # resume
    python train.py -m method=voynov seed=0,1                        # one run directory a job
    python train.py experiment=pretrain_stylegan2                    # a built-in generator
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from common.io import atomic_write_json
from common.loggers import finish_wandb
from common.preemption import Preemption, stopped_by_signal
from common.runs import exit_on_setup_error, hydra_run_dir
from lightning_modules.evaluation import EvaluationSetupError, prepare_evaluation, run_evaluation

log = logging.getLogger("train")
# The frozen generator is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
# A fit-free method has no validation: the latent datamodule's held-out batches go unused.
warnings.filterwarnings("ignore", message=r".*val_dataloader. but have no .validation_step.*")


class RunSetupError(ValueError):
    """A mistake in how the run was asked for, found before any work starts."""


def _is_launcher_child() -> bool:
    # DDP processes started by Lightning re-run this script with LOCAL_RANK / NODE_RANK set.
    # Under srun every task runs it; SLURM numbers them.
    return any(int(os.environ.get(k, 0)) != 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def check_run_name(name) -> None:
    """A run name is one folder name inside paths.output_dir: no path of its own."""
    text = str(name)
    if not text or text in (".", "..") or any(sep in text for sep in ("/", "\\")) or "\x00" in text:
        raise RunSetupError(f"run_name={text!r} is not a folder name: a run is written to "
                            "<paths.output_dir>/<run_name>, so pass a plain name such as "
                            "run_name=exp1 (to write elsewhere, set paths.output_dir)")


def check_numbers(cfg: DictConfig) -> None:
    """The numbers every run reads, checked before any work: the seed is an integer, the run
    length and batch size positive integers, and every learning rate of the method (any key
    ``lr`` or ``lr_*`` under method.module) a number >= 0."""
    def integer(value, name: str, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RunSetupError(f"{name}={value!r}: expected an integer >= {low}")

    integer(cfg.get("seed"), "seed", 0)
    if cfg.method.get("max_steps") is not None:
        integer(cfg.method.max_steps, "method.max_steps", 1)
    if "batch_size" in cfg.get("data", {}):
        integer(cfg.data.batch_size, "data.batch_size", 1)

    def walk(node, where: str) -> None:
        for key, value in node.items():
            name = f"{where}.{key}"
            if isinstance(value, DictConfig):
                walk(value, name)
            elif str(key) == "lr" or str(key).startswith("lr_"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                    raise RunSetupError(f"{name}={value!r}: a learning rate must be a number "
                                        ">= 0 (0 freezes what it drives)")

    walk(cfg.method.get("module") or OmegaConf.create({}), "method.module")


def resolve_run_dir(cfg: DictConfig) -> Path:
    """The run directory: Hydra's output directory when launched through Hydra (so that DDP
    processes and multirun jobs agree on it), else ``paths.run_dir``."""
    run_dir = None
    if HydraConfig.initialized():
        run_dir = HydraConfig.get().runtime.get("output_dir")
    run_dir = Path(run_dir or cfg.paths.run_dir).resolve()
    with open_dict(cfg):
        cfg.run_name = run_dir.name
        cfg.paths.run_dir = str(run_dir)
    return run_dir


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """Checks what to resume from (or that a new run will not clobber an old one)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = cfg.get("ckpt_path")
    if ckpt == "auto":  # a requeued cluster job: resume if there is anything to resume
        if last.exists():
            return check_checkpoint(last)
        ckpt = None
    if ckpt in (None, "", "null"):
        if not _is_launcher_child() and (last.exists() or (run_dir / "directions.pt").exists()):
            raise RunSetupError(
                f"{run_dir} already holds a run (checkpoints/last.ckpt or directions.pt). Resume it "
                f"with `ckpt_path=last run_name={run_dir.name}`, or start a new run with another "
                "run_name; nothing there was changed.")
        return None
    if ckpt == "last":
        if not last.exists():
            others = sorted(p.parent.parent.name for p in run_dir.parent.glob("*/checkpoints/last.ckpt"))
            raise RunSetupError(
                f"ckpt_path=last: nothing to resume, {last} does not exist. Runs that can be "
                f"resumed in {run_dir.parent}: {', '.join(others) or 'none'} (pass run_name=<one of "
                "them>); drop ckpt_path to start a new run.")
        return check_checkpoint(last)
    path = Path(ckpt)
    if not path.is_file():
        raise RunSetupError(f"ckpt_path={ckpt}: no such checkpoint file; use ckpt_path=last to "
                            "resume this run's last checkpoint, or drop it to start a new run")
    return check_checkpoint(path.resolve())


_CKPT_KEYS = {"state_dict", "global_step", "loops", "optimizer_states", "pytorch-lightning_version"}
_CKPT_OPTIONAL = {"epoch", "callbacks", "lr_schedulers", "hparams_name", "hyper_parameters",
                  "generator_identity", "datamodule_hparams_name", "datamodule_hyper_parameters"}


def check_checkpoint(path: Path) -> str:
    """A resumable Lightning checkpoint of this project, or a RunSetupError naming the keys."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise RunSetupError(f"{path} is not a readable checkpoint ({err}); checkpoints are read "
                            "with weights_only=True: one that holds more than tensors and plain "
                            "data could run code and is refused") from err
    keys = set(blob) if isinstance(blob, dict) else set()
    missing = sorted(_CKPT_KEYS - keys)
    if missing:
        raise RunSetupError(
            f"{path} is not a training checkpoint of this project: missing keys {missing}, "
            f"unexpected keys {sorted(keys - _CKPT_KEYS - _CKPT_OPTIONAL)}. Pass the "
            "checkpoints/last.ckpt of a run (or ckpt_path=last).")
    return str(path)


def instantiate_all(cfg: DictConfig) -> dict[str, Any]:
    """Builds generator, data, method module, loggers and callbacks from the config."""
    generator = instantiate(cfg.generator) if cfg.method.get("frozen_generator", True) else None
    data_kwargs = {"generator": generator} if "generator" in cfg.data else {}
    datamodule = instantiate(cfg.data, **data_kwargs)
    module_kwargs = {"generator": generator} if generator is not None else {}
    # _convert_="all": plain dicts and lists reach the modules (and their checkpoints).
    module = instantiate(cfg.method.module, _convert_="all", **module_kwargs)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    return {"generator": generator, "datamodule": datamodule, "module": module,
            "loggers": loggers, "callbacks": callbacks}


def train(cfg: DictConfig) -> dict[str, float]:
    """Runs one training job as configured; returns its final metrics."""
    check_run_name(cfg.run_name)
    check_numbers(cfg)
    run_dir = resolve_run_dir(cfg)
    ckpt_path = resolve_ckpt_path(cfg, run_dir)
    evaluation = cfg.get("evaluation")
    evaluate_at_end = bool(evaluation is not None and evaluation.enabled
                           and cfg.method.get("frozen_generator", True))
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    parts = instantiate_all(cfg)
    # What the evaluation needs is checked now: a mistake stops the run before training.
    prepared = prepare_evaluation(evaluation, parts["generator"]) if evaluate_at_end else None
    # method.max_steps counts batches, the one knob of a run's length; Lightning counts
    # optimizer steps, several a batch for a GAN (D then G).
    # A fit-free method sets its own length from its sample count (method.max_steps: null).
    per_batch = getattr(parts["module"], "optimizer_steps_per_batch", 1)
    batches = cfg.method.max_steps
    if batches is None:
        if not hasattr(parts["module"], "required_batches"):
            raise RunSetupError(f"method.max_steps is null: set it to the number of batches "
                                f"{cfg.method.name} trains for")
        batches = parts["module"].required_batches(parts["datamodule"].batch_size)
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir),
                                      max_steps=int(batches) * per_batch,
                                      logger=parts["loggers"] or False,
                                      callbacks=parts["callbacks"], enable_checkpointing=False)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        for logger in parts["loggers"]:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    module = parts["module"]
    # weights_only=True: a checkpoint holds tensors and plain data only, so a file passed as
    # ckpt_path can never run code (check_checkpoint has read it the same way).
    trainer.fit(module, datamodule=parts["datamodule"], ckpt_path=ckpt_path, weights_only=True)

    if trainer.interrupted:  # Ctrl-C: Lightning stops gracefully; the last checkpoint stands
        log.warning("interrupted: resume with the same command and  run_name=%s ckpt_path=last",
                    cfg.run_name)
        return {}
    stopped_by = stopped_by_signal(trainer)
    if stopped_by:  # preempted: last.ckpt holds the run; no export, no evaluation yet
        requeued = trainer.is_global_zero and next(
            c for c in trainer.callbacks if isinstance(c, Preemption)).requeue()
        if not requeued and trainer.is_global_zero:
            log.warning("stopped by %s: resume with the same command and run_name=%s "
                        "ckpt_path=last", stopped_by, cfg.run_name)
        finish_wandb(parts["loggers"], log)
        return {}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics.update(getattr(module, "final_metrics", {}) or {})
    directions = run_dir / "directions.pt"
    trainer.strategy.barrier("directions_written")  # rank 0 wrote them at the end of fit
    if evaluate_at_end and directions.is_file():
        # Lightning's teardown left the generator on the CPU: evaluate on the run's device.
        parts["generator"].to(trainer.strategy.root_device)
        report = run_evaluation(evaluation, directions, parts["generator"], parts["loggers"],
                                prepared=prepared)
        metrics.update({f"eval/{k}": v for k, v in report["results"][report["label"]]["metrics"].items()})
    if trainer.is_global_zero:
        atomic_write_json({"run_name": cfg.run_name, "method": cfg.method.name,
                           "batches": trainer.global_step, "metrics": metrics},
                          run_dir / "metrics.json")
    finish_wandb(parts["loggers"], log)
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    # A run refused at start-up leaves no empty run directory behind (only the main process:
    # DDP children and multirun jobs share or name theirs the same way).
    exit_on_setup_error(train, cfg, (RunSetupError, EvaluationSetupError), log,
                        run_dir=hydra_run_dir())


if __name__ == "__main__":
    main()
