"""The ground-truth benchmark: every method on the built-in generators, scored against the world's
true factors (MIG, DCI, FactorVAE, Modularity, SAP through the encoder protocol of Khrulkov et
al.; evaluation/groundtruth.py), over several seeds, next to references, in one table.

    python benchmark.py                              # the whole grid (configs/benchmark.yaml)
    python benchmark.py quick=true                   # CI's smoke run: one view, two methods, one seed
    python benchmark.py seeds=[0] "views=[{name: dcgan-z, overrides: ['generator=dcgan_shapes'], methods: [sefa]}]"

Each cell (generator view x method x seed) is an ordinary ``train.py`` run in
``<out_dir>/cells/<view>-<method>-s<seed>`` (so it resumes from its checkpoint, and its
evaluation.json is the usual one); the protocol then writes ``groundtruth.json`` beside its
directions. A cell with ``groundtruth.json`` is done and skipped, so the grid can be spread over
several sittings, run in any order, or launched cell by cell (each cell's command is logged).
References (random and coordinate directions, the supervised oracle, the regressor as ceiling)
go through the same protocol in ``<out_dir>/references/``. Then ``benchmark.md``,
``benchmark.csv`` and ``benchmark.png`` (each metric per method, mean and spread over seeds) are
written to ``<out_dir>`` and logged to W&B.

A cell the protocol cannot score (one direction, no coordinate per direction) is a row saying
why, not a row of zeros.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from common.errors import UserError
from common.io import atomic_write, atomic_write_json
from common.runs import check_command_line, exit_on_setup_error, resolve_device

log = logging.getLogger("benchmark")
ROOT = Path(__file__).resolve().parent
REFERENCES = ("random", "coordinate", "oracle", "ceiling")
#: The table's columns: the ground-truth metrics, then the evaluation's own (from evaluation.json).
COLUMNS = (("mig", "MIG"), ("dci_disentanglement", "DCI-D"), ("dci_completeness", "DCI-C"),
           ("dci_informativeness", "DCI-I"), ("factor_vae", "FactorVAE"), ("modularity", "Modularity"),
           ("sap", "SAP"), ("rca", "RCA"), ("coverage", "coverage"), ("purity", "purity"))
QUICK = {"views": [{"name": "dcgan-z", "overrides": ["generator=dcgan_shapes"], "methods": ["sefa", "voynov"]}],
         "seeds": [0], "references": ["random", "coordinate"],
         "train_overrides": ["trainer.max_steps=20", "evaluation.enabled=false"],
         "protocol": {"generated": 1024, "steps": 100, "batch_size": 64, "world_samples": 600},
         "metrics": {"bins": 10, "factor_vae_train": 60, "factor_vae_eval": 30}}


@dataclass
class Cell:
    """One run of the grid: a method on a generator view with a seed."""

    view: str
    method: str
    seed: int
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.view}-{self.method}-s{self.seed}"


def settings_of(cfg: DictConfig) -> DictConfig:
    """The config with quick mode's sizes applied (``quick=true``)."""
    if not cfg.quick:
        return cfg
    return OmegaConf.merge(cfg, OmegaConf.create(QUICK))


def plan(cfg: DictConfig) -> list[Cell]:
    """The grid's cells, checked: view names are folder names, methods exist."""
    methods_dir = ROOT / "configs" / "method"
    cells, seen = [], set()
    for view in cfg.views:
        name = str(view.get("name") or "")
        if not name or "/" in name or name in seen:
            raise UserError(f"views: each view needs a distinct folder name, got {name!r}")
        seen.add(name)
        for method in view.methods:
            if not (methods_dir / f"{method}.yaml").is_file():
                known = sorted(p.stem for p in methods_dir.glob("*.yaml"))
                raise UserError(f"views[{name}].methods: no method {method!r}; known: {known}")
            for seed in cfg.seeds:
                cells.append(Cell(name, str(method), int(seed), [str(o) for o in view.overrides]))
    if not cells:
        raise UserError("the grid is empty: give views with methods and at least one seed")
    return cells


def train_command(cell: Cell, cfg: DictConfig, cells_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), f"method={cell.method}", *cell.overrides,
            f"seed={cell.seed}", f"paths.output_dir={cells_dir}", f"run_name={cell.name}", "ckpt_path=auto",
            *[str(o) for o in cfg.train_overrides]]


