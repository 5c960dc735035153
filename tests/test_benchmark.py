"""The ground-truth benchmark (benchmark.py): the grid's plan, the table, the cache, the quick
mode that CI runs, and the protocol's known answer on a generator that is the world itself."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import benchmark
from common.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _cfg(**changes):
    cfg = OmegaConf.load(ROOT / "configs" / "benchmark.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.paths = {"output_dir": "outputs"}
    return OmegaConf.merge(cfg, OmegaConf.create(changes))


def test_the_grid_is_every_view_method_and_seed():
    cfg = _cfg()
    cells = benchmark.plan(cfg)
    expected = sum(len(v.methods) for v in cfg.views) * len(cfg.seeds)
    assert len(cells) == expected and len({c.name for c in cells}) == expected
    assert cells[0].name == "dcgan-z-voynov-s0"
    command = benchmark.train_command(cells[0], cfg, Path("/x/cells"))
    assert "ckpt_path=auto" in command and "run_name=dcgan-z-voynov-s0" in command
    quick = benchmark.plan(benchmark.settings_of(_cfg(quick=True)))
    assert [c.name for c in quick] == ["dcgan-z-sefa-s0", "dcgan-z-voynov-s0"]


def test_shards_split_the_cells_then_the_references_without_overlap():
    cfg = _cfg()
    work = benchmark.jobs(cfg, benchmark.plan(cfg))
    cells = sum(len(v.methods) for v in cfg.views) * len(cfg.seeds)
    assert len(work) == cells + len(cfg.views) * len(cfg.references) * len(cfg.seeds)
    assert all(j.cell is not None for j in work[:cells]) and all(j.cell is None for j in work[cells:])
    assert work[cells].name == "dcgan-z-random-s0"
    assert work[cells].folder(Path("/o")) == Path("/o/references/dcgan-z-random-s0")
    parts = [work[i::3] for i in range(3)]
    names = [j.name for part in parts for j in part]
    assert sorted(names) == sorted(j.name for j in work) and len(set(names)) == len(work)
    assert benchmark.parse_shard("2/3") == (2, 3) and benchmark.parse_shard(None) is None
    for bad in ("3/3", "a/2", "1", "-1/2", "1/0"):
        with pytest.raises(UserError, match="expected i/n"):
            benchmark.parse_shard(bad)
    with pytest.raises(UserError, match="not with shard"):
        benchmark.benchmark(_cfg(workers=2, shard="0/2", gather_only=True))


@pytest.mark.parametrize("views, message", [
    ([{"name": "a/b", "overrides": [], "methods": ["sefa"]}], "distinct folder name"),
    ([{"name": "v", "overrides": [], "methods": ["sefa"]}, {"name": "v", "overrides": [], "methods": ["sefa"]}],
     "distinct folder name"),
    ([{"name": "v", "overrides": [], "methods": ["nope"]}], "no method 'nope'"),
    ([{"name": "v", "overrides": [], "methods": []}], "the grid is empty"),
])
def test_a_bad_grid_is_refused_before_any_work(views, message):
    cfg = _cfg()
    cfg.views = views
    with pytest.raises(UserError, match=message):
        benchmark.plan(cfg)


def test_the_table_gives_mean_and_spread_over_seeds_and_says_why_a_row_is_empty():
    rows = {("v", "sefa"): [{"scores": {"mig": 0.2}, "evaluation": {"rca": 0.9}},
                            {"scores": {"mig": 0.4}, "evaluation": {"rca": 0.7}}],
            ("v", "ganalyze"): [{"not_scored": "1 direction: the metrics compare codes, they need at least 2"}]}
    table = benchmark.gather(rows)
    sefa = table[0]
    assert sefa["mig"][0] == pytest.approx(0.3) and sefa["mig"][1] == pytest.approx(0.1414, abs=1e-4)
    assert sefa["rca"][0] == pytest.approx(0.8) and "dci_completeness" not in sefa
    text = benchmark.markdown(table)
    assert "| v | sefa | 2 | 0.300 ± 0.141 |" in text
    assert "v / ganalyze: 1 direction" in text and text.count("n/a") >= len(benchmark.COLUMNS)


def test_the_table_says_what_the_cells_took():
    """A cell's run (training and its evaluation) and protocol seconds, averaged over seeds, and
    the grid's total; a cell scored from an existing file has no run time and adds none."""
    rows = {("v", "sefa"): [{"scores": {"mig": 0.2}, "train_seconds": 100.0, "seconds": {"total": 50.0}},
                            {"scores": {"mig": 0.4}, "train_seconds": None, "seconds": {"total": 70.0}}],
            ("v", "random"): [{"scores": {"mig": 0.1}, "seconds": {"total": 30.0}}]}
    table = benchmark.gather(rows)
    assert table[0]["run_seconds"] == 100.0 and table[0]["protocol_seconds"] == 60.0
    assert "run_seconds" not in table[1]
    text = benchmark.markdown(table)
    assert "| 100 | 60 |" in text and "|  | 30 |" in text
    # runs 100 s, protocol 50 + 70 + 30 s
    assert "Time of these cells and references: 0.07 h (runs 0.03 h, protocol 0.04 h)." in text


