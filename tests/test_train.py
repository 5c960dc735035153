"""End-to-end runs through train.train: outputs, resume, errors found before work starts."""
import json
import re

import pytest
import torch
from conftest import compose_cfg

from common.errors import UserError
from directions import Directions
from train import train


def run_dir(cfg):
    return __import__("pathlib").Path(cfg.paths.output_dir) / cfg.run_name


def test_voynov_run_writes_everything(tiny_cfg):
    cfg = tiny_cfg("logger=csv")
    metrics = train(cfg)
    out = run_dir(cfg)
    for name in ("checkpoints/last.ckpt", "directions.pt", "traversal.png", "metrics.json",
                 "config.yaml", "traversals/step_000002.png", "csv/metrics.csv"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=False)
    assert not any(k.startswith("generator.") for k in ckpt["state_dict"])
    assert ckpt["generator_identity"]["name"] == "dcgan_random"
    assert ckpt["global_step"] == 4
    directions = Directions.load(out / "directions.pt")
    assert directions.num_directions == 16 and directions.meta["method"] == "voynov"
    assert directions.meta["generator"]["sha256"] == ckpt["generator_identity"]["sha256"]
    saved = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= saved["metrics"]["rca"] <= 1.0 and saved["metrics"]["eval_samples"] == 16
    assert metrics["rca"] == saved["metrics"]["rca"]


@pytest.mark.parametrize("kind", ["ortho", "proj", "random", "id"])
def test_direction_types(tiny_cfg, kind):
    cfg = tiny_cfg(method=f"voynov_{kind}" if kind != "proj" else "voynov",
                   *(["method.directions_type=proj"] if kind == "proj" else []))
    from train import instantiate_all
    module = instantiate_all(cfg)["module"]
    before = module.directions.vectors().detach().clone()
    train(cfg)
    after = Directions.load(run_dir(cfg) / "directions.pt").directions.vectors()
    if kind in ("random", "id"):  # fixed baselines: only the reconstructor trains
        assert torch.equal(before, after)
    else:
        assert not torch.allclose(before, after)
    if kind == "ortho":
        assert after.shape == (8, 8)  # K = latent size of the tiny generator
        assert torch.allclose(after @ after.T, torch.eye(8), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["voynov", "warped", "ganalyze", "steerability", "eye"])
def test_resume_matches_one_go(tmp_path, method):
    # EYE runs with its discriminator term here: the DCGAN whose weights ship has one.
    generator = "dcgan_shapes" if method == "eye" else "dcgan_random"
    base = [f"method={method}", f"generator={generator}", "logger=none", "data.batch_size=8",
            "data.val_batches=1", "trainer.val_check_interval=100", "method.traversal.every_n_steps=0",
            "trainer.enable_progress_bar=false", "callbacks.checkpoint.every_n_train_steps=3",
            "evaluation.enabled=false"]
    one = compose_cfg(base + ["run_name=one", "trainer.max_steps=6"], tmp_path)
    train(one)
    half = compose_cfg(base + ["run_name=two", "trainer.max_steps=3"], tmp_path)
    train(half)
    resumed = compose_cfg(base + ["run_name=two", "trainer.max_steps=6", "ckpt_path=last"], tmp_path)
    train(resumed)
    a = Directions.load(tmp_path / "one" / "directions.pt").directions.state_dict()
    b = Directions.load(tmp_path / "two" / "directions.pt").directions.state_dict()
    assert all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    ckpt = torch.load(tmp_path / "two/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6


@pytest.mark.slow
def test_resume_continues_the_same_wandb_run(tiny_cfg):
    first = tiny_cfg("logger=wandb", "trainer.max_steps=2")
    train(first)
    out = run_dir(first)
    run_id = (out / "wandb_id.txt").read_text().strip()
    offline_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and offline_runs[0].name.endswith(run_id)
    train(tiny_cfg("logger=wandb", "trainer.max_steps=4", "ckpt_path=last"))
    assert (out / "wandb_id.txt").read_text().strip() == run_id
    # (wandb adds "-1" to the folder of a run resumed within the same second)
    assert all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", p.name)
               for p in (out / "wandb").glob("offline-run-*"))


def test_new_run_refuses_to_clobber_and_keeps_files(tiny_cfg):
    cfg = tiny_cfg()
    train(cfg)
    out = run_dir(cfg)
    before = {p: p.read_bytes() for p in (out / "directions.pt", out / "checkpoints/last.ckpt")}
    with pytest.raises(UserError, match="already holds a run.*ckpt_path=last"):
        train(tiny_cfg())
    assert all(p.read_bytes() == data for p, data in before.items())


