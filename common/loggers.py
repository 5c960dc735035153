"""Logger factories that know about the run directory."""
from __future__ import annotations

import netrc
import os
import uuid
from pathlib import Path


def wandb_logged_in() -> bool:
    """True when an API key is at hand (environment or ~/.netrc); never touches the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(mode: str | None = None) -> str:
    if mode:
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


def wandb_logger(project: str, run_dir: str, name: str, mode: str | None = None, **kwargs):
    """A WandbLogger whose run id lives in ``<run_dir>/wandb_id.txt``.

    A resumed run (same run directory) reads the id back and continues the same W&B run.
    Offline unless logged in, so that a run never waits on the network.
    """
    from pytorch_lightning.loggers import WandbLogger

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / "wandb_id.txt"
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(project=project, name=name, id=run_id, resume="allow",
                       save_dir=str(run_dir), mode=wandb_mode(mode), **kwargs)


def finish_wandb(loggers, log) -> None:
    """Close the W&B run of any WandbLogger; when offline, say how to upload it."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            if getattr(run, "settings", None) is not None and run.settings.mode == "offline":
                log.info("W&B ran offline; upload this run with:  wandb sync %s",
                         Path(run.dir).parent)
            import wandb
            wandb.finish()
