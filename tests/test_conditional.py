"""Class-conditional editing end to end: every method on a tiny BigGAN and a tiny conditional
StyleGAN2 (an NVIDIA pickle, c_dim = 3), the classes of each batch passed to every generator
call; class-dependent directions (GANalyze's theta(y)) applied per sample by the artifact,
edit.py and evaluate.py; the per-class report."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import CONFIGS, EVAL_TINY, ROOT, TINY, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import edit
import evaluate
from common.errors import UserError
from common.images import save_grid
from directions import Directions, VectorDirections
from evaluation.run import NO_REGRESSOR
from generators import load_generator
from train import train

# learning runs, subprocesses: outside the fast loop (pytest -m "not slow")
pytestmark = pytest.mark.slow

REG = "shapes_regressor32.pt"
BIGGAN_CLASSES = [1, 3, 5]
FIT_FREE = ("sefa", "ganspace", "interfacegan", "lowrankgan", "plumerault")
# Each method's tiny settings: a couple of batches, its own regressor where it reads one.
METHODS = {
    "voynov": [], "warped": [],
    "ganalyze": [f"method.regressor={REG}"],
    "ganalyze_per_class": [f"method.regressor={REG}", "method.class_dependent=true"],
    "steerability": [f"method.regressor={REG}"],
    "eye": [f"method.regressor={REG}", "method.lambda_disc=0"],  # neither has a D
    "sefa": [], "ganspace": ["method.samples=16"],
    "interfacegan": [f"method.regressor={REG}", "method.samples=200",
                     "method.ratio=0.05"],
    "lowrankgan": ["method.samples=1"],
    "plumerault": [f"method.regressor={REG}", "method.samples=8",
                   "method.steps=2", "method.eval_samples=8",
                   "method.fit_steps=5", "method.knots=2",
                   "method.drop=0"],
}


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> dict[str, list[str]]:
    """The overrides of each tiny conditional generator: a BigGAN directory drawing classes
    1, 3, 5 (no regressor named: the factor metrics are off), and a conditional NVIDIA pickle at
    32 px with the shapes regressor named for its images."""
    import test_formats_nvidia as nvidia
    from test_formats_biggan import write_biggan

    root = tmp_path_factory.mktemp("conditional")
    write_biggan(root / "biggan")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nvidia.Generator(c_dim=3, img_resolution=32, channels=(16, 16, 8, 8)).eval()
    nvidia.write_snapshot(root / "cond.pkl", nvidia.snapshot(net))
    stylegan = ["generator=stylegan2", f"generator.path={root / 'cond.pkl'}",
                f"+generator.regressor={{path: {REG}, factors: world}}"]
    return {"biggan": ["generator=biggan", f"generator.path={root / 'biggan'}",
                       f"generator.classes=[{','.join(map(str, BIGGAN_CLASSES))}]"],
            "stylegan2": stylegan}


def run(generators, gen: str, name: str, out, *extra: str, space: str | None = None) -> dict:
    method = "ganalyze" if name == "ganalyze_per_class" else name
    tiny = [t for t in TINY if not (method in FIT_FREE and t.startswith(
        ("trainer.max_steps", "method.traversal.every_n_steps")))]
    view = [f"generator.space={space}"] if space else []
    cfg = compose_cfg([f"method={method}", f"run_name={name}", *tiny, *EVAL_TINY, *generators[gen],
                       *view, *METHODS[name], *extra], out)
    train(cfg)
    return json.loads((out / name / "evaluation.json").read_text())


# SeFa and GANSpace edit W: the conditional StyleGAN2 runs them there (classes enter the mapping).
CASES = [("biggan", m, None) for m in METHODS] + \
        [("stylegan2", m, "w" if m in ("sefa", "ganspace") else "z") for m in METHODS]


@pytest.mark.parametrize("gen, name, space", CASES)
def test_every_method_runs_on_a_conditional_generator(generators, tmp_path, gen, name, space):
    report = run(generators, gen, name, tmp_path, space=space)
    directions = Directions.load(tmp_path / name / "directions.pt")
    classes = BIGGAN_CLASSES if gen == "biggan" else [0, 1, 2]
    assert report["generator"]["num_classes"] == (10 if gen == "biggan" else 3)
    # The report's per-class table: the classes drawn, the same metrics as overall.
    assert report["per_class"] and set(report["per_class"]) <= {str(c) for c in classes}
    assert sum(m["samples"] for m in report["per_class"].values()) == 8
    assert "Per class" in (tmp_path / name / "evaluation.md").read_text()
    overall = report["results"][report["label"]]["metrics"]
    assert all(set(m) <= set(overall) for m in report["per_class"].values())
    if gen == "biggan":  # BigGAN names no regressor: no factor metrics, and the report says so
        assert report["regressor"] == {"path": None, "note": NO_REGRESSOR}
        assert "coverage" not in overall and NO_REGRESSOR in (tmp_path / name / "evaluation.md").read_text()
    else:
        assert all("coverage" in m for m in report["per_class"].values())
    if name == "ganalyze_per_class":  # one theta per class drawn, recorded as such
        assert directions.meta["direction_classes"] == classes == report["direction_classes"]
        assert directions.class_dependent and directions.num_directions == 1
        assert directions.directions.num_directions == len(classes)
    else:
        assert directions.meta.get("direction_classes") is None


def test_eye_is_refused_without_a_discriminator(generators, tmp_path):
    with pytest.raises(Exception, match="needs the generator's own trained discriminator"):
        run(generators, "biggan", "eye", tmp_path, "method.lambda_disc=0.05")


def test_class_dependent_directions_give_each_sample_its_class_direction(tmp_path):
    vectors = VectorDirections(6, 3, init_scale=1.0, keep_norm=True, init_seed=0)
    made_for = [4, 7, 9]
    directions = Directions(vectors, {"direction_classes": made_for, "alpha_range": 0.5})
    z, y = torch.randn(5, 6), torch.tensor([7, 4, 9, 7, 4])
    moved = directions.apply(z, [(0, 0.5), (0, -0.2)], y=y)
    for i in range(5):
        own = made_for.index(int(y[i]))
        expected = vectors.shift(vectors.shift(z[i:i + 1], own, 0.5), own, -0.2)
        assert torch.allclose(moved[i:i + 1], expected)
    assert directions.num_directions == 1
    # The file keeps which direction belongs to which class.
    directions.save(tmp_path / "d.pt")
    loaded = Directions.load(tmp_path / "d.pt")
    assert torch.equal(loaded.shift(z, 0, 0.3, y=y), directions.shift(z, 0, 0.3, y=y))
    with pytest.raises(ValueError, match="pass the classes y"):
        loaded.shift(z, 0, 0.3)
    with pytest.raises(ValueError, match=r"no direction for class\(es\) \[5\].*classes \[4, 7, 9\]"):
        loaded.shift(z, 0, 0.3, y=torch.tensor([5, 4, 4, 4, 4]))
    with pytest.raises(ValueError, match="indices 0..0"):
        loaded.shift(z, 1, 0.3, y=y)


@pytest.fixture(scope="module")
def per_class_run(generators, tmp_path_factory):
    """GANalyze's class-dependent variant on the tiny BigGAN, evaluated at its end."""
    out = tmp_path_factory.mktemp("runs")
    run(generators, "biggan", "ganalyze_per_class", out)
    return out / "ganalyze_per_class"


