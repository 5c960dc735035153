"""Issue 28, part 3: every number a user gives is checked where it enters (common/checks.py),
with one line naming the option, raised as the script's setup error before any work: edit.py,
evaluate.py (and the end-of-run evaluation), explore.py, the generators' truncation, and
train.py's method numbers and trainer devices. The scripts' job functions are called on
composed Hydra configs (the path the command line takes, without a second interpreter)."""
from __future__ import annotations

import glob
import logging
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, EVAL_TINY, compose_cfg
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import edit
import evaluate
import train
from common.checks import integer, integers, number, numbers
from common.errors import UserError
from common.runs import exit_on_setup_error
from directions import Directions, LinearDirections
from evaluation.run import check_evaluation
from generators import load_generator, random_generator

TINY_DCGAN = dict(latent_dim=8, resolution=16, width=4)
TINY_STYLEGAN = dict(resolution=8, style_dim=8, n_mlp=1, channels=[8, 8])


def _compose(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.fixture(scope="module")
def directions_file(tmp_path_factory) -> Path:
    """A directions file of a tiny DCGAN (its build config recorded), with a good
    evaluation.json beside it."""
    run = tmp_path_factory.mktemp("run")
    generator = random_generator("dcgan", **TINY_DCGAN)
    path = run / "directions.pt"
    Directions(LinearDirections(8, 3, init_seed=0), {"method": "voynov", "alpha_range": 3.0},
               generator=generator).save(path)
    (run / "evaluation.json").write_text('{"good": true}')
    return path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- the shared validators ------------------------------------------------------------------
def test_validators_name_the_option_and_the_value():
    with pytest.raises(ValueError, match=r"^alphas=\[nan\]: expected a list of finite numbers"):
        numbers([float("nan")], "alphas")
    with pytest.raises(ValueError, match=r"^x=\[1, 'a', 3\]: .* \(item 1 is 'a'\)$"):
        numbers([1, "a", 3], "x")
    with pytest.raises(ValueError, match=r"^fps=0: expected a finite number > 0$"):
        number(0, "fps", low=0, low_open=True)
    with pytest.raises(ValueError, match=r"^n=True: expected an integer >= 1$"):
        integer(True, "n", low=1)  # a bool is no count
    with pytest.raises(ValueError, match=r"^n=3.0: expected an integer in 1..5$"):
        integer(3.0, "n", low=1, high=5)
    with pytest.raises(ValueError, match=r"^d=\[0, 0\]: .*each once"):
        integers([0, 0], "d", low=0, unique=True)
    with pytest.raises(ValueError, match=r"^p=inf: expected a finite number in \[-1, 2\]"):
        number(float("inf"), "p", low=-1, high=2)
    assert number("auto", "a", low=0, words=("auto",)) == "auto"
    assert number(None, "a", none=True) is None and integers(3, "s") == [3]
    assert numbers([-1, 0, 2.5], "alphas") == [-1.0, 0.0, 2.5]


# ---- edit.py ------------------------------------------------------------------------------------
EDIT_BAD = [
    ("alphas=[nan]", "alphas=[nan]: expected auto or a list of finite numbers"),
    ("alphas=[inf]", "alphas=[inf]: expected auto or a list"),
    ("alphas=abc", "alphas='abc': expected auto or a list"),
    ("alphas=[0,abc]", "alphas=[0, 'abc']: expected auto or a list"),
    ("seeds=[abc]", "seeds=['abc']: expected a list of seeds"),
    ("seeds=[-1]", "seeds=[-1]: expected a list of seeds (integers in 0.."),
    ("seeds=[1.5]", "seeds=[1.5]: expected a list of seeds"),
    ("direction=abc", "direction='abc': expected a direction index"),
    ("direction=-1", "direction=-1: expected a direction index"),
    ("direction=true", "direction=True: expected a direction index"),
    ("classes=[abc]", "classes=['abc']: expected a class index"),
    ("fps=0", "fps=0: expected a finite number in (0, 100]"),
    ("fps=nan", "fps=nan: expected a finite number in (0, 100]"),
    ("default_alpha_range=-3", "default_alpha_range=-3: expected a finite number > 0"),
    ("inversion.lr=nan", "inversion.lr=nan: expected a finite number > 0"),
    ("inversion.lr=0", "inversion.lr=0: expected a finite number > 0"),
    ("inversion.steps=0", "inversion.steps=0: expected an integer >= 1"),
    ("inversion.starts=abc", "inversion.starts='abc': expected an integer >= 1"),
    ("inversion.seed=-2", "inversion.seed=-2: expected an integer >= 0"),
]


@pytest.mark.parametrize("override, message", EDIT_BAD, ids=[o for o, _ in EDIT_BAD])
def test_edit_refuses_bad_numbers_before_any_work(directions_file, override, message, monkeypatch):
    cfg = _compose("edit", [f"directions={directions_file}", "format=gif", override])
    before = _files(directions_file.parent)
    # nothing is loaded: the check comes before the file and the generator are read
    monkeypatch.setattr(edit.Directions, "load", lambda *a, **k: pytest.fail("loaded the file"))
    with pytest.raises(UserError) as err:
        edit.edit(cfg)
    assert str(err.value).startswith(message), str(err.value)
    assert _files(directions_file.parent) == before


def test_edit_takes_good_numbers(directions_file, tmp_path):
    out = tmp_path / "strip.gif"
    cfg = _compose("edit", [f"directions={directions_file}", "format=gif", "fps=2.5",
                            "alphas=[-1,0,1.5]", "seeds=[3]", "direction=[0,2]", f"out={out}"])
    assert edit.edit(cfg) == out and out.stat().st_size > 0


def test_edit_script_exits_2_with_one_line(directions_file, caplog, monkeypatch):
    cfg = _compose("edit", [f"directions={directions_file}", "alphas=[nan]"])
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # keep this session's log handlers
    with pytest.raises(SystemExit) as exit_:
        exit_on_setup_error(edit.edit, cfg, edit.log)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert exit_.value.code == 2 and len(errors) == 1 and "alphas=[nan]" in errors[0]


# ---- evaluate.py and the end-of-run evaluation -------------------------------------------------
EVAL_BAD = [
    ("evaluation.settings.samples=0", "evaluation.settings.samples=0: expected an integer >= 1"),
    ("evaluation.settings.samples=-5", "evaluation.settings.samples=-5: expected an integer >= 1"),
    ("evaluation.settings.samples=1.5", "evaluation.settings.samples=1.5: expected an integer"),
    ("evaluation.settings.alpha=nan", "evaluation.settings.alpha=nan: expected a finite number > 0 (or auto)"),
    ("evaluation.settings.alpha=big", "evaluation.settings.alpha='big': expected a finite number"),
    ("evaluation.settings.batch_size=0", "evaluation.settings.batch_size=0: expected an integer >= 1"),
    ("evaluation.settings.threshold=2", "evaluation.settings.threshold=2: expected a finite number in (0, 1]"),
    ("evaluation.settings.min_effect=inf", "evaluation.settings.min_effect=inf: expected a finite number >= 0"),
    ("evaluation.settings.seed=abc", "evaluation.settings.seed='abc': expected an integer >= 0"),
    ("evaluation.settings.fid=maybe", "evaluation.settings.fid='maybe': expected true or false"),
    ("evaluation.settings.rca.steps=-1", "evaluation.settings.rca.steps=-1: expected an integer >= 0"),
    ("evaluation.settings.rca.batch_size=0", "evaluation.settings.rca.batch_size=0: expected an integer >= 1"),
    ("evaluation.settings.rca.eval_samples=0", "evaluation.settings.rca.eval_samples=0: expected an integer >= 1"),
    ("evaluation.settings.rca.lr=nan", "evaluation.settings.rca.lr=nan: expected a finite number > 0"),
    ("evaluation.settings.rca.shift_scale=0", "evaluation.settings.rca.shift_scale=0: expected a finite number > 0"),
    ("evaluation.settings.rca.shift_scale=6 evaluation.settings.rca.min_shift=9",
     "evaluation.settings.rca.min_shift=9: expected at most evaluation.settings.rca.shift_scale=6"),
    ("+evaluation.settings.rca.bogus=1", "evaluation.settings.rca: unknown settings ['bogus']"),
    ("evaluation.traversal.steps=1", "evaluation.traversal.steps=1: expected an integer >= 2"),
    ("evaluation.traversal.alpha=nan", "evaluation.traversal.alpha=nan: expected a finite number > 0"),
    ("evaluation.default_alpha_range=0", "evaluation.default_alpha_range=0: expected a finite number > 0"),
    ("evaluation.baselines=random", "evaluation.baselines='random': expected a list"),
]


@pytest.mark.parametrize("override, message", EVAL_BAD, ids=[o for o, _ in EVAL_BAD])
def test_evaluate_refuses_bad_settings_before_any_work(directions_file, override, message, monkeypatch):
    cfg = _compose("evaluate", [f"directions={directions_file}", "logger=none", *override.split()])
    before = {p: p.read_bytes() for p in directions_file.parent.iterdir()}
    monkeypatch.setattr(evaluate, "load_run_generator", lambda *a, **k: pytest.fail("loaded G"))
    with pytest.raises(UserError) as err:
        evaluate.evaluate(cfg)
    assert str(err.value).startswith(message), str(err.value)
    # the good evaluation.json beside the file is as it was (samples=0 once wrote zeros over it)
    assert {p: p.read_bytes() for p in directions_file.parent.iterdir()} == before


def test_the_shipped_evaluation_settings_pass():
    settings = check_evaluation(_compose("evaluate", ["directions=x.pt"]).evaluation)
    assert settings.samples == 512 and settings.alpha == "auto"


# ---- generators: truncation ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"truncation_psi": 5}, r"generator.truncation_psi=5: expected a finite number in \[-1, 2\]"),
    ({"truncation_psi": float("nan")}, r"generator.truncation_psi=nan: expected a finite number"),
    ({"truncation_psi": "abc"}, r"generator.truncation_psi='abc': expected a finite number"),
    ({"truncation_cutoff": 1.5}, r"generator.truncation_cutoff=1.5: expected an integer"),
    ({"truncation_cutoff": 0}, r"generator.truncation_cutoff=0: expected an integer"),
    ({"space": "w+", "truncation_cutoff": 99}, r"generator.truncation_cutoff=99: expected an integer in 1..4"),
])
def test_truncation_is_checked_where_the_view_is_set(kwargs, message):
    kwargs = {"space": "w", **kwargs}
    with pytest.raises(ValueError, match=message):
        random_generator("stylegan2", **kwargs, **TINY_STYLEGAN)
    if "cutoff=99" not in message:  # before the weights file is even looked for
        with pytest.raises(ValueError, match=message):
            load_generator("no/such/file.pt", **kwargs)
    g = random_generator("stylegan2", space="w+", **TINY_STYLEGAN)
    with pytest.raises(ValueError, match=message):
        g.set_view(**kwargs)
    assert g.truncation_psi == 1.0  # a refused view leaves the generator as it was


