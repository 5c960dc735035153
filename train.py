"""Train any method (or pretrain the built-in GAN) with one command.

    python train.py method=voynov
    python train.py method=voynov run_name=exp1 ckpt_path=last      # resume
    python train.py -m method=voynov seed=0,1                        # one run directory a job
    python train.py experiment=pretrain_stylegan2                    # a built-in generator
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from common.callbacks import RunSignature
from common.checks import check_config_numbers, integer, integers, number
from common.errors import UserError
from common.io import atomic_write_json
from common.loggers import finish_wandb
from common.pickles import RefusedPickle, UnreadableFile, load_weights_only
from common.preemption import Preemption, stopped_by_signal
from common.runs import check_command_line, exit_on_setup_error, hydra_run_dir, note_new_folders, one_line, refuse
from evaluation.run import check_evaluation, prepare_evaluation, run_evaluation
from generators.base import identity_mismatch
from lightning_modules.fit_free import FitFreeCarrier, FitFreeMethod
from metrics.report import report_describes

log = logging.getLogger("train")
# The frozen generator is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
# A fit-free method has no validation: the latent datamodule's held-out batches go unused.
warnings.filterwarnings("ignore", message=r".*val_dataloader. but have no .validation_step.*")




def _is_launcher_child() -> bool:
    # DDP processes started by Lightning re-run this script with LOCAL_RANK / NODE_RANK set.
    # Under srun every task runs it; SLURM numbers them.
    return any(int(os.environ.get(k, 0)) != 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def check_run_name(name) -> None:
    """A run name is one folder name inside paths.output_dir: no path of its own."""
    text = str(name)
    if len(text.encode()) > 200:
        raise UserError(f"run_name={text[:40]}... is {len(text.encode())} bytes long: a run "
                            "name is a folder name, at most 200 bytes; pass a shorter one")
    if not text or text in (".", "..") or any(sep in text for sep in ("/", "\\")) or "\x00" in text:
        raise UserError(f"run_name={text!r} is not a folder name: a run is written to "
                            "<paths.output_dir>/<run_name>, so pass a plain name such as "
                            "run_name=exp1 (to write elsewhere, set paths.output_dir)")


# Keys that count something (batches, samples, directions, steps, images), wherever they sit
# under method, data or callbacks: an integer >= the least value, or null (the module's own
# default, e.g. num_directions: null = the latent size, max_steps: null = a fit-free method's
# own length). A key the first pattern matches may be 0 ("only at the end", "no workers").
_COUNTS = (
    (r"(\w+_)?every_n_\w+|num_workers", 0),
    (r"num_\w+|max_steps|val_every|\w+_every|(\w+_)?samples|(\w+_)?batch_size|(\w+_)?steps|"
     r"max_directions|eval_points|eval_alphas|knots|inversion_batch", 1),
)


def check_numbers(cfg: DictConfig) -> None:
    """The numbers every run reads, checked before any work (a ``UserError`` naming the
    option): the seed an integer >= 0; under method, data and callbacks every count
    (``_COUNTS``: num_directions, max_steps, val_every, samples, batch_size, steps, ...) an
    integer >= 1 (or null), every learning rate (``lr``, ``lr_*``) a finite number >= 0, every
    option a ``_target_`` annotates as a number of that type, and every float finite; and the
    end-of-run evaluation's options (``check_evaluation``) when it will run."""
    integer(cfg.get("seed"), "seed", low=0)
    def count(least: int):
        def check(value, name: str) -> None:
            if value is not None:  # null: the module's own default (its annotation says if any)
                integer(value, name, low=least)
        return check

    rules = [(pattern, count(least)) for pattern, least in _COUNTS]
    rules.insert(0, (r"lr|lr_\w+", partial(
        number, low=0,
        what="a learning rate must be a number >= 0 (finite; 0 freezes what it drives)")))
    for group in ("method", "data", "callbacks"):
        if isinstance(cfg.get(group), DictConfig):
            check_config_numbers(cfg[group], group, rules)
    trainer = cfg.get("trainer") or OmegaConf.create({})
    count(1)(trainer.get("max_steps"), "trainer.max_steps")
    count(1)(trainer.get("val_check_interval"), "trainer.val_check_interval")
    evaluation = cfg.get("evaluation")
    if evaluation is not None and evaluation.get("enabled") and needs_frozen_generator(cfg):
        check_evaluation(evaluation)


