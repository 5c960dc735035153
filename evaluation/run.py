"""The evaluation run: any method's directions scored the same way, next to random and
coordinate baselines (cached per generator identity), with the reports written beside them.

Used by train.py at the end of every run (``evaluation.enabled``) and by evaluate.py on any
directions file. Writes into the run's folder: evaluation.json (every metric and the effect
matrix), evaluation.md (the table), effect_matrix.png, traversal_annotated.png; and logs the
table and images to the run's W&B run (offline unless logged in).

Evaluation follows the generator: the attribute regressor and the factors it reads come from
the generator's config (``regressor: {path, factors}``); a generator that names none gets the
metrics that need no regressor (RCA, content, realism), and the report says how to get one.
On a conditional generator the report also gives the metrics of each class it draws (a second
table; ``per_class`` in evaluation.json), and says which class each direction of a
class-dependent set belongs to.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from clip_models import load_clip
from clip_models.base import check_words
from common.checks import integer, number
from common.errors import UserError
from common.io import atomic_write, atomic_write_json, file_sha256
from common.runs import run_method_name
from common.seeds import TRAVERSAL_SEED
from datamodules.world import FACTORS
from directions import Directions, baseline_set
from generators.base import Generator
from metrics.distances import LPIPSUnavailable, make_lpips
from metrics.evaluation import EvaluationSettings, evaluate_sets
from metrics.naming import agreement, name_directions, name_label, world_prompts  # noqa: F401 - name_label: the explorer's
from metrics.report import (  # noqa: F401 - report_describes: the explorer's
    annotated_traversal,
    effect_heatmap,
    markdown_table,
    rca_separation_note,
    rca_training_note,
    report_describes,
    timing_note,
)
from regressors.attributes import AttributeRegressor, load_regressor

log = logging.getLogger("evaluate")

BASELINES = {"random": "random", "coordinate": "id"}  # baseline name -> baseline_set kind
# Part of every cached baseline's key: raise it when what an evaluation reports changes.
REPORT_VERSION = 5  # 5: effects in units of each factor's spread (4: RCA stops early)
NO_REGRESSOR = ("factor metrics (coverage, purity, gap, focus, FID on regressor features) need an "
                "attribute regressor for this generator's images, and its config names none: "
                "train one on labelled images with `python train.py experiment=regressor_folder "
                "data.root=<images>` and pass evaluation.regressor=<run>/regressor.pt (or add "
                "regressor: {path: ..., factors: null} to the generator's config)")




def load_evaluation_regressor(cfg: DictConfig, generator: Generator) -> AttributeRegressor | None:
    """The regressor ``evaluation.regressor`` asks for: ``auto`` (the one the generator's config
    names, or none), ``null`` (none), or a path; checked against the factors it must read."""
    choice, factors = cfg.get("regressor", "auto"), cfg.get("factors", "auto")
    spec = generator.regressor_spec or {}
    if choice == "auto":
        choice = spec.get("path")
    if factors == "auto":
        factors = spec.get("factors")
    if not choice:
        return None
    regressor = load_regressor(choice)
    if factors == "world":
        try:
            regressor.check_factors(FACTORS, source="the shapes world")
        except UserError as err:
            raise UserError(f"{err}; or set evaluation.factors=null to accept the "
                                       "regressor's own factors") from err
    elif factors is not None:
        regressor.check_factors(list(factors), source="evaluation.factors")
    return regressor


def baseline_directions(name: str, directions: Directions, seed: int,
                        alpha_range: float | None) -> Directions:
    """A fixed set of the same count and layers (random unit vectors, or the first axes),
    measured on the same alpha range."""
    count = directions.num_directions
    if name == "coordinate":
        count = min(count, directions.latent_dim)
    fixed = baseline_set(BASELINES[name], directions.latent_dim, count, init_seed=seed,
                         layers=directions.layers, channels=getattr(directions.directions, "channels", None))
    return Directions(fixed, {"method": name, "alpha_range": alpha_range})


def _cache_key(name: str, generator: Generator, regressor: AttributeRegressor | None,
               fixed: Directions, settings: EvaluationSettings) -> str:
    """What a cached baseline result belongs to: the generator's whole identity, the regressor,
    the settings, and the set itself (its count and the W+ layers or S channels it moves: a
    baseline on the middle layers is another set than one on every layer)."""
    count = fixed.num_directions
    key = {"baseline": name, "version": REPORT_VERSION, "generator": generator.identity(),
           "count": count, "layers": fixed.layers,
           "regressor": regressor.sha256 if regressor is not None else None,
           "settings": settings.to_dict()}
    channels = getattr(fixed.directions, "channels", None)
    if channels is not None:  # (absent otherwise: the keys of earlier caches stay valid)
        key["channels"] = channels
    blob = json.dumps(key, sort_keys=True)
    return f"{name}-{(generator.sha256 or 'nohash')[:12]}-k{count}-" + \
        hashlib.sha256(blob.encode()).hexdigest()[:12]


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def check_evaluation(cfg: DictConfig) -> EvaluationSettings:
    """Every number of the ``evaluation`` options, checked before any work (train.py at start-up,
    evaluate.py before the generator is loaded, and ``prepare_evaluation``): the settings
    (``EvaluationSettings.check``), the annotated traversal, ``default_alpha_range``, and the
    baselines' names. A ``UserError`` names the option."""
    try:
        settings = EvaluationSettings.from_dict(
            OmegaConf.to_container(cfg.settings, resolve=True), prefix="evaluation.settings")
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from err
    trav = cfg.traversal
    integer(trav.num_seeds, "evaluation.traversal.num_seeds", low=1)
    integer(trav.steps, "evaluation.traversal.steps", low=2)
    number(trav.alpha, "evaluation.traversal.alpha", low=0, low_open=True, words=("auto",),
           hint="auto: twice evaluation.settings.alpha")
    integer(trav.max_directions, "evaluation.traversal.max_directions", low=1)
    number(cfg.get("default_alpha_range"), "evaluation.default_alpha_range", low=0,
           low_open=True, none=True)
    if cfg.baselines is not None and not isinstance(cfg.baselines, ListConfig):
        raise UserError(f"evaluation.baselines={cfg.baselines!r}: expected a list such "
                                   f"as [random, coordinate] ([] or null: none)")
    unknown = set(cfg.baselines or []) - set(BASELINES)
    if unknown:
        raise UserError(f"unknown baselines {sorted(unknown)}; known: {sorted(BASELINES)}")
    return settings