def test_a_cells_evaluation_figures_are_its_own_sets_not_a_baselines(tmp_path):
    """evaluation.json holds the baselines beside the run's set, in name order: the table reads
    the set its ``label`` names."""
    report = {"label": "sefa", "results": {
        "coordinate": {"metrics": {"rca": 0.079, "coverage": 0, "purity": 0.27}},
        "random": {"metrics": {"rca": 0.085, "coverage": 0, "purity": 0.24}},
        "sefa": {"metrics": {"rca": 0.246, "coverage": 1, "purity": 0.31}}}}
    (tmp_path / "evaluation.json").write_text(json.dumps(report))
    assert benchmark.evaluation_figures(tmp_path) == {"rca": 0.246, "coverage": 1, "purity": 0.31}
    (tmp_path / "evaluation.json").write_text(json.dumps({"results": report["results"]}))
    assert benchmark.evaluation_figures(tmp_path) == {}


def test_gather_only_tables_what_is_scored_and_runs_nothing(tmp_path):
    """A grid spread over sittings: the table of the cells and references already scored with
    these settings; the rest are listed as not run, nothing is trained or scored."""
    from dataclasses import asdict

    cfg = _cfg(out_dir=str(tmp_path), gather_only=True, seeds=[0, 1], references=["random"],
               views=[{"name": "v", "overrides": ["generator=dcgan_shapes"], "methods": ["sefa"]}])
    with pytest.raises(UserError, match="no cell or reference"):
        benchmark.benchmark(cfg)
    protocol, metric = benchmark.protocol_settings(cfg, 0)
    done = tmp_path / "cells" / "v-sefa-s0" / "groundtruth.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"scores": {"mig": 0.25}, "protocol": protocol.to_dict(),
                                "metric_settings": asdict(metric), "train_seconds": 5.0,
                                "seconds": {"total": 60.0}}))
    table = benchmark.benchmark(cfg)
    assert [(row["method"], row["seeds"]) for row in table] == [("sefa", 1)]
    assert "| v | sefa | 1 | 0.250 ± 0.000 |" in (tmp_path / "benchmark.md").read_text()
    assert sorted(p.name for p in tmp_path.rglob("groundtruth.json")) == ["groundtruth.json"]


def test_a_recorded_result_is_reused_only_with_the_same_protocol_and_metric_settings(tmp_path):
    """The committed grid (results/benchmark) resumes across sittings: a cell scored with these
    sizes is done; one scored with other sizes, or a file that is not a report, is scored again."""
    from dataclasses import asdict

    cfg = _cfg()
    protocol, metric = benchmark.protocol_settings(cfg, 1)
    path = tmp_path / "groundtruth.json"
    assert benchmark.recorded_result(path, cfg, 1) is None
    same = {"scores": {"mig": 0.2}, "protocol": protocol.to_dict(), "metric_settings": asdict(metric)}
    path.write_text(json.dumps(same))
    assert benchmark.recorded_result(path, cfg, 1) == same
    assert benchmark.recorded_result(path, cfg, 2) is None  # the seed is part of the protocol
    assert benchmark.recorded_result(path, _cfg(protocol={"generated": 999}), 1) is None
    assert benchmark.recorded_result(path, _cfg(metrics={"bins": 7}), 1) is None
    path.write_text(json.dumps({"not_scored": "1 direction"}))
    assert benchmark.recorded_result(path, cfg, 1) == {"not_scored": "1 direction"}
    for text in ("{not json", "[1, 2]"):
        path.write_text(text)
        assert benchmark.recorded_result(path, cfg, 1) is None


