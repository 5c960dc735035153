"""Score any method's directions the same way, next to random and coordinate baselines.

    python evaluate.py directions=outputs/<run>/directions.pt
    python evaluate.py directions=... evaluation.settings.samples=1024 evaluation.settings.lpips=alex

Writes into the run's folder: evaluation.json (every metric and the effect matrix),
evaluation.md (the table), effect_matrix.png, traversal_annotated.png; and logs the table and
images to the run's W&B run (offline unless logged in). train.py calls ``run_evaluation`` at the
end of every run (``evaluation.enabled``).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from common.io import atomic_write, atomic_write_json
from common.loggers import finish_wandb
from common.runs import exit_on_setup_error, load_run_generator, register_resolvers, run_method_name
from datamodules.world import FACTORS
from generators.base import Generator
from lightning_modules.directions import Directions
from lightning_modules.voynov import make_directions
from metrics.distances import LPIPSUnavailable, make_lpips
from metrics.evaluation import EvaluationSettings, evaluate_directions
from metrics.report import annotated_traversal, effect_heatmap, markdown_table
from regressors.attributes import AttributeRegressor, load_regressor

log = logging.getLogger("evaluate")
register_resolvers()

BASELINES = {"random": "random", "coordinate": "id"}  # baseline name -> make_directions kind
# Part of every cached baseline's key: raise it when what an evaluation reports changes.
REPORT_VERSION = 2


class EvaluationSetupError(ValueError):
    """A mistake in what was asked to be evaluated, found before any work starts."""


def load_evaluation_regressor(cfg: DictConfig) -> AttributeRegressor:
    try:
        regressor = load_regressor(cfg.regressor)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationSetupError(str(err)) from err
    factors = cfg.get("factors")
    if factors == "world":
        try:
            regressor.check_factors(FACTORS, source="the shapes world")
        except ValueError as err:
            raise EvaluationSetupError(f"{err}; or set evaluation.factors=null to accept the "
                                       "regressor's own factors") from err
    elif factors is not None:
        regressor.check_factors(list(factors), source="evaluation.factors")
    return regressor


def baseline_directions(name: str, directions: Directions, seed: int):
    """A fixed set of the same count: random unit vectors, or the first coordinate axes."""
    count = directions.num_directions
    if name == "coordinate":
        count = min(count, directions.latent_dim)
    return make_directions(BASELINES[name], directions.latent_dim, count, init_seed=seed).eval()


def _cache_key(name: str, generator: Generator, regressor: AttributeRegressor, count: int,
               settings: EvaluationSettings) -> str:
    blob = json.dumps({"baseline": name, "version": REPORT_VERSION,
                       "generator": generator.sha256, "count": count,
                       "latent_dim": generator.latent_dim, "regressor": regressor.sha256,
                       "settings": settings.to_dict()}, sort_keys=True)
    return f"{name}-{(generator.sha256 or 'nohash')[:12]}-k{count}-" + \
        hashlib.sha256(blob.encode()).hexdigest()[:12]


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def prepare_evaluation(cfg: DictConfig) -> tuple[AttributeRegressor, EvaluationSettings,
                                                 torch.nn.Module | None]:
    """Loads and checks what an evaluation needs (regressor, settings, LPIPS), so that a
    mistake stops a run before training rather than after."""
    regressor = load_evaluation_regressor(cfg)
    try:
        settings = EvaluationSettings.from_dict(OmegaConf.to_container(cfg.settings, resolve=True))
    except (TypeError, ValueError) as err:
        raise EvaluationSetupError(f"evaluation.settings: {err}") from err
    lpips = None
    if settings.lpips:
        try:
            lpips = make_lpips(settings.lpips)
        except (LPIPSUnavailable, ValueError) as err:
            raise EvaluationSetupError(f"{err} (or set evaluation.settings.lpips=null)") from err
    unknown = set(cfg.baselines or []) - set(BASELINES)
    if unknown:
        raise EvaluationSetupError(f"unknown baselines {sorted(unknown)}; known: {sorted(BASELINES)}")
    return regressor, settings, lpips


def run_evaluation(cfg: DictConfig, directions_path: str | Path, generator: Generator,
                   loggers=(), label: str | None = None, prepared: tuple | None = None) -> dict[str, Any]:
    """Evaluates a directions file and its baselines; rank 0 writes the reports beside it.

    Every process of a DDP run calls this (each scores its share; the metrics sum the shares).
    """
    directions_path = Path(directions_path)
    run_dir = directions_path.parent
    try:
        directions = Directions.load(directions_path, generator=generator)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationSetupError(str(err)) from err
    directions.to(generator.device)
    regressor, settings, lpips = prepared or prepare_evaluation(cfg)
    # "auto" steps follow the range the directions were trained on (their own units).
    settings = settings.resolve(directions.meta.get("alpha_range"))
    lpips = lpips.to(generator.device) if lpips is not None else None
    rank, world_size = _dist()
    label = label or run_method_name(run_dir) or directions.meta.get("method", "directions")

    # Which baselines are cached is decided before any collective work, on every process alike.
    cache_dir = Path(cfg.cache_dir)
    sets: dict[str, Any] = {label: directions}
    cached: dict[str, dict] = {}
    keys: dict[str, str] = {}
    for name in cfg.baselines or []:
        fixed = baseline_directions(name, directions, settings.seed).to(generator.device)
        keys[name] = _cache_key(name, generator, regressor, fixed.num_directions, settings)
        cache_file = cache_dir / f"{keys[name]}.json"
        if cache_file.is_file():
            cached[name] = json.loads(cache_file.read_text())
        else:
            sets[name] = fixed

    results: dict[str, dict] = {}
    for name, dirs in sets.items():
        log.info("evaluating %s (%d directions)", name, dirs.num_directions)
        results[name] = evaluate_directions(dirs, generator, regressor, settings, rank, world_size,
                                            lpips=lpips)
        if name in keys and rank == 0:
            atomic_write_json(results[name], cache_dir / f"{keys[name]}.json")
    for name, result in cached.items():
        results[name] = dict(result, cached=True)
    order = [label] + [n for n in (cfg.baselines or []) if n in results]
    results = {name: results[name] for name in order}
    num_factors = results[label]["num_factors"]
    table = markdown_table([(name if name == label else f"{name} (baseline)", r["metrics"])
                            for name, r in results.items()], num_factors)
    report = {"directions": str(directions_path), "method": directions.meta.get("method"),
              "run_name": run_dir.name, "generator": generator.identity(),
              "regressor": {"path": str(cfg.regressor), "sha256": regressor.sha256},
              "settings": settings.to_dict(), "label": label, "order": order, "results": results,
              "table": table}
    if rank == 0:
        _write_reports(report, run_dir, directions, generator, cfg, loggers)
        print(f"\nEvaluation of {directions_path} ({results[label]['metrics']['seconds']} s):\n\n{table}")
    return report


@torch.no_grad()
def _write_reports(report: dict, run_dir: Path, directions: Directions, generator: Generator,
                   cfg: DictConfig, loggers) -> None:
    result = report["results"][report["label"]]
    atomic_write_json(report, run_dir / "evaluation.json")
    atomic_write(run_dir / "evaluation.md", lambda handle: handle.write(report["table"].encode()))
    heatmap = effect_heatmap(result["effect_matrix"], result["factors"], run_dir / "effect_matrix.png",
                             title=f"{report['label']}: change per unit step")
    # Rows: directions by their total effect; each labelled with the factor it moves most.
    effects = torch.tensor(result["effect_matrix"])
    trav = cfg.traversal
    order = effects.sum(1).argsort(descending=True)[: trav.max_directions].tolist()
    seeds = torch.Generator().manual_seed(20201)
    latents = generator.sample(trav.num_seeds, generator=seeds)
    alpha = 2 * report["settings"]["alpha"] if trav.alpha == "auto" else float(trav.alpha)
    alphas = torch.linspace(-alpha, alpha, trav.steps).tolist()
    rows, labels = [], []
    for k in order:
        path = directions.traverse(latents, k, alphas).flatten(0, 1)
        rows.append(generator(path))
        f = result["dominant_factor"][k]
        purity = effects[k, f] / effects[k].sum().clamp_min(1e-12)
        labels.append(f"dir {k}: {result['factors'][f]}\n{effects[k, f]:.3f}/step, purity {purity:.2f}")
    traversal = annotated_traversal(rows, labels, run_dir / "traversal_annotated.png",
                                    columns=trav.num_seeds * trav.steps)
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            columns = ["directions"] + sorted({k for r in report["results"].values() for k in r["metrics"]})
            data = [[name] + [r["metrics"].get(c) for c in columns[1:]]
                    for name, r in report["results"].items()]
            logger.log_table(key="evaluation/table", columns=columns, data=data)
            logger.log_image(key="evaluation/effect_matrix", images=[str(heatmap)])
            logger.log_image(key="evaluation/traversal", images=[str(traversal)],
                             caption=["rows: directions by total effect, labelled with the factor "
                                      "each moves most; columns: seeds x alpha"])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    path = Path(cfg.directions)
    if not path.is_file():
        raise EvaluationSetupError(f"directions file not found: {path} (a run writes "
                                   "outputs/<run_name>/directions.pt at the end of training)")
    generator = load_run_generator(path, cfg.generator, cfg.generator_from_run)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    try:
        return run_evaluation(cfg.evaluation, path, generator, loggers)
    finally:
        finish_wandb(loggers, log)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exit_on_setup_error(evaluate, cfg, (EvaluationSetupError, FileNotFoundError), log)


if __name__ == "__main__":
    main()
