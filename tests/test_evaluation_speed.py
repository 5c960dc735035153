"""Issue 30, the evaluation's cost: the sets' RCA reconstructors trained in one loop give the
numbers of separate ones, early stopping stops and the report says so, the reported time covers
the baselines, the reconstructor reads the images at the size asked, and the report says when
RCA cannot separate the sets. Tiny random generators: the machinery, not the results."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import EVAL_TINY, TINY, compose_cfg

import evaluation.run as evaluation_run
from directions import Directions, LinearDirections, baseline_set
from evaluation.run import run_evaluation
from generators import random_generator
from metrics.evaluation import EvaluationSettings, evaluate_directions, evaluate_sets
from metrics.rca import RCASettings, read_size, reconstructor_accuracies, reconstructor_accuracy
from metrics.report import rca_separation_note, rca_training_note


@pytest.fixture(scope="module")
def generator():
    return random_generator("dcgan", latent_dim=8, resolution=16, width=8, name="tiny16")


def _set(kind: str, count: int, seed: int = 0, alpha_range: float = 6.0) -> Directions:
    return Directions(baseline_set(kind, 8, count, init_seed=seed),
                      {"method": kind, "alpha_range": alpha_range})


def _sets() -> dict[str, Directions]:
    # the coordinate set is smaller (as where K exceeds the latent size) and another range
    return {"learned": _set("random", 4, seed=3), "random": _set("random", 4),
            "coordinate": _set("id", 3, alpha_range=3.0)}


SMALL = dict(steps=12, batch_size=16, eval_samples=48, val_samples=32)


def test_batched_rca_equals_separate_reconstructors(generator):
    """One loop over shared draws = each set trained alone (the old protocol): the same initial
    weights, latents, k and eps at every step, so the same numbers to the last bit (no
    tolerance needed: no batching of the models changes the arithmetic)."""
    settings = RCASettings(**SMALL, check_every=0, patience=0)
    together = reconstructor_accuracies(_sets(), generator, settings, progress=False)
    for name, directions in _sets().items():
        alone = reconstructor_accuracy(directions, generator, settings, progress=False)
        assert together[name]["metrics"] == alone, name
        assert together[name]["training"]["batches"] == 12
        assert not together[name]["training"]["stopped_early"]
    # without a stopping rule (patience 0, the default) nothing is checked: none of the checks' cost
    unchecked = reconstructor_accuracies(_sets(), generator, RCASettings(**SMALL, check_every=4, patience=0),
                                         progress=False)
    for name in together:
        assert unchecked[name]["metrics"] == together[name]["metrics"]
        assert unchecked[name]["training"]["validation"] == []
    # checks under a rule that never fires record a history and change nothing
    checked = reconstructor_accuracies(_sets(), generator,
                                       RCASettings(**SMALL, check_every=4, patience=9, min_delta=0.0),
                                       progress=False)
    for name in together:
        assert checked[name]["metrics"] == together[name]["metrics"]
        assert [b for b, _ in checked[name]["training"]["validation"]] == [4, 8, 12]


def test_early_stopping_stops_each_reconstructor_on_its_own(generator):
    """A gain no check can reach (min_delta 2): every R stops after the first check that
    fails to beat the first, i.e. at 2 x check_every batches; a set needing no RCA is left
    out, and a rule that can never fire trains the full budget."""
    settings = RCASettings(**{**SMALL, "steps": 40}, check_every=5, patience=1, min_delta=2.0)
    out = reconstructor_accuracies(_sets(), generator, settings, progress=False)
    for name, result in out.items():
        assert result["metrics"]["rca_steps"] == 10, name
        assert result["training"]["stopped_early"] and len(result["training"]["validation"]) == 2
    never = RCASettings(**{**SMALL, "steps": 15}, check_every=5, patience=5, min_delta=2.0)
    assert reconstructor_accuracy(_set("random", 4), generator, never, progress=False)["rca_steps"] == 15


def test_a_patience_without_checks_is_refused():
    from common.errors import UserError
    with pytest.raises(UserError, match="check_every"):
        RCASettings(check_every=0, patience=2).check("evaluation.settings.rca")
    with pytest.raises(UserError, match="image_size"):
        RCASettings(image_size=4).check("evaluation.settings.rca")
    assert EvaluationSettings.from_dict({"rca": {"image_size": 32, "patience": 0}}).rca.image_size == 32


def test_the_reconstructor_reads_images_at_the_size_asked():
    assert read_size(None, 64) == 64 and read_size(32, 64) == 32 and read_size(48, 32) == 32
    big = random_generator("dcgan", latent_dim=8, resolution=64, width=4, name="tiny64")
    settings = RCASettings(steps=2, batch_size=4, eval_samples=4, check_every=0, patience=0)
    for size, read in ((None, 64), (32, 32)):
        out = reconstructor_accuracies({"a": _set("random", 3)}, big, replace(settings, image_size=size),
                                       progress=False)
        assert out["a"]["training"]["image_size"] == read


def test_evaluating_sets_together_gives_each_set_its_own_numbers(generator):
    """``evaluate_sets`` renders G(z) once for every set: the same effects, content and RCA as
    each set scored alone."""
    settings = EvaluationSettings(samples=16, batch_size=8, fid=False,
                                  rca=RCASettings(**SMALL, check_every=0, patience=0))
    together = evaluate_sets(_sets(), generator, None, settings, progress=False)
    assert set(together["seconds"]) == {"effects", "rca", "total"}
    for name, directions in _sets().items():
        alone = evaluate_directions(directions, generator, None, settings, progress=False)
        alone["metrics"].pop("seconds")
        assert together["results"][name]["metrics"] == alone["metrics"], name


@pytest.fixture
def tiny_run(tmp_path):
    """A tiny trained run's directions and its config, evaluated anew by each test."""
    from train import train
    cfg = compose_cfg(["method=voynov", "run_name=speed", *TINY], tmp_path)
    train(cfg)
    return cfg, tmp_path / "speed" / "directions.pt"


