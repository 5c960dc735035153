"""A good run survives a resume or rerun with the wrong options: the checkpoint is compared with
the run asked for (method, options, generator, the state's names and shapes) before anything is
written, and a refusal names each difference and leaves the run folder byte-identical."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_cfg, run_script

import leaderboard
import train
from common.errors import UserError
from common.io import file_sha256
from explorer.render import direction_labels
from metrics.report import report_describes


def folder_hash(folder: Path) -> str:
    """Every path under ``folder`` with its bytes (and nothing else changes a folder's hash)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished tiny Voynov run (8 directions), kept pristine: each test copies it."""
    out = tmp_path_factory.mktemp("runs")
    train.train(compose_cfg(["method=voynov", "run_name=good", *TINY,
                             "method.num_directions=8"], out))
    return out / "good"


@pytest.fixture
def run(good_run, tmp_path):
    shutil.copytree(good_run, tmp_path / "good")
    return tmp_path / "good"


def _resume(run: Path, *overrides: str, method: str = "voynov"):
    return compose_cfg([f"method={method}", "run_name=good", *TINY, "method.num_directions=8",
                        "ckpt_path=last", *overrides], run.parent)


@pytest.mark.parametrize("method, overrides, named", [
    ("voynov_ortho", ["method.num_directions=null"],
     "method 'voynov' in the checkpoint vs 'voynov_ortho' now"),
    ("voynov", ["method.num_directions=4"],
     "method.num_directions 8 in the checkpoint vs 4 now"),
    ("voynov", ["generator.init_seed=1"], "generator sha256"),
    ("voynov", ["method.optimizer.lr=0.1"], "method.optimizer.lr"),
    ("voynov", ["seed=3"], "seed 0 in the checkpoint vs 3 now"),
    ("warped", [], "method 'voynov' in the checkpoint vs 'warped' now"),
], ids=["ortho", "count", "generator", "lr", "seed", "another-method"])
def test_a_resume_with_other_options_is_refused_and_changes_nothing(run, method, overrides, named):
    before = folder_hash(run)
    with pytest.raises(UserError) as err:
        train.train(_resume(run, *overrides, method=method))
    assert named in str(err.value) and "nothing was changed" in str(err.value)
    assert folder_hash(run) == before


def test_a_checkpoint_from_before_the_signature_is_checked_by_its_state(run):
    """Without the recorded signature, the state's names and shapes still tell."""
    path = run / "checkpoints" / "last.ckpt"
    blob = torch.load(path, weights_only=True)
    del blob["run_signature"]
    torch.save(blob, path)
    before = folder_hash(run)
    with pytest.raises(UserError, match=r"directions.weight of shape \[8, 8\] in the checkpoint vs \[4, 8\]"):
        train.train(_resume(run, "method.num_directions=4"))
    with pytest.raises(UserError, match="missing from the checkpoint"):
        train.train(_resume(run, "method.num_directions=null", method="voynov_ortho"))
    assert folder_hash(run) == before


def test_a_crafted_signature_is_compared_as_data(run, tmp_path):
    """A checkpoint's recorded signature and generator identity are data: never instantiated."""
    marker = tmp_path / "pwned"
    path = run / "checkpoints" / "last.ckpt"
    blob = torch.load(path, weights_only=True)
    payload = {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w').close()"]}
    blob["run_signature"]["options"]["num_directions"] = payload
    blob["generator_identity"]["name"] = payload
    torch.save(blob, path)
    with pytest.raises(UserError, match="num_directions"):
        train.train(_resume(run))
    assert not marker.exists()


def test_the_same_options_resume(run):
    """The control: the options the run started with resume it (one more batch)."""
    metrics = train.train(_resume(run, "trainer.max_steps=5"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert metrics


def test_a_report_of_the_previous_directions_is_not_taken_for_the_new(run, caplog):
    """A resumed run writes new directions: the old evaluation.json no longer describes them,
    and the run, the explorer and the leaderboard say so instead of showing it."""
    directions = run / "directions.pt"
    report = {"directions": str(directions), "directions_sha256": file_sha256(directions)}
    (run / "evaluation.json").write_text(json.dumps(report))
    with caplog.at_level(logging.WARNING):
        train.train(_resume(run, "trainer.max_steps=5"))
    assert "describes the directions this run had before" in caplog.text
    assert not report_describes(report, directions)
    with pytest.raises(leaderboard.BadReport, match="earlier directions.pt"):
        leaderboard.read_report(run / "evaluation.json")
    assert direction_labels(directions, 8) == [f"direction {k}" for k in range(8)]


@pytest.mark.slow
def test_the_command_line_refusal_leaves_the_folder_byte_identical(run):
    """Through Hydra: nothing of Hydra's (.hydra/, train.log) is written before the check."""
    before = folder_hash(run)
    result = run_script(["method=voynov_ortho", "run_name=good", "ckpt_path=last", *TINY,
                         f"paths.output_dir={run.parent}"], cwd=run.parent)
    message = result.stdout + result.stderr
    assert result.returncode == 2, message[-2000:]
    assert "Traceback" not in message and "cannot be resumed" in message
    assert folder_hash(run) == before