def prepare_naming(cfg: DictConfig, regressor: AttributeRegressor | None) -> dict[str, Any] | None:
    """The CLIP and the vocabulary of the directions' names (``evaluation.naming``), or None
    when naming is off. ``auto``: on with your own CLIP (``clip.arch``), or with the world CLIP
    when the generator is of the world (its regressor reads the world's factors)."""
    naming = cfg.get("naming")
    if naming is None or naming.enabled is False:
        return None
    clip_cfg = naming.clip
    own_clip = bool(clip_cfg.get("arch"))
    world = regressor is not None and list(regressor.factor_names) == list(FACTORS)
    if naming.enabled == "auto" and not (own_clip or world):
        return None
    if naming.enabled not in (True, "auto"):
        raise UserError(f"evaluation.naming.enabled={naming.enabled!r}: use auto, true or false")
    integer(naming.samples, "evaluation.naming.samples", low=1)
    integer(naming.steps, "evaluation.naming.steps", low=2)
    integer(naming.top, "evaluation.naming.top", low=1)
    template = str(naming.template)
    if "{}" not in template:
        raise UserError(f"evaluation.naming.template={template!r}: it needs a {{}} for the word")
    if naming.prompts == "world":
        factors = world_prompts()
        prompts = list(factors)
    elif isinstance(naming.prompts, ListConfig) and len(naming.prompts) >= 2:
        prompts = [template.format(str(w)) for w in naming.prompts]
        factors = {}
    else:
        raise UserError(f"evaluation.naming.prompts={naming.prompts!r}: world, or a list of at "
                        "least two words for your generator (with evaluation.naming.template)")
    clip = load_clip(str(clip_cfg.path), clip_cfg.get("arch"))
    check_words(clip, prompts)
    return {"clip": clip, "prompts": prompts, "factors": factors, "samples": int(naming.samples),
            "steps": int(naming.steps), "top": int(naming.top),
            "vocabulary": "world" if naming.prompts == "world" else "yours"}