def check_trainer(cfg: DictConfig) -> None:
    """The processes a run asks for exist here, checked before Lightning starts any (a DDP
    run on more devices than there are waits forever at "Initializing distributed"):
    ``trainer.num_nodes`` a positive integer; on the CPU (``accelerator: cpu``, or ``auto``
    without a GPU) ``trainer.devices`` ``auto`` or a process count in 1..os.cpu_count(); on
    GPUs (``gpu``, ``cuda``, or ``auto`` with one) at least one visible, and ``devices`` ``auto``,
    -1 (all), a count up to the GPUs visible or a list of their indices. Other accelerators are
    Lightning's to check."""
    trainer = cfg.get("trainer") or OmegaConf.create({})
    integer(trainer.get("num_nodes", 1), "trainer.num_nodes", low=1,
            hint="the machines the run spans, each with trainer.devices processes")
    accelerator = str(trainer.get("accelerator", "auto"))
    kind = ("gpu" if torch.cuda.is_available() else "cpu") if accelerator == "auto" else accelerator
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)  # Lightning reads "2" as 2
    elif isinstance(devices, str) and "," in devices:
        devices = [int(d) if d.strip().isdigit() else d for d in devices.split(",") if d.strip()]
    if kind == "cpu":
        cores = os.cpu_count() or 1
        integer(devices, "trainer.devices", low=1, high=cores, words=("auto",),
                what=f"expected a number of processes in 1..{cores} (the CPU cores here) or auto",
                hint="on the CPU each device is a process")
    elif kind in ("gpu", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"trainer.accelerator={accelerator}: no CUDA GPU is visible here; "
                                "run on the CPU (trainer=default or trainer=ddp_cpu) or where a "
                                "GPU is")
        if isinstance(devices, (list, ListConfig)):
            integers(devices, "trainer.devices", low=0, high=count - 1, single=False, empty=False,
                     unique=True,
                     what=f"expected a list of GPU indices in 0..{count - 1} (the GPUs visible here)")
        elif devices != -1:
            integer(devices, "trainer.devices", low=1, high=count, words=("auto",),
                    what=f"expected a number of GPUs in 1..{count} (the GPUs visible here), -1 "
                    "or auto (all of them), or a list of their indices")


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