def test_resume_with_nothing_to_resume(tiny_cfg):
    with pytest.raises(UserError, match="nothing to resume.*drop ckpt_path"):
        train(tiny_cfg("ckpt_path=last"))
    with pytest.raises(UserError, match="no such checkpoint file"):
        train(tiny_cfg("ckpt_path=/does/not/exist.ckpt"))


def test_checkpoint_of_wrong_format(tiny_cfg, tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(UserError, match=r"missing keys \[.global_step., .loops.*unexpected keys \[\]"):
        train(tiny_cfg(f"ckpt_path={bad}"))


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_checkpoint_that_would_run_code_is_refused(tiny_cfg, tmp_path):
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "loops": {}, "optimizer_states": [],
                "pytorch-lightning_version": "2.5", "hyper_parameters": _RunsCode(marker)}, crafted)
    with pytest.raises(UserError, match="weights_only=True.*could run code"):
        train(tiny_cfg(f"ckpt_path={crafted}"))
    assert not marker.exists()


def test_checkpoint_from_another_generator(tiny_cfg):
    train(tiny_cfg())
    with pytest.raises(ValueError, match="cannot be resumed with these options: .*generator sha256"):
        train(tiny_cfg("ckpt_path=last", "generator.init_seed=3", "trainer.max_steps=6"))


@pytest.mark.parametrize("override, message", [
    ("method.num_directions=5", "must equal the latent size 8"),
    ("method.min_shift=7.0", "shift range cannot work"),
    ("method.num_directions=1", "at least 2"),
    ("method.directions_type=spiral", "unknown directions_type 'spiral'"),
])
def test_bad_method_settings(tiny_cfg, override, message):
    method = "voynov_ortho" if "num_directions=5" in override else "voynov"
    with pytest.raises(Exception, match=message):
        train(tiny_cfg(override, method=method))


def test_missing_generator_weights(tiny_cfg, tmp_path):
    cfg = tiny_cfg("generator=dcgan_shapes", f"generator.path={tmp_path}/missing.pt")
    with pytest.raises(Exception, match="generator weights not found"):
        train(cfg)
    assert not (run_dir(cfg) / "checkpoints").exists()


def _nan_generator_cfg(tiny_cfg, tmp_path):
    """A run on a generator file whose images are all NaN."""
    from generators import random_generator
    from generators.weights import WEIGHTS_FORMAT

    g = random_generator(latent_dim=8, width=8)
    state = g.state_dict()
    state["to_rgb.bias"] = torch.full_like(state["to_rgb.bias"], float("nan"))
    path = tmp_path / "nan.pt"
    torch.save({"format": WEIGHTS_FORMAT, "architecture": "dcgan", "generator": state,
                "generator_config": {"latent_dim": 8, "resolution": 32, "width": 8}}, path)
    return tiny_cfg("generator=dcgan_shapes", f"generator.path={path}")


def test_nan_generator_is_refused_at_start_up(tiny_cfg, tmp_path):
    cfg = _nan_generator_cfg(tiny_cfg, tmp_path)
    with pytest.raises(Exception, match="start-up check: the images hold NaN"):
        train(cfg)
    assert not (run_dir(cfg) / "checkpoints").exists()


def test_nan_loss_stops_without_writing(tiny_cfg, tmp_path, monkeypatch):
    # The start-up check would refuse this generator first; without it the loss guard stops
    # the run (a generator or method that turns NaN during training).
    import generators
    monkeypatch.setattr(generators, "check_generator", lambda generator: None)
    cfg = _nan_generator_cfg(tiny_cfg, tmp_path)
    with pytest.raises(FloatingPointError, match="not finite.*last good checkpoint"):
        train(cfg)
    assert not (run_dir(cfg) / "checkpoints/last.ckpt").exists()
    assert not (run_dir(cfg) / "directions.pt").exists()


@pytest.mark.parametrize("method", ["voynov", "warped", "ganalyze", "steerability"])
def test_fast_dev_run(tiny_cfg, method):
    cfg = tiny_cfg("trainer.fast_dev_run=true", method=method)
    train(cfg)
    assert Directions.load(run_dir(cfg) / "directions.pt").meta["batches"] == 1


@pytest.mark.slow
def test_voynov_learns_on_the_shipped_generator(tmp_path):
    """A short run on the real generator: the reconstructor tells directions apart far above
    chance (1/16), so the directions change the image in distinct ways."""
    cfg = compose_cfg(["method=voynov", "run_name=learn", "logger=none", "data.batch_size=32",
                       "data.val_batches=4", "trainer.max_steps=250", "trainer.val_check_interval=1000",
                       "method.traversal.every_n_steps=0",
                       "trainer.enable_progress_bar=false", "evaluation.enabled=false"], tmp_path)
    metrics = train(cfg)
    assert metrics["rca"] > 0.2
    assert metrics["shift_error"] < 2.8  # predicting eps = 0 scores E|eps| = 3.1