def test_the_projects_grid_folder_keeps_only_each_cells_small_reports_in_git():
    """results/benchmark/cells/<cell>/: the reports and directions are committed, checkpoints
    and logs ignored (git check-ignore reads the repository's .gitignore)."""
    cell = "results/benchmark/cells/dcgan-z-sefa-s0"
    kept = [f"{cell}/{name}" for name in ("groundtruth.json", "evaluation.json", "evaluation.md",
                                           "directions.pt", "config.yaml")]
    ignored = [f"{cell}/checkpoints/last.ckpt", f"{cell}/wandb/run.log", f"{cell}/train.log",
               "results/benchmark/wandb/x"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *kept, *ignored], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout.split() == ignored


@pytest.mark.slow
def test_quick_mode_runs_the_grid_then_serves_it_from_the_cache(tmp_path):
    """What CI runs: two methods, one seed, tiny sizes; a second run trains and scores nothing."""
    command = [sys.executable, "benchmark.py", "quick=true", f"paths.output_dir={tmp_path}", "logger=none"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "benchmark"
    for name in ("benchmark.md", "benchmark.csv", "benchmark.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "cells" / "dcgan-z-sefa-s0" / "groundtruth.json").read_text())
    assert set(report["scores"]) == {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                                     "factor_vae", "modularity", "sap"}
    assert all(0.0 <= v <= 1.0 for v in report["scores"].values())
    table = (out / "benchmark.md").read_text()
    for method in ("sefa", "voynov", "random", "coordinate"):
        assert f"| dcgan-z | {method} | 1 |" in table
    before = {p: p.stat().st_mtime_ns for p in out.rglob("groundtruth.json")}
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "training" not in second.stderr + second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("groundtruth.json")} == before
    assert (out / "benchmark.md").read_text() == table


@pytest.mark.slow
def test_two_workers_share_the_quick_grid_and_table_it_whole(tmp_path):
    """workers=2: two shard processes (one torch thread each on 2 cores) run the quick grid's
    two cells and two references between them; the parent tables all four."""
    command = [sys.executable, "benchmark.py", "quick=true", "workers=2", f"paths.output_dir={tmp_path}",
               "logger=none"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "benchmark"
    logs = sorted(p.name for p in out.glob("shard-*.log"))
    assert logs == ["shard-0-of-2.log", "shard-1-of-2.log"]
    # jobs 0 and 2 (sefa, random) to shard 0; 1 and 3 (voynov, coordinate) to shard 1
    assert "dcgan-z-sefa-s0" in (out / logs[0]).read_text() and "dcgan-z-voynov-s0" in (out / logs[1]).read_text()
    assert "dcgan-z-voynov-s0: training" not in (out / logs[0]).read_text()
    table = (out / "benchmark.md").read_text()
    for method in ("sefa", "voynov", "random", "coordinate"):
        assert f"| dcgan-z | {method} | 1 |" in table


@pytest.mark.slow
def test_on_the_worlds_own_generator_its_axes_beat_a_random_rotation():
    """The known answer of the whole protocol: coordinate axes of a generator whose axis k is
    factor k score far above a random rotation of them on MIG, DCI and the FactorVAE score."""
    from test_groundtruth import WorldGenerator

    from directions import Directions, baseline_set
    from evaluation.groundtruth import MetricSettings, ProtocolSettings, score

    generator = WorldGenerator(32)
    settings = ProtocolSettings(generated=3000, steps=500, world_samples=2000)
    metric = MetricSettings(factor_vae_train=200, factor_vae_eval=100)
    axes = score(Directions(baseline_set("id", 6, 6)), generator, settings, metric, progress=False)["scores"]
    rotated = score(Directions(baseline_set("random", 6, 6, init_seed=0)), generator, settings, metric,
                    progress=False)["scores"]
    for key in ("mig", "dci_disentanglement", "factor_vae", "sap"):
        assert axes[key] > rotated[key] + 0.1, (key, axes[key], rotated[key])