def refuse_bad_run_name(argv: list[str]) -> None:
    """A ``run_name=`` on the command line checked before Hydra makes its folder: an empty,
    absolute or overlong name would otherwise make (or fail to make) a folder first."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if key != "run_name" or not sep:
            continue
        value = value.strip("'\"") if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value
        if "${" in value:
            continue  # an interpolation: checked once resolved (check_run_name)
        try:
            for name in (value.split(",") if multirun else [value]):
                check_run_name(name)
        except UserError as err:
            refuse("train", "UserError", err)


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
            raise UserError(
                f"{run_dir} already holds a run (checkpoints/last.ckpt or directions.pt). Resume it "
                f"with `ckpt_path=last run_name={run_dir.name}`, or start a new run with another "
                "run_name; nothing there was changed.")
        return None
    if ckpt == "last":
        if not last.exists():
            others = sorted(p.parent.parent.name for p in run_dir.parent.glob("*/checkpoints/last.ckpt"))
            raise UserError(
                f"ckpt_path=last: nothing to resume, {last} does not exist. Runs that can be "
                f"resumed in {run_dir.parent}: {', '.join(others) or 'none'} (pass run_name=<one of "
                "them>); drop ckpt_path to start a new run.")
        return check_checkpoint(last)
    path = Path(ckpt)
    if not path.is_file():
        raise UserError(f"ckpt_path={ckpt}: no such checkpoint file; use ckpt_path=last to "
                            "resume this run's last checkpoint, or drop it to start a new run")
    return check_checkpoint(path.resolve())


_CKPT_KEYS = {"state_dict", "global_step", "loops", "optimizer_states", "pytorch-lightning_version"}
_CKPT_OPTIONAL = {"epoch", "callbacks", "lr_schedulers", "hparams_name", "hyper_parameters",
                  "generator_identity", "datamodule_hparams_name", "datamodule_hyper_parameters",
                  RunSignature.KEY}
# Method options a resume may change: what is drawn along the way, not what is learned.
_RESUME_FREE = ("traversal",)


def run_signature(cfg: DictConfig, free: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a checkpoint's state depends on, recorded in it (``RunSignature``): the method, its
    options (but its name, the grids' settings and the module's ``free`` ones, which a resume
    may change), the seed."""
    options = OmegaConf.to_container(cfg.method, resolve=True)
    options = {k: v for k, v in options.items() if k not in ("name",) + _RESUME_FREE + tuple(free)}
    return {"method": cfg.method.name, "options": options, "seed": cfg.seed}


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def resume_differences(blob: dict, cfg: DictConfig, module, generator) -> list[str]:
    """How the run asked for differs from the checkpoint ``blob`` it would resume: its method
    and options, its generator, and the names and shapes of the state it would load (what a
    checkpoint written before the signature was recorded still tells)."""
    differences = []
    saved = blob.get(RunSignature.KEY)
    if isinstance(saved, dict):
        names = {"method": "method", "options": "method", "seed": "seed"}
        free = getattr(module, "resume_free", ())
        before = {k: v for key, name in names.items() for k, v in _flat(saved.get(key), name).items()}
        now = {k: v for key, name in names.items()
               for k, v in _flat(run_signature(cfg, free)[key], name).items()}
        for key in sorted(before.keys() | now.keys()):
            if before.get(key, "<unset>") != now.get(key, "<unset>"):
                differences.append(f"{key} {before.get(key, '<unset>')!r} in the checkpoint vs "
                                   f"{now.get(key, '<unset>')!r} now")
    saved_identity = blob.get("generator_identity")
    if generator is not None and isinstance(saved_identity, dict):
        for key, (a, b) in identity_mismatch(saved_identity, generator.identity()).items():
            differences.append(f"generator {key} {a!r} in the checkpoint vs {b!r} now")
    state = blob.get("state_dict") if isinstance(blob.get("state_dict"), dict) else {}
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    missing = sorted(expected.keys() - found.keys())
    # state a module makes later (GLO's codes in setup) is not there yet: Lightning's strict
    # loading judges it; what the module has now must match
    unexpected = sorted(k for k in found.keys() - expected.keys()
                        if getattr(module, k.split(".")[0], None) is not None)
    if missing:
        differences.append(f"state {missing[:4]}{' ...' if len(missing) > 4 else ''} missing "
                           "from the checkpoint")
    if unexpected:
        differences.append(f"state {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''} in "
                           "the checkpoint is not in this method")
    differences += [f"state {k} of shape {list(found[k])} in the checkpoint vs {list(v)} now"
                    for k, v in expected.items() if k in found and found[k] != v]
    return differences


def check_resume(path: str, cfg: DictConfig, module, generator) -> None:
    """Refuse, before anything is written, to resume a checkpoint with other options: one line
    naming each difference (see ``resume_differences``)."""
    blob = load_weights_only(path, mmap=True)
    differences = resume_differences(blob, cfg, module, generator)
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more"
                                              if len(differences) > 6 else "")
        raise UserError(f"{path} cannot be resumed with these options: {shown}. Resume with "
                            "the options the run started with (its config.yaml), or start a new "
                            "run with another run_name; nothing was changed")