def _evaluation_cfg(cfg, *overrides):
    full = compose_cfg(["method=voynov", "run_name=speed", *TINY, *EVAL_TINY, *overrides],
                       cfg.paths.output_dir)
    return full.evaluation


@pytest.mark.slow
def test_the_reported_time_covers_the_baselines(tiny_run, monkeypatch, capsys):
    """The first evaluation computes the baselines in the same pass as the directions, and its
    time (evaluation.json, the directions' seconds, the printed line) covers them; the second
    takes them from the cache and says so. Early stopping is recorded in the report."""
    cfg, path = tiny_run
    calls = []
    inner = evaluation_run.evaluate_sets

    def timed(sets, *args, **kwargs):
        import time
        start = time.perf_counter()
        out = inner(sets, *args, **kwargs)
        calls.append((list(sets), time.perf_counter() - start))
        return out

    monkeypatch.setattr(evaluation_run, "evaluate_sets", timed)
    evaluation = _evaluation_cfg(cfg, "evaluation.settings.rca.steps=12",
                                 "evaluation.settings.rca.check_every=3",
                                 "evaluation.settings.rca.patience=1",
                                 "evaluation.settings.rca.min_delta=2.0")
    generator = random_generator(**{k: v for k, v in cfg.generator.items() if k != "_target_"})
    report = run_evaluation(evaluation, path, generator)
    (names, spent), = calls
    assert names == ["voynov", "random", "coordinate"]
    seconds = report["seconds"]
    assert seconds["computed"] == names and seconds["cached"] == []
    assert seconds["total"] >= round(spent, 1) and seconds["total"] >= seconds["effects"] + seconds["rca"]
    assert report["results"]["voynov"]["metrics"]["seconds"] == seconds["total"]
    saved = json.loads((path.parent / "evaluation.json").read_text())
    assert saved["seconds"] == seconds
    text = (path.parent / "evaluation.md").read_text()
    assert f"Evaluation time: {seconds['total']:g} s in all" in text and "for voynov, random, coordinate" in text
    assert "stopped early" in text and saved["results"]["random"]["rca_training"]["stopped_early"]
    assert saved["results"]["voynov"]["metrics"]["rca_steps"] == 6
    assert "for voynov, random, coordinate" in capsys.readouterr().out

    calls.clear()
    again = run_evaluation(evaluation, path, generator)
    assert calls[0][0] == ["voynov"]
    assert again["seconds"]["computed"] == ["voynov"] and again["seconds"]["cached"] == ["random", "coordinate"]
    assert "from the cache: random, coordinate" in capsys.readouterr().out