def test_truncation_inside_the_range_is_kept():
    g = random_generator("stylegan2", space="w+", truncation_psi=-1, truncation_cutoff=2, **TINY_STYLEGAN)
    assert (g.truncation_psi, g.truncation_cutoff) == (-1.0, 2)
    assert random_generator("stylegan2", space="w", truncation_psi=2, **TINY_STYLEGAN).truncation_psi == 2.0


def test_a_script_turns_a_bad_truncation_into_one_line(tiny_cfg, caplog, monkeypatch):
    cfg = tiny_cfg("generator=stylegan2_random", "generator.truncation_psi=5")
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    with pytest.raises(SystemExit) as exit_:
        exit_on_setup_error(train.train, cfg, train.log)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert exit_.value.code == 2 and len(errors) == 1
    assert "generator.truncation_psi=5: expected a finite number in [-1, 2]" in errors[0]


# ---- train.py: the method's numbers and the trainer ------------------------------------------------
TRAIN_BAD = [
    ("method.num_directions=0", "method.num_directions=0: expected an integer >= 1"),
    ("method.num_directions=abc", "method.num_directions='abc': expected an integer"),
    ("method.shift_scale=nan", "method.shift_scale=nan: expected a finite number"),
    ("method.shift_scale=abc", "method.shift_scale='abc': expected a finite number"),
    ("method.min_shift=inf", "method.min_shift=inf: expected a finite number"),
    ("method.optimizer.lr=nan", "method.optimizer.lr=nan: a learning rate must be"),
    ("method.traversal.steps=0", "method.traversal.steps=0: expected an integer >= 1"),
    ("method.traversal.every_n_steps=-1",
     "method.traversal.every_n_steps=-1: expected an integer >= 0"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0: expected an integer >= 1"),
    ("trainer.max_steps=2.5", "trainer.max_steps=2.5: expected an integer >= 1"),
    ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1"),
    ("callbacks.checkpoint.every_n_train_steps=-1",
     "callbacks.checkpoint.every_n_train_steps=-1: expected an integer >= 0"),
    ("seed=-1", "seed=-1: expected an integer >= 0"),
    ("trainer.devices=99", "trainer.devices=99: expected a number of processes in 1.."),
    ("trainer.devices=0", "trainer.devices=0: expected a number of processes in 1.."),
    ("trainer.devices=[0,1]", "trainer.devices=[0, 1]: expected a number of processes"),
    ("+trainer.num_nodes=0", "trainer.num_nodes=0: expected an integer >= 1"),
]


@pytest.mark.parametrize("override, message", TRAIN_BAD, ids=[o for o, _ in TRAIN_BAD])
def test_train_refuses_bad_numbers_before_any_work(tiny_cfg, override, message, monkeypatch):
    cfg = tiny_cfg(override)
    monkeypatch.setattr(train, "instantiate", lambda *a, **k: pytest.fail("built something"))
    with pytest.raises(UserError) as err:
        train.train(cfg)
    assert str(err.value).startswith(message), str(err.value)
    assert not Path(cfg.paths.output_dir).exists() or not any(Path(cfg.paths.output_dir).iterdir())


@pytest.mark.parametrize("override, message", [
    ("evaluation.settings.samples=0", "evaluation.settings.samples=0: expected an integer >= 1"),
    ("evaluation.settings.alpha=nan", "evaluation.settings.alpha=nan: expected a finite number"),
])
def test_train_checks_its_end_of_run_evaluation_first(tiny_cfg, override, message, monkeypatch):
    cfg = tiny_cfg(*EVAL_TINY, override)
    monkeypatch.setattr(train, "instantiate", lambda *a, **k: pytest.fail("built something"))
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        train.train(cfg)
    train.check_numbers(tiny_cfg(override))  # not evaluated at the end: not refused


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_run_without_a_gpu_is_refused(tiny_cfg):
    with pytest.raises(UserError, match="trainer.accelerator=gpu: no CUDA GPU is visible"):
        train.check_trainer(tiny_cfg("trainer=ddp"))


def test_the_trainer_devices_that_exist_pass(tiny_cfg, monkeypatch):
    for override in ("trainer=ddp_cpu", "trainer.devices=auto", "trainer.devices=1"):
        train.check_trainer(tiny_cfg(override))
    # a machine with two GPUs: counts, -1, and lists of indices up to 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for override in ("trainer.devices=2", "trainer.devices=-1", "trainer.devices=[1]",
                     "trainer.devices=[0,1]", "trainer.devices=auto"):
        train.check_trainer(tiny_cfg("trainer=ddp", override))
    for override, message in (("trainer.devices=3", r"trainer.devices=3: expected a number of GPUs in 1..2"),
                              ("trainer.devices=[0,2]",
                               r"trainer.devices=\[0, 2\]: expected a list of GPU indices in 0..1"),
                              ("trainer.devices=[1,1]", r"trainer.devices=\[1, 1\]: .*each once")):
        with pytest.raises(UserError, match=message):
            train.check_trainer(tiny_cfg("trainer=ddp", override))


