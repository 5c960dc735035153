"""train.py as users run it: the Hydra command line, DDP on two CPU processes, multirun."""
import json

import pytest
import torch
from conftest import CONFIGS, EVAL_TINY, TINY, compose_cfg, run_script
from omegaconf import OmegaConf

from directions import Directions

GROUPS = ["method", "generator", "data", "trainer", "logger", "callbacks", "paths", "hydra",
          "experiment"]


@pytest.mark.parametrize("group", [g for g in GROUPS if g not in ("hydra",)])
def test_every_config_of_every_group_composes(group, tmp_path):
    options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    assert options, group
    for option in options:
        base = [] if group == "method" else ["method=voynov"]
        cfg = compose_cfg(base + [f"{group}={option}"], tmp_path)
        # resolving every interpolation catches typos in any config
        container = OmegaConf.to_container(cfg, resolve=True)
        assert container["run_name"]
        if group == "method":
            # max_steps: batches; null for a fit-free method, whose sample count sets it
            assert cfg.method.name and "_target_" in cfg.method
            assert (cfg.trainer.max_steps or 0) > 0 or "fit_free" in cfg.method._target_


def test_hydra_group_is_used_for_run_dirs(tmp_path):
    cfg = compose_cfg(["method=voynov", "run_name=abc"], tmp_path)
    assert cfg.paths.run_dir == f"{tmp_path}/abc"


@pytest.mark.slow
def test_forgetting_the_method_lists_the_options(tmp_path):
    result = run_script(["logger=none"], cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    message = result.stderr + result.stdout
    assert "You must specify 'method'" in message and "voynov" in message
    # method= lists direction methods only: pretraining and regressor training are experiments
    assert "pretrain_gan" not in message and "regressor" not in message.split("Available options")[-1]


@pytest.mark.slow
def test_a_run_refused_at_start_up_leaves_no_run_directory(tmp_path):
    """A mistake found before any work: one clear line, exit status 2, and no empty run
    directory left in outputs/ (Hydra had made one with its own files); a run directory that
    holds more than Hydra's files is kept."""
    result = run_script(["method=eye", "generator=glo_shapes", "logger=none", "run_name=refused"],
                        cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "needs the generator's own trained discriminator" in result.stderr + result.stdout
    assert not (tmp_path / "outputs" / "refused").exists()
    kept = tmp_path / "outputs" / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    result = run_script(["method=eye", "generator=glo_shapes", "logger=none", "run_name=kept"],
                        cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and (kept / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_run_name_that_is_a_path_is_refused_and_writes_nothing(tmp_path):
    (tmp_path / "work").mkdir()
    result = run_script(["method=voynov", "logger=none", "run_name=../escaped"],
                        cwd=tmp_path / "work", timeout=300)
    assert result.returncode == 2
    assert "is not a folder name" in result.stderr + result.stdout
    assert not (tmp_path / "work" / "escaped").exists() and not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("arg, message", [
    ("seed=abc", "seed='abc': expected an integer"),
    ("method.optimizer.lr=-1", "a learning rate must be a number >= 0"),
    ("trainer.max_steps=0", "trainer.max_steps=0: expected an integer >= 1"),
])
@pytest.mark.slow
def test_bad_numbers_get_one_clear_line(tmp_path, arg, message):
    result = run_script(["method=voynov", "logger=none", arg], cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("outputs/*"))


@pytest.mark.slow
def test_unknown_method_and_generator(tmp_path):
    for arg, group in (("method=nope", "method"), ("generator=nope", "generator")):
        result = run_script(["method=voynov", arg] if group == "generator" else [arg],
                            cwd=tmp_path, timeout=120)
        assert result.returncode != 0
        message = result.stderr + result.stdout
        assert f"Could not find '{group}/nope'" in message and "Available options" in message


@pytest.mark.slow
@pytest.mark.parametrize("method", ["voynov", "warped", "ganalyze", "steerability", "eye"])
def test_ddp_two_cpu_processes(tmp_path, method):
    # The tiny random generator has no discriminator: EYE runs without its term here.
    extra = ["method.lambda_disc=0"] if method == "eye" else []
    args = [f"method={method}", "trainer=ddp_cpu", "run_name=ddp", *TINY, *EVAL_TINY, *extra]
    result = run_script(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "outputs" / "ddp"
    directions = Directions.load(out / "directions.pt")
    assert directions.num_directions == {"voynov": 16, "warped": 16, "eye": 2}.get(method, 1)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    # each process evaluates its own held-out batches: 2 processes x 2 batches x 8 latents
    assert metrics["eval_samples"] == 32
    # the end-of-run evaluation: each process scores 4 of the 8 samples; the metrics sum them
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert all(r["metrics"]["samples"] == 8 for r in evaluation["results"].values())
    assert metrics["eval/samples"] == 8
    assert torch.load(out / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
    assert not list(tmp_path.glob("outputs/*-*"))  # the processes shared one run directory


@pytest.mark.slow
def test_multirun_gives_one_directory_per_job(tmp_path):
    args = ["-m", "method=voynov", "seed=0,1", "run_name=sweep", *TINY]
    result = run_script(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "outputs").iterdir() if p.is_dir())
    assert runs == ["sweep-0", "sweep-1"]
    a = Directions.load(tmp_path / "outputs/sweep-0/directions.pt")
    b = Directions.load(tmp_path / "outputs/sweep-1/directions.pt")
    assert not torch.allclose(a.directions.vectors(), b.directions.vectors())  # seeds differ


@pytest.mark.parametrize("old, new", [
    ("method.module.num_directions=4", "method.num_directions"),
    ("+method.module.method.layers=coarse", "method.layers"),
    ("method.max_steps=3", "trainer.max_steps"),
    ("method.val_every=3", "trainer.val_check_interval"),
    ("method.batch_size=3", "data.batch_size"),
])
def test_an_old_option_path_names_its_new_one(old, new, capsys):
    """The configs' old shape (method.module.*, run length under method): one line, exit 2."""
    from common.runs import check_command_line

    with pytest.raises(SystemExit) as exit_:
        check_command_line("train", ["method=voynov", old], "train")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"it is {new}" in err and len(err.strip().splitlines()) == 1


COMMON = {"method.num_directions": ["voynov", "voynov_random", "warped", "sefa", "ganspace",
                                    "lowrankgan"],
          "method.layers": ["voynov", "sefa", "ganspace", "interfacegan"],
          "method.samples": ["ganspace", "interfacegan", "lowrankgan", "plumerault"],
          "method.optimizer.lr": ["voynov", "warped", "ganalyze", "steerability", "eye"],
          "method.traversal.steps": sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))}


@pytest.mark.parametrize("path", sorted(COMMON))
def test_the_common_options_have_one_path_for_every_method(path, tmp_path):
    """method.<option> is the same path for every method it applies to, learnable or fit-free;
    trainer.max_steps and data.batch_size for every method."""
    for method in COMMON[path]:
        cfg = compose_cfg([f"method={method}", f"{path}=7", "trainer.max_steps=5",
                           "data.batch_size=3"], tmp_path)
        assert OmegaConf.select(cfg, path) == 7, (method, path)
        assert cfg.trainer.max_steps == 5 and cfg.data.batch_size == 3, method
