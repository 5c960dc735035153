"""Shared fixtures: Hydra configs composed the way train.py composes them, on tiny settings."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# A tiny random generator and a handful of batches: the machinery, not the results.
TINY = [
    "generator=dcgan_random",
    "logger=none",
    "data.batch_size=8",
    "data.val_batches=2",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "method.traversal.every_n_steps=2",
    "method.traversal.num_seeds=2",
    "method.traversal.max_directions=3",
    "method.traversal.steps=3",
    "callbacks.checkpoint.every_n_train_steps=2",
    "trainer.enable_progress_bar=false",
    "evaluation.enabled=false",
]

# The end-of-run evaluation on a handful of samples (with EVAL_TINY appended to TINY).
EVAL_TINY = [
    "evaluation.enabled=true",
    "evaluation.settings.samples=8",
    "evaluation.settings.batch_size=8",
    "evaluation.settings.rca.steps=2",
    "evaluation.settings.rca.batch_size=8",
    "evaluation.settings.rca.eval_samples=8",
    "evaluation.traversal.max_directions=2",
    "evaluation.traversal.num_seeds=1",
    "evaluation.traversal.steps=3",
]


def compose_cfg(overrides: list[str], output_dir: Path | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
        return compose("train", overrides=list(overrides) + extra)


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(*overrides)``: the tiny Voynov config writing under tmp_path."""
    def make(*overrides: str, method: str = "voynov"):
        return compose_cfg([f"method={method}", "run_name=test", *TINY, *overrides], tmp_path)
    return make


def run_script(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None):
    """Run train.py in a subprocess (real Hydra CLI), returning the CompletedProcess
    (``env``: variables set on top of PYTHONPATH=<repository> and WANDB_MODE=offline)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# A world CLIP small enough to build in a blink (clip_models/world.py), random weights.
TINY_CLIP = {"embed_dim": 16, "width": 16, "layers": 1, "heads": 2, "context": 16,
             "backbone_kwargs": {"channels": [8, 8, 16, 16], "stem_width": 8}}


def tiny_world_clip(folder: Path) -> Path:
    """A random tiny world CLIP written to ``folder/clip.pt`` (its path, for clip.path=)."""
    import torch

    from clip_models.world import WorldClip

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return WorldClip(**TINY_CLIP).save(Path(folder) / "clip.pt")