def check_checkpoint(path: Path) -> str:
    """A resumable Lightning checkpoint of this project, or a UserError naming the keys."""
    try:
        blob = load_weights_only(path, mmap=True)
    except RefusedPickle as err:
        raise UserError(f"{path} is refused: checkpoints are read with weights_only=True, and this "
                        f"file references the Python globals {err.found[:8]} (unpickling them could "
                        "run code); pass the checkpoints/last.ckpt of a run (or ckpt_path=last)") from None
    except UnreadableFile as err:
        raise UserError(f"{err}; pass the checkpoints/last.ckpt of a run (or ckpt_path=last)") from None
    keys = set(blob) if isinstance(blob, dict) else set()
    missing = sorted(_CKPT_KEYS - keys)
    if missing:
        raise UserError(
            f"{path} is not a training checkpoint of this project: missing keys {missing}, "
            f"unexpected keys {sorted(keys - _CKPT_KEYS - _CKPT_OPTIONAL)}. Pass the "
            "checkpoints/last.ckpt of a run (or ckpt_path=last).")
    return str(path)


def method_class(cfg: DictConfig) -> type:
    """The class ``method._target_`` names (the user's config: code the user chose)."""
    target = cfg.method.get("_target_")
    try:
        return get_class(str(target))
    except Exception as err:  # noqa: BLE001 - any failure to import it is the same mistake
        raise UserError(f"method._target_={target}: cannot be imported ({one_line(err)})") from None


def needs_frozen_generator(cfg: DictConfig) -> bool:
    """Whether the method works on the run's frozen generator: a fit-free method, or a module
    that takes a ``generator`` its config does not build itself (GAN pretraining and GLO build
    the generator they train; the regressor's training takes none)."""
    cls = method_class(cfg)
    if issubclass(cls, FitFreeMethod):
        return True
    return "generator" in inspect.signature(cls).parameters and "generator" not in cfg.method


def build_method(cfg: DictConfig, generator) -> pl.LightningModule:
    """The module ``cfg.method`` describes: its root is what is built (``name`` is the run's
    label, not an argument); a fit-free method is carried by ``FitFreeCarrier`` with the
    config's ``traversal``."""
    # plain dicts and lists reach the modules (and their checkpoints)
    spec = OmegaConf.to_container(cfg.method, resolve=True)
    spec.pop("name", None)
    if issubclass(method_class(cfg), FitFreeMethod):
        traversal = spec.pop("traversal", None)
        # config-from-command-line
        return FitFreeCarrier(generator, instantiate(spec, _convert_="all"), traversal)
    # config-from-command-line
    return instantiate(spec, _convert_="all", **({"generator": generator} if generator is not None else {}))


def instantiate_parts(cfg: DictConfig) -> dict[str, Any]:
    """Builds generator, data and method module from the config: nothing is written."""
    # config-from-command-line
    generator = instantiate(cfg.generator) if needs_frozen_generator(cfg) else None
    data_kwargs = {"generator": generator} if "generator" in cfg.data else {}
    # config-from-command-line
    datamodule = instantiate(cfg.data, **data_kwargs)
    return {"generator": generator, "datamodule": datamodule, "module": build_method(cfg, generator)}


def instantiate_outputs(cfg: DictConfig) -> dict[str, Any]:
    """Builds loggers and callbacks (a W&B logger writes its run id into the run folder)."""
    # config-from-command-line
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    # config-from-command-line
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    return {"loggers": loggers, "callbacks": callbacks}


def instantiate_all(cfg: DictConfig) -> dict[str, Any]:
    """Builds generator, data, method module, loggers and callbacks from the config."""
    return {**instantiate_parts(cfg), **instantiate_outputs(cfg)}


def warn_if_report_is_stale(report_path: Path, directions: Path) -> None:
    """Say so when the run's evaluation.json describes the directions it had before (a resumed
    run wrote new ones and did not evaluate them); the explorer and the leaderboard ignore it."""
    if not report_path.is_file():
        return
    try:
        stale = not report_describes(json.loads(report_path.read_text()), directions)
    except (OSError, ValueError, RecursionError, AttributeError):
        stale = True
    if stale:
        log.warning("%s describes the directions this run had before, not the new %s: evaluate "
                    "them with  python evaluate.py directions=%s", report_path, directions.name,
                    directions)