def test_rca_separation_note_when_the_sets_score_alike_near_one():
    note = rca_separation_note({"voynov": 0.97, "random": 0.96, "coordinate": 0.95}, "voynov", 16, 16)
    assert note.startswith("RCA cannot separate these sets (voynov 0.970, random 0.960, coordinate 0.950")
    assert "K = 16 directions in a 16-d latent space" in note and "all of it" in note
    # K well below the latent size: the reason is the step, not K
    other = rca_separation_note({"voynov": 0.97, "random": 0.95}, "voynov", 16, 512)
    assert "K = 16" not in other and "at these shifts" in other
    # separated, not near 1, or nothing to compare: no note
    assert rca_separation_note({"voynov": 0.97, "random": 0.80}, "voynov", 16, 16) is None
    assert rca_separation_note({"voynov": 0.60, "random": 0.58}, "voynov", 16, 16) is None
    assert rca_separation_note({"voynov": 0.97}, "voynov", 16, 16) is None
    assert rca_separation_note({"voynov": 0.97, "random": None}, "voynov", 16, 16) is None
    assert rca_separation_note({"voynov": 0.918, "random": 0.707, "coordinate": 0.758}, "voynov", 16, 16) is None


def test_rca_training_note_says_who_stopped_early():
    note = rca_training_note({"voynov": {"batches": 250, "max_batches": 500, "stopped_early": True,
                                         "image_size": 32, "validation": [[200, 0.9], [250, 0.905]]},
                              "random": {"batches": 500, "max_batches": 500, "stopped_early": False,
                                         "image_size": 32, "validation": []}}, 3, 50, 0.01)
    assert "voynov 250 / 500 batches (stopped early, validation accuracy 0.905)" in note
    assert "random 500 / 500 batches (each stops" in note and "gains less than 0.01 in 3 checks of 50 batches" in note
    assert rca_training_note({}, 3, 50, 0.01) is None


def test_the_report_notes_rca_cannot_separate_on_a_small_latent(tmp_path, monkeypatch, generator):
    """Through the evaluation run: the note is in evaluation.md and evaluation.json when the
    sets score alike near 1, and absent otherwise."""
    from omegaconf import OmegaConf
    path = tmp_path / "run" / "directions.pt"
    path.parent.mkdir()
    learned = Directions(LinearDirections(8, 8, init="randn", trainable=False, init_seed=1),
                         {"method": "voynov", "alpha_range": 6.0}, generator=generator)
    learned.save(path)

    def fake(scores):
        def evaluate(sets, *args, **kwargs):
            return {"results": {n: {"metrics": {"rca": scores[n]}} for n in sets},
                    "seconds": {"effects": 0.0, "rca": 0.0, "total": 0.0}}
        return evaluate

    cfg = OmegaConf.create({"regressor": None, "factors": None, "default_alpha_range": None,
                            "baselines": ["random", "coordinate"], "cache_dir": str(tmp_path / "cache"),
                            "traversal": {"num_seeds": 1, "steps": 2, "alpha": "auto", "max_directions": 2},
                            "settings": {"samples": 8, "batch_size": 8}})
    monkeypatch.setattr(evaluation_run, "evaluate_sets",
                        fake({"run": 0.97, "random": 0.96, "coordinate": 0.98}))
    report = run_evaluation(cfg, path, generator, label="run")
    assert any("K = 8 directions in a 8-d latent space" in n for n in report["notes"])
    assert "RCA cannot separate" in (path.parent / "evaluation.md").read_text()
    monkeypatch.setattr(evaluation_run, "evaluate_sets",
                        fake({"run": 0.97, "random": 0.70, "coordinate": 0.75}))
    (tmp_path / "cache").rename(tmp_path / "cache-old")  # the baselines computed anew
    report = run_evaluation(cfg, path, generator, label="run")
    assert not any("RCA cannot separate" in n for n in report["notes"])
    assert "RCA cannot separate" not in (path.parent / "evaluation.md").read_text()