def protocol_settings(cfg: DictConfig, seed: int):
    from evaluation.groundtruth import MetricSettings, ProtocolSettings

    protocol = ProtocolSettings(**OmegaConf.to_container(cfg.protocol), seed=seed).check("protocol")
    metric = MetricSettings(**OmegaConf.to_container(cfg.metrics)).check("metrics")
    return protocol, metric


def score_file(directions_path: Path, cfg: DictConfig, seed: int, device) -> dict:
    """The protocol on a cell's directions (the generator rebuilt from the run's config.yaml)."""
    from directions import Directions
    from evaluation.groundtruth import cannot_score, score
    from generators.recorded import load_run_generator

    directions = Directions.load(directions_path)
    generator = load_run_generator(directions_path, OmegaConf.create({}), True,
                                   directions.meta.get("generator_source"), device)
    why = cannot_score(directions, generator)
    if why:
        return {"not_scored": why, "num_directions": directions.num_directions}
    protocol, metric = protocol_settings(cfg, seed)
    return score(directions.to(generator.device), generator, protocol, metric, progress=True)


def recorded_result(path: Path, cfg: DictConfig, seed: int) -> dict | None:
    """A cell's or reference's groundtruth.json when it was scored with this config's protocol
    and metric settings (a file scored with other sizes, or unreadable, is not reused)."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s: unreadable; scored again", path)
        return None
    if not isinstance(report, dict):
        return None
    if "not_scored" in report or "failed" in report:
        return report
    protocol, metric = protocol_settings(cfg, seed)
    if report.get("protocol") == protocol.to_dict() and report.get("metric_settings") == asdict(metric):
        return report
    log.info("%s: scored with other protocol or metric settings; scored again", path)
    return None


def run_cell(cell: Cell, cfg: DictConfig, cells_dir: Path, device) -> dict:
    folder = cells_dir / cell.name
    result = folder / "groundtruth.json"
    recorded = recorded_result(result, cfg, cell.seed)
    if recorded is not None:
        log.info("%s: done (%s)", cell.name, result)
        return recorded
    if not (folder / "directions.pt").is_file():
        command = train_command(cell, cfg, cells_dir)
        log.info("%s: training: %s", cell.name, " ".join(command[1:]))
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT)
        if done.returncode != 0:
            return {"failed": f"train.py exited with status {done.returncode} (see {folder / 'train.log'})"}
        train_seconds = round(time.perf_counter() - start, 1)
    else:
        train_seconds = None
    log.info("%s: scoring on the ground truth", cell.name)
    report = score_file(folder / "directions.pt", cfg, cell.seed, device)
    report["train_seconds"] = train_seconds
    atomic_write_json(report, result)
    return report


def reference_report(view: dict, ref: str, seed: int, cfg: DictConfig, device) -> dict:
    """A reference through the same protocol, on the view's generator (built from its
    overrides with the project's train config, as a cell's run would)."""
    from directions import Directions, baseline_set
    from evaluation.groundtruth import cannot_score, oracle_directions, regressor_codes, score, world_set
    from generators.recorded import rebuild_generator

    train_cfg = compose_train(list(view["overrides"]))
    generator = rebuild_generator(OmegaConf.to_container(train_cfg.generator, resolve=True), "the view's generator",
                                  trusted=()).to(device)
    from regressors.attributes import load_regressor

    regressor = load_regressor(generator.regressor_spec["path"]) if generator.regressor_spec else None
    protocol, metric = protocol_settings(cfg, seed)
    if ref in ("random", "coordinate"):
        k = min(int(cfg.reference_directions), generator.latent_dim) if ref == "coordinate" \
            else int(cfg.reference_directions)
        directions = Directions(baseline_set("random" if ref == "random" else "id", generator.latent_dim, k,
                                             init_seed=seed), generator=generator)
    elif ref == "oracle":
        if regressor is None:
            return {"not_scored": "the generator's config names no regressor: no labels to fit"}
        directions = oracle_directions(generator, regressor, seed=seed)
    else:  # ceiling: the regressor's outputs on the world's renders are the codes
        if regressor is None:
            return {"not_scored": "the generator's config names no regressor"}
        from datamodules.world import ShapesWorld
        from evaluation.groundtruth import disentanglement_scores, to_uint8

        images, factors = world_set(generator.resolution, protocol)
        world = ShapesWorld(generator.resolution)
        codes = regressor_codes(regressor, images, device=device)

        def encode_factors(f):
            return regressor_codes(regressor, to_uint8(world.render(f)), device=device).double().numpy()

        return {**disentanglement_scores(codes, factors, encode_factors, metric, seed),
                "protocol": protocol.to_dict(), "metric_settings": asdict(metric)}
    why = cannot_score(directions, generator)
    if why:
        return {"not_scored": why}
    return score(directions.to(generator.device), generator, protocol, metric, progress=True)


def compose_train(overrides: list[str]) -> DictConfig:
    """train.py's config for these overrides (the shipped configs, checked as on its command
    line); ``method=voynov`` stands in for the method, which a reference does not use."""
    cfg = check_command_line("train", ["method=voynov", *overrides], "benchmark")
    if cfg is None:
        raise UserError(f"views: overrides {overrides} cannot hold Hydra flags")
    return cfg


def run_reference(view: dict, ref: str, seed: int, cfg: DictConfig, refs_dir: Path, device) -> dict:
    result = refs_dir / f"{view['name']}-{ref}-s{seed}" / "groundtruth.json"
    recorded = recorded_result(result, cfg, seed)
    if recorded is not None:
        return recorded
    log.info("reference %s on %s, seed %d", ref, view["name"], seed)
    report = reference_report(view, ref, seed, cfg, device)
    result.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report, result)
    return report


def evaluation_figures(folder: Path) -> dict:
    """RCA, coverage and purity of a cell's own evaluation (evaluation.json), when it has one."""
    path = folder / "evaluation.json"
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
        label = report["label"]  # the run's own set (the results hold the baselines beside it)
        metrics = report["results"][label]["metrics"]
    except (ValueError, KeyError, StopIteration, TypeError, AttributeError):
        return {}
    return {k: metrics[k] for k in ("rca", "coverage", "purity") if isinstance(metrics.get(k), (int, float))}


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def gather(rows: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """One row per (view, method): mean and standard deviation of each column over the seeds,
    or the reason it was not scored."""
    table = []
    for (view, method), reports in rows.items():
        row = {"view": view, "method": method, "seeds": len(reports)}
        reasons = {r.get("not_scored") or r.get("failed") for r in reports} - {None}
        if reasons:
            row["note"] = "; ".join(sorted(reasons))
        for key, _ in COLUMNS:
            values = [r.get("scores", {}).get(key, r.get("evaluation", {}).get(key)) for r in reports]
            values = [float(v) for v in values if isinstance(v, (int, float))]
            if values:
                row[key] = mean_std(values)
        for key, values in (("run_seconds", [r.get("train_seconds") for r in reports]),
                            ("protocol_seconds", [(r.get("seconds") or {}).get("total") for r in reports])):
            values = [float(v) for v in values if isinstance(v, (int, float))]
            if values:  # what the cells took: the run (training and its evaluation), the protocol
                row[key], row[f"{key}_sum"] = sum(values) / len(values), sum(values)
        table.append(row)
    return table


def time_line(table: list[dict]) -> str:
    """The grid's measured time: every cell's run and protocol seconds summed (a cell scored
    from an existing directions file counts its protocol only)."""
    runs = sum(row.get("run_seconds_sum", 0.0) for row in table)
    protocol = sum(row.get("protocol_seconds_sum", 0.0) for row in table)
    return (f"Time of these cells and references: {(runs + protocol) / 3600:.2f} h "
            f"(runs {runs / 3600:.2f} h, protocol {protocol / 3600:.2f} h).")


def markdown(table: list[dict]) -> str:
    head = ("| view | method | seeds | " + " | ".join(title for _, title in COLUMNS)
            + " | run s | protocol s |")
    lines = [head, "|" + "---|" * (5 + len(COLUMNS))]
    for row in table:
        cells = [f"{row[k][0]:.3f} ± {row[k][1]:.3f}" if k in row else "n/a" for k, _ in COLUMNS]
        cells += [f"{row[k]:.0f}" if k in row else "" for k in ("run_seconds", "protocol_seconds")]
        line = f"| {row['view']} | {row['method']} | {row['seeds']} | " + " | ".join(cells) + " |"
        lines.append(line)
    notes = [f"- {row['view']} / {row['method']}: {row['note']}" for row in table if row.get("note")]
    return "\n".join(lines + [""] + [time_line(table)] + ([""] + ["Not scored:"] + notes if notes else [])) + "\n"


def write_csv(table: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["view", "method", "seeds", *[f"{k}_{s}" for k, _ in COLUMNS for s in ("mean", "std")], "note"])
    for row in table:
        numbers = [x for k, _ in COLUMNS
                   for x in ((f"{row[k][0]:.6g}", f"{row[k][1]:.6g}") if k in row else ("", ""))]
        writer.writerow([row["view"], row["method"], row["seeds"], *numbers, row.get("note", "")])
    atomic_write(path, lambda handle: handle.write(buffer.getvalue().encode()))


def figure(table: list[dict], path: Path) -> None:
    """Each ground-truth metric per method (mean, with the seeds' standard deviation), one row of
    panels per view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(dict.fromkeys(row["view"] for row in table))
    metrics = [(k, t) for k, t in COLUMNS[:7]]
    fig, axes = plt.subplots(len(views), len(metrics), figsize=(2.6 * len(metrics), 2.8 * len(views)),
                             squeeze=False)
    for i, view in enumerate(views):
        rows = [row for row in table if row["view"] == view]
        for j, (key, title) in enumerate(metrics):
            ax = axes[i][j]
            means = [row[key][0] if key in row else 0.0 for row in rows]
            stds = [row[key][1] if key in row else 0.0 for row in rows]
            ax.bar(range(len(rows)), means, yerr=stds, capsize=2,
                   color=["0.6" if row["method"] in REFERENCES else "C0" for row in rows])
            ax.set_xticks(range(len(rows)), [row["method"] for row in rows], rotation=70, fontsize=7)
            ax.set_ylim(0, 1)
            ax.set_title(f"{title} ({view})" if j == 0 else title, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


@dataclass
class Job:
    """One item of the grid: a cell (a method run, then the protocol) or a reference."""

    view: dict
    method: str  # the method, or the reference's name
    seed: int
    cell: Cell | None = None  # None: a reference

    @property
    def name(self) -> str:
        return f"{self.view['name']}-{self.method}-s{self.seed}"

    def folder(self, out_dir: Path) -> Path:
        return out_dir / ("cells" if self.cell else "references") / self.name


def jobs(cfg: DictConfig, cells: list[Cell]) -> list[Job]:
    """The cells, then the references of every view, in the order they run."""
    views = {str(v.name): OmegaConf.to_container(v) for v in cfg.views}
    work = [Job(views[c.view], c.method, c.seed, c) for c in cells]
    work += [Job(views[str(v.name)], str(ref), int(seed)) for v in cfg.views
             for ref in cfg.references for seed in cfg.seeds]
    return work


def parse_shard(shard) -> tuple[int, int] | None:
    """``"i/n"``: this process's part of the grid (the jobs i, i + n, i + 2n, ...); None: all."""
    if shard is None:
        return None
    index, _, count = str(shard).partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(index) < int(count):
        raise UserError(f"shard={shard}: expected i/n with 0 <= i < n (e.g. shard=0/4, or "
                        "shard=$SLURM_ARRAY_TASK_ID/4 in an array of 4 tasks)")
    return int(index), int(count)


def run_shards(cfg: DictConfig, overrides: list[str], workers: int, out_dir: Path) -> None:
    """``workers`` processes of this grid at once (``shard=i/workers`` each), the machine's
    cores shared between them (OMP_NUM_THREADS), each one's log in ``<out_dir>/shard-i-of-n.log``."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("workers", "shard", "logger")]
    out_dir.mkdir(parents=True, exist_ok=True)
    running = []
    for i in range(workers):
        command = [sys.executable, str(ROOT / "benchmark.py"), *keep, f"shard={i}/{workers}", "workers=1",
                   "logger=none"]
        path = out_dir / f"shard-{i}-of-{workers}.log"
        log.info("shard %d of %d (%d threads): %s; its log: %s", i, workers, threads, " ".join(command[1:]), path)
        handle = path.open("w")
        running.append((i, handle, subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle,
                                                    stderr=subprocess.STDOUT)))
    for i, handle, process in running:
        status = process.wait()
        handle.close()
        if status != 0:
            log.warning("shard %d of %d exited with status %d (see %s)", i, workers, status,
                        out_dir / f"shard-{i}-of-{workers}.log")


def benchmark(cfg: DictConfig, overrides: list[str] | None = None) -> list[dict]:
    """The grid: run what this process is given (every job; ``shard=i/n``'s part; with
    ``workers=n``, n processes of a part each; none with ``gather_only``), then table every job
    scored with these settings, whoever ran it. ``overrides``: the command line, for the
    ``workers`` processes."""
    cfg = settings_of(cfg)
    cells = plan(cfg)
    for ref in cfg.references:
        if ref not in REFERENCES:
            raise UserError(f"references: unknown {ref!r}; choose from {list(REFERENCES)}")
    protocol_settings(cfg, 0)  # every size checked before any work
    shard = parse_shard(cfg.get("shard"))
    workers = int(cfg.get("workers", 1) or 1)
    if workers < 1 or (workers > 1 and shard is not None):
        raise UserError(f"workers={workers}: expected 1 or more, and not with shard= (a shard runs in one process)")
    device = resolve_device(cfg.get("device"))
    out_dir = Path(cfg.out_dir)
    start = time.perf_counter()
    gather_only = bool(cfg.get("gather_only", False))
    work = jobs(cfg, cells)
    mine = [] if gather_only or workers > 1 else work if shard is None else work[shard[0]::shard[1]]
    if workers > 1 and not gather_only:
        run_shards(cfg, list(overrides or []), workers, out_dir)
    ran: dict[str, dict] = {}
    for i, job in enumerate(mine):
        if job.cell is not None:
            log.info("cell %d of %d: %s", i + 1, len(mine), job.name)
            ran[job.name] = run_cell(job.cell, cfg, out_dir / "cells", device)
        else:
            ran[job.name] = run_reference(job.view, job.method, job.seed, cfg, out_dir / "references", device)
    rows: dict[tuple[str, str], list[dict]] = {}
    missing = []
    for job in work:  # what this process ran (a failure included), else what is recorded
        report = ran.get(job.name) or recorded_result(job.folder(out_dir) / "groundtruth.json", cfg, job.seed)
        if report is None:
            missing.append(job.name)
            continue
        if job.cell is not None:
            report["evaluation"] = evaluation_figures(job.folder(out_dir))
        rows.setdefault((job.view["name"], job.method), []).append(report)
    if missing:
        log.info("%d cells and references not scored yet (other shards, or later sittings): %s",
                 len(missing), ", ".join(missing))
    if not rows:
        raise UserError(f"gather_only=true: no cell or reference in {out_dir} was scored with these settings "
                        "yet; run python benchmark.py without it first")
    table = gather(rows)
    text = markdown(table)
    atomic_write(out_dir / "benchmark.md", lambda handle: handle.write(text.encode()))
    write_csv(table, out_dir / "benchmark.csv")
    figure(table, out_dir / "benchmark.png")
    log.info("benchmark: %d cells and references in %.0f s; %s\n\n%s", len(work), time.perf_counter() - start,
             out_dir / "benchmark.md", text)
    log_to_wandb(cfg, out_dir, table, text)
    return table


def log_to_wandb(cfg: DictConfig, out_dir: Path, table: list[dict], text: str) -> None:
    """The table and the figure in the benchmark's W&B run (``logger=none``: none)."""
    loggers = cfg.get("logger") or {}
    if not loggers.get("wandb"):
        return
    from hydra.utils import instantiate

    # config-from-command-line: the project's logger config and the user's overrides
    logger = instantiate(loggers.wandb)
    columns = ["view", "method", "seeds", *[t for _, t in COLUMNS]]
    data = [[row["view"], row["method"], row["seeds"],
             *[(f"{row[k][0]:.3f} ± {row[k][1]:.3f}" if k in row else "n/a") for k, _ in COLUMNS]] for row in table]
    logger.log_table("benchmark/table", columns=columns, data=data)
    logger.log_image("benchmark/figure", images=[str(out_dir / "benchmark.png")])
    logger.experiment.finish()


@hydra.main(version_base="1.3", config_path="configs", config_name="benchmark")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)
    exit_on_setup_error(lambda c: benchmark(c, overrides), cfg, log)


def main() -> None:
    check_command_line("benchmark", sys.argv[1:], "benchmark")
    _hydra_main()


if __name__ == "__main__":
    main()