def prepare_evaluation(cfg: DictConfig, generator: Generator
                       ) -> tuple[AttributeRegressor | None, EvaluationSettings, torch.nn.Module | None,
                                  dict[str, Any] | None]:
    """Loads and checks what an evaluation needs (regressor, settings, LPIPS, the CLIP of the
    names), so that a mistake stops a run before training rather than after."""
    settings = check_evaluation(cfg)
    regressor = load_evaluation_regressor(cfg, generator)
    lpips = None
    if settings.lpips:
        try:
            lpips = make_lpips(settings.lpips)
        except (LPIPSUnavailable, UserError) as err:
            raise UserError(f"{err} (or set evaluation.settings.lpips=null)") from err
    return regressor, settings, lpips, prepare_naming(cfg, regressor)


def direction_names(naming: dict[str, Any], directions: Directions, generator: Generator,
                    alpha: float, seed: int, dominant: list[str] | None) -> dict[str, Any]:
    """The ``names`` section of evaluation.json (metrics/naming.py)."""
    started = time.perf_counter()
    clip = naming["clip"].to(generator.device)
    names = name_directions(directions, generator, clip, naming["prompts"], alpha,
                            naming["samples"], naming["steps"], seed, naming["top"])
    section = {"clip": clip.identity(), "vocabulary": naming["vocabulary"], "alpha": alpha,
               "directions": names, "seconds": round(time.perf_counter() - started, 1)}
    if naming["factors"] and dominant is not None:
        section["agreement"] = agreement(names, naming["factors"], dominant)
    return section