def _edit_cfg(run_dir, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("edit", overrides=[f"directions={run_dir}/directions.pt", *overrides])


def test_edit_renders_each_seed_with_its_class_direction(per_class_run, tmp_path):
    cfg = _edit_cfg(per_class_run, "seeds=[2,3]", "classes=[5,1]", "alphas=[-0.5,0.5]",
                    f"out={tmp_path}/edit.png")
    path = edit.edit(cfg)
    # Expected: each seed's latent (as draw() gives it) with class 5, then class 1, moved along
    # the theta stored for that class.
    directions = Directions.load(per_class_run / "directions.pt")
    g = load_generator(**{k: v for k, v in directions.meta["generator_source"].items()
                          if k != "_target_"})
    stored = directions.directions
    images = []
    for seed in (2, 3):
        for c in (5, 1):
            rng = torch.Generator().manual_seed(seed)
            g.sample_classes(1, rng)
            z = g.sample(1, rng)
            own = BIGGAN_CLASSES.index(c)
            with torch.no_grad():
                images += [g(stored.shift(z, own, a), torch.tensor([c])) for a in (-0.5, 0.5)]
    save_grid(torch.cat(images), tmp_path / "expected.png", nrow=2)
    assert list(Image.open(path).getdata()) == list(Image.open(tmp_path / "expected.png").getdata())
    with pytest.raises(UserError, match=r"none for class\(es\) \[2\]"):
        edit.edit(_edit_cfg(per_class_run, "classes=[1,2]"))


def test_evaluate_reports_per_class(per_class_run, tmp_path, monkeypatch):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        tiny = [o for o in EVAL_TINY if o != "evaluation.enabled=true"]
        cfg = compose("evaluate", overrides=[f"directions={per_class_run}/directions.pt", "logger=none",
                                             f"paths.output_dir={tmp_path}", *tiny,
                                             "evaluation.settings.samples=12"])
    monkeypatch.setattr("metrics.evaluation.MAX_CLASSES", 2)  # too many classes for a table
    assert "set generator.classes" in evaluate.evaluate(cfg)["per_class"]["note"]
    monkeypatch.undo()
    report = evaluate.evaluate(cfg)
    saved = json.loads((per_class_run / "evaluation.json").read_text())
    assert saved["per_class"] == report["per_class"]
    assert set(report["per_class"]) == {str(c) for c in BIGGAN_CLASSES}
    assert sum(m["samples"] for m in report["per_class"].values()) == 12
    assert "per_class" not in report["results"][report["label"]]
    text = (per_class_run / "evaluation.md").read_text()
    assert "| class | Lap1 | L2 |" in text and "made for classes [1, 3, 5]" in text


def test_edit_checks_classes_before_work(per_class_run, tmp_path):
    for value in ("classes=[1,-1]", "classes=dog", "classes=[]"):
        with pytest.raises(UserError,
                           match=r"classes=.*(expected a class index|has classes 0..9)"):
            edit.edit(_edit_cfg(per_class_run, value))
    # The real CLI: one clear line, exit status 2.
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline")
    done = subprocess.run([sys.executable, str(ROOT / "edit.py"),
                           f"directions={per_class_run}/directions.pt", "classes=10"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    message = "classes=10: generator 'biggan' has classes 0..9"
    assert done.returncode == 2 and message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