def log_to_file(path: Path) -> logging.Handler:
    """The run's ``train.log`` (appended), opened only once the run has passed its checks so
    that a refused run leaves its folder as it was."""
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def train(cfg: DictConfig) -> dict[str, float]:
    """Runs one training job as configured; returns its final metrics."""
    check_run_name(cfg.run_name)
    check_numbers(cfg)
    check_trainer(cfg)
    run_dir = resolve_run_dir(cfg)
    ckpt_path = resolve_ckpt_path(cfg, run_dir)
    evaluation = cfg.get("evaluation")
    evaluate_at_end = bool(evaluation is not None and evaluation.enabled
                           and needs_frozen_generator(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    parts = instantiate_parts(cfg)
    if ckpt_path is not None:
        check_resume(ckpt_path, cfg, parts["module"], parts["generator"])
    # What the evaluation needs is checked now: a mistake stops the run before training.
    prepared = prepare_evaluation(evaluation, parts["generator"]) if evaluate_at_end else None
    # trainer.max_steps counts batches, the one knob of a run's length; Lightning counts
    # optimizer steps, several a batch for a GAN (D then G).
    # A fit-free method sets its own length from its sample count (trainer.max_steps: null).
    per_batch = getattr(parts["module"], "optimizer_steps_per_batch", 1)
    batches = cfg.trainer.get("max_steps")
    if batches is None:
        if not hasattr(parts["module"], "required_batches"):
            raise UserError(f"trainer.max_steps is null: set it to the number of batches "
                                f"{cfg.method.name} trains for")
        batches = parts["module"].required_batches(parts["datamodule"].batch_size)
    # Every check has passed: from here on the run folder is written (W&B's run id first).
    parts.update(instantiate_outputs(cfg))
    free = getattr(parts["module"], "resume_free", ())
    parts["callbacks"].append(RunSignature(run_signature(cfg, free)))
    # config-from-command-line
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir),
                                      max_steps=int(batches) * per_batch,
                                      logger=parts["loggers"] or False,
                                      callbacks=parts["callbacks"], enable_checkpointing=False)
    file_log = None
    if trainer.is_global_zero and not _is_launcher_child():
        run_dir.mkdir(parents=True, exist_ok=True)
        file_log = log_to_file(run_dir / "train.log")
    try:
        return _fit(cfg, trainer, parts, run_dir, ckpt_path, evaluation if evaluate_at_end else None,
                    prepared)
    finally:
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()


def _fit(cfg: DictConfig, trainer: pl.Trainer, parts: dict[str, Any], run_dir: Path,
         ckpt_path: str | None, evaluation: DictConfig | None, prepared) -> dict[str, float]:
    """Fit, then export and evaluate: the part of ``train`` that writes the run folder."""
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
    if evaluation is not None and directions.is_file():
        # Lightning's teardown left the generator on the CPU: evaluate on the run's device.
        parts["generator"].to(trainer.strategy.root_device)
        report = run_evaluation(evaluation, directions, parts["generator"], parts["loggers"],
                                prepared=prepared)
        metrics.update({f"eval/{k}": v for k, v in report["results"][report["label"]]["metrics"].items()})
    elif trainer.is_global_zero and directions.is_file():
        warn_if_report_is_stale(run_dir / "evaluation.json", directions)
    if trainer.is_global_zero:
        atomic_write_json({"run_name": cfg.run_name, "method": cfg.method.name,
                           "batches": trainer.global_step, "metrics": metrics},
                          run_dir / "metrics.json")
    finish_wandb(parts["loggers"], log)
    return metrics


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    # A run refused at start-up leaves no empty run directory behind (only the main process:
    # DDP children and multirun jobs share or name theirs the same way).
    exit_on_setup_error(train, cfg, log,
                        run_dir=hydra_run_dir())


def main() -> None:
    """The command line: a bad ``run_name=`` is refused before Hydra makes its folder."""
    refuse_bad_run_name(sys.argv[1:])
    cfg = check_command_line("train", sys.argv[1:], "train")
    if cfg is not None:
        try:
            note_new_folders(cfg.paths.output_dir)
        except Exception:  # noqa: BLE001 - an unresolvable path is Hydra's to report
            pass
    _hydra_main()


if __name__ == "__main__":
    main()