def run_evaluation(cfg: DictConfig, directions_path: str | Path, generator: Generator,
                   loggers=(), label: str | None = None, prepared: tuple | None = None) -> dict[str, Any]:
    """Evaluates a directions file and its baselines; rank 0 writes the reports beside it.

    Every process of a DDP run calls this (each scores its share; the metrics sum the shares).
    The directions and the baselines not yet cached are scored in one pass
    (``evaluate_sets``); the time reported (``seconds`` in evaluation.json, the directions'
    ``metrics.seconds``, train.py's ``eval/seconds``, the printed line) is the whole
    evaluation's, baselines and reports included.
    """
    start = time.perf_counter()
    directions_path = Path(directions_path)
    run_dir = directions_path.parent
    directions = Directions.load(directions_path, generator=generator)
    directions.to(generator.device)
    regressor, settings, lpips, naming = prepared or prepare_evaluation(cfg, generator)
    # "auto" steps follow the range the directions were trained on (their own units).
    try:
        alpha_range, alpha_source = directions.alpha_range(default=cfg.get("default_alpha_range"))
    except UserError as err:
        raise UserError(f"{err} (or set evaluation.default_alpha_range)") from err
    settings = settings.resolve(alpha_range)
    lpips = lpips.to(generator.device) if lpips is not None else None
    rank, world_size = _dist()
    label = label or run_method_name(run_dir) or directions.meta.get("method", "directions")

    # Which baselines are cached is decided before any collective work, on every process alike.
    cache_dir = Path(cfg.cache_dir)
    sets: dict[str, Any] = {label: directions}
    cached: dict[str, dict] = {}
    keys: dict[str, str] = {}
    for name in cfg.baselines or []:
        fixed = baseline_directions(name, directions, settings.seed, alpha_range).to(generator.device)
        keys[name] = _cache_key(name, generator, regressor, fixed, settings)
        cache_file = cache_dir / f"{keys[name]}.json"
        if cache_file.is_file():
            cached[name] = json.loads(cache_file.read_text())
        else:
            sets[name] = fixed

    log.info("evaluating %s (%d directions)%s%s", label, directions.num_directions,
             f" and the baselines {', '.join(n for n in sets if n != label)} in one pass"
             if len(sets) > 1 else "", f"; cached: {', '.join(cached)}" if cached else "")
    scored = evaluate_sets(sets, generator, regressor, settings, rank, world_size,
                           lpips=lpips, per_class=[label])
    results: dict[str, dict] = scored["results"]
    for name in sets:
        if name in keys and rank == 0:
            atomic_write_json(results[name], cache_dir / f"{keys[name]}.json")
    for name, result in cached.items():
        results[name] = dict(result, cached=True)
    order = [label] + [n for n in (cfg.baselines or []) if n in results]
    results = {name: results[name] for name in order}
    num_factors = results[label].get("num_factors")
    table = results_table(results, label)
    per_class = results[label].pop("per_class", None)
    if per_class is not None:
        table += per_class_table(per_class, label, num_factors, directions.meta.get("direction_classes"))
    notes = [note for note in (
        rca_separation_note({n: r["metrics"].get("rca") for n, r in results.items()}, label,
                            directions.num_directions, directions.latent_dim),
        rca_training_note({n: results[n]["rca_training"] for n in sets if "rca_training" in results[n]},
                          settings.rca.patience, settings.rca.check_every, settings.rca.min_delta),
    ) if note]
    # the file's hash: a report describes these directions only while the file is unchanged
    report = {"directions": str(directions_path), "directions_sha256": file_sha256(directions_path),
              "method": directions.meta.get("method"),
              "run_name": run_dir.name, "generator": generator.identity(),
              "regressor": ({"path": str(regressor.path), "sha256": regressor.sha256}
                            if regressor is not None else {"path": None, "note": NO_REGRESSOR}),
              "alpha_range": {"value": alpha_range, "source": alpha_source},
              "settings": settings.to_dict(), "layers": directions.layers, "label": label,
              "order": order, "results": results,
              "direction_classes": directions.meta.get("direction_classes"), "table": table,
              "notes": notes,
              "seconds": dict(scored["seconds"], computed=list(sets), cached=list(cached))}
    if per_class is not None:
        report["per_class"] = per_class
    if naming is not None and rank == 0:
        ours = results[label]
        dominant = ([ours["factors"][int(f)] for f in ours["dominant_factor"]]
                    if "dominant_factor" in ours and "factors" in ours else None)
        report["names"] = direction_names(naming, directions, generator, 2 * settings.alpha,
                                          settings.seed, dominant)
    reports_start = time.perf_counter()
    figures = _figures(report, run_dir, directions, generator, cfg) if rank == 0 else None

    # The time of everything this evaluation did, its figures included, before the files say it.
    report["seconds"]["reports"] = round(time.perf_counter() - reports_start, 1)
    report["seconds"]["total"] = round(time.perf_counter() - start, 1)
    results[label]["metrics"]["seconds"] = report["seconds"]["total"]
    if rank == 0:
        _write_reports(report, run_dir, figures, loggers)
        print(f"\nEvaluation of {directions_path}: {timing_note(report['seconds'])}.\n\n{table}")
        for note in notes:
            print(f"{note}\n")
        print(f"alpha_range {alpha_range:g}: {alpha_source}")
        if regressor is None:
            print(f"\nNo regressor: {NO_REGRESSOR}.")
    return report


def results_table(results: dict[str, dict], label: str) -> str:
    """The report's main table (markdown): the run's set, then its baselines."""
    return markdown_table([(name if name == label else f"{name} (baseline)", r["metrics"])
                           for name, r in results.items()], results[label].get("num_factors"))


