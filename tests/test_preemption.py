"""Cluster runs: a signal saves the run at a batch boundary and stops it; inside a SLURM job the
job is requeued; the requeued job resumes to the result of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import CONFIGS, ROOT, compose_cfg
from hydra import compose, initialize_config_dir

from common.errors import UserError
from common.preemption import Preemption
from directions import Directions
from train import train


class SignalAt(pl.Callback):
    """Sends this process a real signal at the end of batch ``batch`` (1-based)."""

    def __init__(self, batch: int, name: str = "SIGUSR1") -> None:
        self.batch, self.name = batch, name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.batch:
            os.kill(os.getpid(), signal.Signals[self.name])


BASE = ["method=voynov", "generator=dcgan_random", "logger=none", "data.batch_size=8",
        "data.val_batches=1", "trainer.val_check_interval=100", "method.traversal.every_n_steps=0",
        "trainer.enable_progress_bar=false", "callbacks.checkpoint.every_n_train_steps=100",
        "evaluation.enabled=false", "trainer.max_steps=6"]


def _fake_scontrol(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in for SLURM's scontrol on PATH that records its arguments."""
    bin_dir, record = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def _vectors(path: Path) -> dict:
    return Directions.load(path).directions.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("name, requeued", [("SIGUSR1", True), ("SIGTERM", False)])
def test_signal_saves_stops_requeues_and_resumes_to_the_same_result(tmp_path, monkeypatch, name,
                                                                    requeued):
    record = _fake_scontrol(tmp_path, monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    train(compose_cfg(BASE + ["run_name=one"], tmp_path))

    cfg = compose_cfg(BASE + ["run_name=two", "ckpt_path=auto",
                              f"+callbacks.signal._target_={__name__}.SignalAt",
                              "+callbacks.signal.batch=3", f"+callbacks.signal.name={name}"],
                      tmp_path)
    handler_before = signal.getsignal(signal.Signals[name])
    assert train(cfg) == {}
    run = tmp_path / "two"
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    # Sent at the end of batch 3, after Preemption's check of that batch: saved at the next
    # batch boundary, with the state of 4 batches.
    assert ckpt["global_step"] == 4
    assert not (run / "directions.pt").exists() and not (run / "metrics.json").exists()
    assert signal.getsignal(signal.Signals[name]) == handler_before  # handlers restored
    if requeued:
        assert record.read_text().split() == ["requeue", "4242"]
    else:  # SIGTERM is also scancel's: the job is not requeued
        assert not record.exists()

    # The requeued job: the same command, resumed from last.ckpt (ckpt_path=auto).
    train(compose_cfg(BASE + ["run_name=two", "ckpt_path=auto"], tmp_path))
    a, b = _vectors(tmp_path / "one/directions.pt"), _vectors(run / "directions.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6


def test_auto_starts_a_new_run_but_never_over_finished_directions(tmp_path):
    cfg = compose_cfg(BASE + ["run_name=fresh", "ckpt_path=auto", "trainer.max_steps=2"], tmp_path)
    train(cfg)  # nothing to resume: a new run
    assert (tmp_path / "fresh/directions.pt").is_file()
    (tmp_path / "fresh/checkpoints/last.ckpt").unlink()
    before = (tmp_path / "fresh/directions.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(compose_cfg(BASE + ["run_name=fresh", "ckpt_path=auto"], tmp_path))
    assert (tmp_path / "fresh/directions.pt").read_bytes() == before


def test_requeue_failure_is_reported_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    callback = Preemption(requeue_command=f"{sys.executable} -c 'import sys; sys.exit(3)' {{job_id}}")
    callback.received = signal.SIGUSR1
    assert callback.requeue() is False
    assert "resume the run by hand" in caplog.text
    callback.received = signal.SIGTERM
    assert callback.requeue() is False  # not a requeue signal: nothing is run


def test_bad_signal_settings_are_refused():
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        Preemption(save_on=["SIGNOPE"])
    with pytest.raises(ValueError, match="must also be in save_on"):
        Preemption(save_on=["SIGTERM"], requeue_on=["SIGUSR1"])


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["default", "ddp_cpu"])
def test_a_real_process_stopped_by_sigterm_keeps_its_checkpoint(tmp_path, trainer):
    """The CLI in a subprocess, signalled from outside while it trains. Under 2-process DDP only
    the main process is signalled: the other learns it at the same batch and stops with it."""
    args = [f"trainer={trainer}", "method=voynov", "generator=dcgan_random", "logger=none", "data.batch_size=8",
            "trainer.val_check_interval=100000", "method.traversal.every_n_steps=0",
            "trainer.enable_progress_bar=false", "callbacks.checkpoint.every_n_train_steps=5",
            "trainer.max_steps=100000", "run_name=long", f"paths.output_dir={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "long/checkpoints/last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[0][-2000:] if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "SIGTERM received: stopped after batch" in out
    step = torch.load(last, weights_only=False)["global_step"]
    assert 5 <= step < 100000
    assert not (tmp_path / "long/directions.pt").exists()


def test_cluster_config_names_the_run_after_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    cfg = compose_cfg(["method=voynov", "cluster=slurm"], tmp_path)
    assert cfg.run_name == "voynov-job99" and cfg.ckpt_path == "auto"
    assert list(cfg.callbacks.preemption.requeue_on) == ["SIGUSR1", "SIGUSR2"]


def test_slurm_launcher_config_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="pip install -e '.[slurm]' for the submitit launcher")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["method=voynov", "hydra/launcher=slurm", "cluster=slurm"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.signal_delay_s == 120 and launcher.timeout_min == 240