def _config_names(group: str) -> list[str]:
    return sorted(Path(p).stem for p in glob.glob(str(CONFIGS / group / "*.yaml")))


@pytest.mark.parametrize("method", _config_names("method"))
def test_every_method_config_passes_the_checks(method):
    cfg = compose_cfg([f"method={method}"])
    train.check_numbers(cfg)
    train.check_trainer(cfg)


@pytest.mark.parametrize("experiment", _config_names("experiment"))
def test_every_experiment_passes_the_checks(experiment):
    cfg = compose_cfg([f"experiment={experiment}"] + (["data.root=."] if "folder" in experiment else []))
    train.check_numbers(cfg)
    train.check_trainer(cfg)


# ---- explore.py -----------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("seed=abc", "seed='abc': expected an integer in 0..2147483647"),
    ("seed=-1", "seed=-1: expected an integer in 0.."),
    ("thumbnails=0", "thumbnails=0: expected an integer in 1..16"),
    ("strip_steps=1", "strip_steps=1: expected an integer in 2..15"),
    ("port=99999", "port=99999: expected an integer in 0..65535"),
    ("port=abc", "port='abc': expected an integer in 0..65535"),
    ("default_alpha_range=nan", "default_alpha_range=nan: expected a finite number > 0"),
])
def test_explore_refuses_bad_numbers_before_reading_files(directions_file, override, message, monkeypatch):
    pytest.importorskip("starlette", reason="the explorer's extra: pip install -e '.[explore]'")
    import explore

    cfg = _compose("explore", [f"directions={directions_file}", override])
    monkeypatch.setattr(explore.Explorer, "open", lambda *a, **k: pytest.fail("opened the files"))
    with pytest.raises(UserError) as err:
        explore.explore(cfg)
    assert str(err.value).startswith(message), str(err.value)
