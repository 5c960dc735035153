"""Score any method's directions the same way, next to random and coordinate baselines.

    python evaluate.py directions=outputs/<run>/directions.pt
    python evaluate.py directions=... evaluation.settings.samples=1024 evaluation.settings.lpips=alex

Writes into the run's folder: evaluation.json (every metric and the effect matrix),
evaluation.md (the table), effect_matrix.png, traversal_annotated.png; and logs the table and
images to the run's W&B run (offline unless logged in). The work is evaluation/run.py
(train.py runs the same at the end of every run).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from common.errors import UserError
from common.loggers import finish_wandb
from common.runs import check_command_line, exit_on_setup_error, register_resolvers, resolve_device
from directions import Directions
from evaluation.run import check_evaluation, run_evaluation
from generators.recorded import load_run_generator

log = logging.getLogger("evaluate")
register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    path = Path(cfg.directions)
    if not path.is_file():
        raise UserError(f"directions file not found: {path} (a run writes "
                                   "outputs/<run_name>/directions.pt at the end of training)")
    check_evaluation(cfg.evaluation)  # every number of the command, before any work
    device = resolve_device(cfg.get("device"))
    recorded = Directions.load(path).meta.get("generator_source")
    generator = load_run_generator(path, cfg.generator, cfg.generator_from_run, recorded, device,
                                   trusted_modules=cfg.get("trusted_modules"))
    # config-from-command-line
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    try:
        return run_evaluation(cfg.evaluation, path, generator, loggers)
    finally:
        finish_wandb(loggers, log)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_setup_error(evaluate, cfg, log)


def main() -> None:
    """The command line: a mistake in it is one line before Hydra runs the job."""
    check_command_line("evaluate", sys.argv[1:], "evaluate")
    _hydra_main()


if __name__ == "__main__":
    main()