def report_text(report: dict) -> str:
    """evaluation.md: the table, the notes, the time."""
    text = report["table"] + "".join(f"\n{note}\n" for note in report["notes"])
    text += f"\nEvaluation time: {timing_note(report['seconds'])}.\n"
    return text + ("" if report["regressor"]["path"] else f"\n{NO_REGRESSOR}.\n")


def per_class_table(per_class: dict, label: str, num_factors: int | None,
                    direction_classes: list[int] | None) -> str:
    """The report's per-class section (markdown) of ``evaluate_directions``' ``per_class``."""
    own = (" Class-dependent directions: each sample moves along its own class's direction "
           f"(made for classes {sorted(set(direction_classes))})." if direction_classes else "")
    if "note" in per_class:
        return f"\nPer class: {per_class['note']}.{own}\n"
    rows = [(f"{c} (n={m['samples']})", m) for c, m in per_class.items()]
    return (f"\nPer class ({label}; the classes the generator draws).{own}\n\n"
            + markdown_table(rows, num_factors, first="class"))


@torch.no_grad()
def _figures(report: dict, run_dir: Path, directions: Directions, generator: Generator,
             cfg: DictConfig) -> tuple[Path | None, Path]:
    """The effect-matrix heatmap (None without a regressor) and the annotated traversal."""
    result = report["results"][report["label"]]
    heatmap = None
    trav = cfg.traversal
    if "effect_matrix" in result:
        heatmap = effect_heatmap(result["effect_matrix"], result["factors"],
                                 run_dir / "effect_matrix.png",
                                 title=f"{report['label']}: change per unit step, in factor spreads")
        # Rows: directions by their total effect; each labelled with the factor it moves most.
        effects = torch.tensor(result["effect_matrix"])
        order = effects.sum(1).argsort(descending=True)[: trav.max_directions].tolist()
        labels = []
        for k in order:
            f = result["dominant_factor"][k]
            purity = effects[k, f] / effects[k].sum().clamp_min(1e-12)
            labels.append(f"dir {k}: {result['factors'][f]}\n{effects[k, f]:.3f}/step, purity {purity:.2f}")
    else:
        order = list(range(min(directions.num_directions, trav.max_directions)))
        labels = [f"dir {k}" for k in order]
    latents, y = generator.draw(trav.num_seeds, torch.Generator().manual_seed(TRAVERSAL_SEED))
    alpha = 2 * report["settings"]["alpha"] if trav.alpha == "auto" else float(trav.alpha)
    alphas = torch.linspace(-alpha, alpha, trav.steps).tolist()
    rows = directions.traversal_rows(generator, latents, order, alphas, y=y)
    traversal = annotated_traversal(list(rows), labels, run_dir / "traversal_annotated.png",
                                    columns=trav.num_seeds * trav.steps)
    return heatmap, traversal


def _write_reports(report: dict, run_dir: Path, figures: tuple[Path | None, Path], loggers) -> None:
    """evaluation.json, evaluation.md (the table, the notes, the time) and the W&B logs."""
    atomic_write_json(report, run_dir / "evaluation.json")
    text = report_text(report)
    atomic_write(run_dir / "evaluation.md", lambda handle: handle.write(text.encode()))
    heatmap, traversal = figures
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            columns = ["directions"] + sorted({k for r in report["results"].values() for k in r["metrics"]})
            data = [[name] + [r["metrics"].get(c) for c in columns[1:]]
                    for name, r in report["results"].items()]
            logger.log_table(key="evaluation/table", columns=columns, data=data)
            if heatmap is not None:
                logger.log_image(key="evaluation/effect_matrix", images=[str(heatmap)])
            logger.log_image(key="evaluation/traversal", images=[str(traversal)],
                             caption=["rows: directions by total effect, labelled with the factor "
                                      "each moves most; columns: seeds x alpha"])
