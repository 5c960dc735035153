"""What the scripts that read a finished run share: where its files are, which generator it
used, and the config resolvers that turn a file's path into its run directory."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from common.errors import UserError, user_error_in


def register_resolvers() -> None:
    """``${parent_dir:path}`` and ``${base_name:path}`` for configs that start from a file."""
    OmegaConf.register_new_resolver("parent_dir", lambda p: str(Path(p).resolve().parent), replace=True)
    OmegaConf.register_new_resolver("base_name", lambda p: Path(p).name, replace=True)


def run_config(run_dir: str | Path) -> DictConfig | None:
    path = Path(run_dir) / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def run_method_name(run_dir: str | Path) -> str | None:
    config = run_config(run_dir)
    return config.get("method", {}).get("name") if config is not None else None


def resolve_device(spec: str | None = "auto") -> torch.device:
    """The device a script works on: ``auto`` (or None) the first CUDA GPU when one is visible,
    else the CPU; or a name such as ``cpu``, ``cuda``, ``cuda:1``. A ValueError names what to
    pass instead (before any work)."""
    if spec is None or str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(spec))
    except RuntimeError:
        raise UserError(f"device={spec}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UserError(f"device={spec}: {count} CUDA GPU(s) visible here; use device=auto "
                             "or device=cpu")
    elif device.type != "cpu":
        raise UserError(f"device={spec}: use auto, cpu, cuda or cuda:N")
    return device


# Folders that did not exist when the script started (the output folder and its parents):
# a refused run removes them again when they are empty (note_new_folders).
_NEW_FOLDERS: list[Path] = []


def note_new_folders(path: str | Path) -> None:
    """Remember ``path`` and its ancestors that do not exist yet, before Hydra makes them."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        _NEW_FOLDERS.append(path)
        path = path.parent


def remove_if_empty(run_dir: str | Path | None) -> bool:
    """Remove ``run_dir`` when it is empty: the folder Hydra made for a run refused before any
    work (Hydra writes nothing into it: train.py writes config.yaml and train.log only once the
    run has passed its checks); and the folders above it that did not exist when the script
    started (``note_new_folders``). A folder holding anything is never touched."""
    if run_dir is None:
        return False
    path = Path(run_dir)
    if not path.is_dir() or path == Path.cwd() or any(path.iterdir()):
        return False
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    for folder in sorted(_NEW_FOLDERS, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return not path.exists()


def hydra_run_dir() -> Path | None:
    """The output directory Hydra made for this job (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    out = HydraConfig.get().runtime.get("output_dir")
    return Path(out).resolve() if out else None


def one_line(message) -> str:
    """A message on one line (a log line a person and a test can read as one mistake)."""
    return " ".join(str(message).split())


def refuse(script: str, error: str, message) -> None:
    """One line on stderr in the log's shape and exit status 2: for a mistake found before
    the script's logging is set up."""
    print(f"[{script}][ERROR] - {error}: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(2)


# Option paths of the configs before every method's options moved to the group's root (the
# object the group builds), run length and cadence to trainer.* and batch size to data.*.
_MOVED = (("method.module.method.", "method."), ("method.module.", "method."),
          ("method.max_steps", "trainer.max_steps"),
          ("method.val_every", "trainer.val_check_interval"),
          ("method.batch_size", "data.batch_size"))


def moved_option(key: str) -> str | None:
    """The one-line answer to an option path that has moved (None for any other path)."""
    for old, new in _MOVED:
        if key == old.rstrip(".") or key.startswith(old):
            now = new + key[len(old):] if old.endswith(".") else new
            return (f"{key} has moved: it is {now} now (every method's options sit at method.*, "
                    "run length and cadence at trainer.*, batch size at data.*)")
    if key == "method.frozen_generator":
        return ("method.frozen_generator is gone: a method that builds its own generator says "
                "so in its config (method.generator)")
    return None


def check_command_line(config_name: str, argv: list[str], script: str) -> DictConfig | None:
    """Compose the script's config from ``argv`` as Hydra will, before Hydra runs the job: a
    mistake in the command line (an unknown option or group choice, a malformed override, a
    missing ``method=``) is then one line and exit status 2, where Hydra prints several lines
    and exits 1. Hydra's own flags (``--multirun``, ``--help``, ``-cd``, ...) are left to it."""
    for arg in argv:
        moved = moved_option(arg.lstrip("+~").split("=", 1)[0])
        if moved:
            refuse(script, "CommandLineError", moved)
    if any(arg.startswith("-") for arg in argv):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    configs = Path(__file__).resolve().parents[1] / "configs"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
            return compose(config_name, overrides=list(argv))
    except (HydraException, OmegaConfBaseException) as err:
        # Hydra's list of search paths says nothing about the mistake
        message = str(err).split("Config search path:")[0]
        refuse(script, "CommandLineError", f"{message} (python {script}.py --help lists the options)")
    finally:
        GlobalHydra.instance().clear()


def show_full_errors(cfg: DictConfig | None = None) -> bool:
    """Whether user mistakes keep their traceback: ``debug=true`` on the command line, or
    ``HYDRA_FULL_ERROR=1`` in the environment."""
    debug = cfg.get("debug") if cfg is not None else None
    return bool(debug) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_setup_error(fn, cfg: DictConfig, log, run_dir: Path | None = None) -> None:
    """Run a script's job; a user's mistake (a ``UserError``, or one a config's constructor
    raised, which Hydra wraps) is one clear line on the log and exit status 2, not a traceback.
    Any other exception is a bug and keeps its traceback; ``debug=true`` or ``HYDRA_FULL_ERROR=1``
    keep it for user mistakes too. ``run_dir``: the job's own run directory, removed if the
    refusal left nothing in it but Hydra's start-up files."""
    try:
        fn(cfg)
    except Exception as err:
        mistake = user_error_in(err)
        if mistake is None or show_full_errors(cfg):
            raise
        log.error("%s: %s", type(mistake).__name__, one_line(mistake))
        logging.shutdown()  # the log file is closed before its directory goes
        remove_if_empty(run_dir)
        sys.exit(2)
