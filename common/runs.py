"""What the scripts that read a finished run share: where its files are, which generator it
used, and the config resolvers that turn a file's path into its run directory."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


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
        raise ValueError(f"device={spec}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"device={spec}: {count} CUDA GPU(s) visible here; use device=auto "
                             "or device=cpu")
    elif device.type != "cpu":
        raise ValueError(f"device={spec}: use auto, cpu, cuda or cuda:N")
    return device


def load_run_generator(directions_path: str | Path, generator_cfg: DictConfig, from_run: bool = True,
                       recorded: dict | None = None, device: str | torch.device | None = "cpu"):
    """The generator a directions file was made with: its run's config.yaml, else the build
    config the file records (``recorded``: its ``generator_source``), else ``generator_cfg``
    (also when ``from_run`` is false); on ``device`` (see ``resolve_device``)."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if from_run:
        config = run_config(Path(directions_path).parent)
        if config is not None and "generator" in config:
            generator_cfg = config.generator
        elif recorded:
            generator_cfg = OmegaConf.create(recorded)
    return instantiate(generator_cfg).to(device)


# What Hydra itself writes into a run directory before the job starts.
_HYDRA_ONLY = {".hydra", "train.log"}


def remove_if_only_hydra(run_dir: str | Path | None) -> bool:
    """Remove ``run_dir`` when it holds nothing but what Hydra wrote at start-up (``.hydra/``
    and the log): what a run refused before any work leaves behind. A directory holding
    anything else (a checkpoint, directions, a W&B run) is never touched."""
    if run_dir is None:
        return False
    path = Path(run_dir)
    if not path.is_dir() or path == Path.cwd() or not {p.name for p in path.iterdir()} <= _HYDRA_ONLY:
        return False
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def hydra_run_dir() -> Path | None:
    """The output directory Hydra made for this job (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    out = HydraConfig.get().runtime.get("output_dir")
    return Path(out).resolve() if out else None


def exit_on_setup_error(fn, cfg: DictConfig, errors: tuple[type[BaseException], ...], log,
                        run_dir: Path | None = None) -> None:
    """Run a script's job; a mistake in the command (one of ``errors``, found before any work)
    is one clear line on the log and exit status 2, not a traceback. ``run_dir``: the job's own
    run directory, removed if the refusal left nothing in it but Hydra's start-up files."""
    from hydra.errors import InstantiationException

    try:
        fn(cfg)
    except (*errors, InstantiationException) as err:
        # Hydra wraps what a constructor raised: report the constructor's own message.
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        log.error("%s: %s", type(cause).__name__, cause)
        logging.shutdown()  # the log file is closed before its directory goes
        remove_if_only_hydra(run_dir)
        sys.exit(2)
