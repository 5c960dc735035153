"""Drive the real scripts with bad inputs, all in one process (issue 28).

Each case is a real command line (``python edit.py directions=... alphas=[nan]``): the script's
file runs as ``__main__`` (runpy, with that ``sys.argv``), so its own entry point parses the
command, in a fresh working folder that holds a finished tiny run and crafted bad files. The driver records,
per case, the exit status, everything printed (stdout, stderr and the log, at the level of the
file descriptors), whether anything in the folder changed (paths and bytes, folders included)
and whether a recorded-config payload ran. tests/test_bad_inputs.py asserts on the records;
this module also writes docs/bad_inputs.md from them:

    .venv/bin/python tests/bad_inputs_driver.py --doc docs/bad_inputs.md
    .venv/bin/python tests/bad_inputs_driver.py --only edit-alphas-nan,train-seed-abc --show

Two processes for all cases (every other case each; ``--jobs 1``: one): a subprocess per case
costs ~6 s of imports (torch, Lightning), so the cases share them. Hydra is re-entered per
case (GlobalHydra cleared, logging configured anew onto the redirected descriptors). What a
case must not reach is guarded: a Trainer on more than one device raises before it could start
processes, the explorer's server raises before it serves, and every case runs under an alarm,
so a hang is a failed case, not a hung suite.

Importing this module is cheap (no torch): the test module reads ``CASES`` at collection.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train", "edit", "evaluate", "explore", "leaderboard")
# What a recorded-config payload does, if it ever runs: creates this file in the working folder
# or prints this string. Harmless, and detected by every case.
MARKER = "BAD_INPUTS_PWNED"
PRINTED = "BAD_INPUTS_PRINTED"   # printed as two words joined by sep="_": no file holds it
CASE_TIMEOUT = 60      # seconds a case may take before it counts as a hang
SETUP_TIMEOUT = 300

# The tiny settings of tests/conftest.py (a random 8-d DCGAN, 4 batches): every train.py case
# runs with them (unless the case sets the key itself), so that a bad input that is not
# refused costs seconds, not minutes. The doc shows the commands without them.
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TINY  # noqa: E402

COMMON = {
    "train": ["method=voynov", *TINY],
    "edit": [],
    "evaluate": ["logger=none", "evaluation.settings.samples=8", "evaluation.settings.batch_size=8",
                 "evaluation.settings.rca.steps=2", "evaluation.settings.rca.batch_size=8",
                 "evaluation.settings.rca.eval_samples=8", "evaluation.traversal.num_seeds=1",
                 "evaluation.traversal.steps=3"],
    "explore": ["port=0"],
    "leaderboard": [],
}

GOOD = "outputs/good/directions.pt"      # the finished tiny Voynov run (dcgan_random)
# Recorded-config attacks: directions files (no config.yaml beside them) whose
# meta["generator_source"] carries a _target_ that runs code; and a run folder whose
# config.yaml carries one. Built by make_workspace; each payload is checked to be live.
ATTACKS = {
    "nested": "attack/nested/directions.pt",      # a _target_ in a nested value
    "top": "attack/top/directions.pt",            # _target_: builtins.open at the top
    "exec": "attack/exec/directions.pt",          # _target_: builtins.exec at the top
    "args": "attack/args/directions.pt",          # in _args_
    "partial": "attack/partial/directions.pt",    # _partial_: true, the payload nested
    "list": "attack/list/directions.pt",          # in a nested list
    "interp": "attack/interp/directions.pt",      # in a ${oc.create:...} interpolation string
    "target_interp": "attack/target_interp/directions.pt",  # _target_: ${oc.decode:...}
    "print": "attack/print/directions.pt",        # builtins.print of the marker
    "runcfg": "outputs/evil/directions.pt",       # the run's config.yaml holds the payload
}


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    args: tuple[str, ...]
    needle: tuple[str, ...]   # the error line must name one of these (the option, or its file)
    note: str = ""
    workspace: str = "full"   # full: the prepared folder; empty: an empty folder
    expect: int = 2           # the exit status
    lines: int = 1            # error lines (leaderboard.py: one per unreadable file, then one)


def _attack_cases(script: str) -> list:
    """The recorded-config attack, through a script that rebuilds a generator from a file."""
    return [_c(f"{script}-recorded-config-{name}", script, f"directions={path}",
               ("generator", "config.yaml") if name == "runcfg" else ("generator", "_target_"))
            for name, path in ATTACKS.items()]


def _c(id: str, script: str, args: str | list[str], needle: str | tuple[str, ...], **kw) -> Case:
    args = args.split() if isinstance(args, str) else args
    return Case(id, script, tuple(args), (needle,) if isinstance(needle, str) else tuple(needle), **kw)


def _cases() -> list[Case]:
    d = f"directions={GOOD}"
    resume = "run_name=good ckpt_path=last"
    cases = [
        # ---- train.py -------------------------------------------------------------------
        _c("train-run-name-empty", "train", ["run_name="], "run_name"),
        _c("train-run-name-absolute", "train", "run_name={cwd}/elsewhere", "run_name"),
        _c("train-run-name-dotdot", "train", "run_name=..", "run_name"),
        _c("train-run-name-300-chars", "train", ["run_name=" + "r" * 300], "run_name"),
        _c("train-seed-abc", "train", "seed=abc", "seed"),
        _c("train-seed-negative", "train", "seed=-1", "seed"),
        _c("train-seed-abc-empty-folder", "train", "seed=abc", "seed", workspace="empty",
           note="in an empty folder: no outputs/ left behind"),
        _c("train-batch-size-0", "train", "data.batch_size=0", "data.batch_size"),
        _c("train-max-steps-0", "train", "trainer.max_steps=0", "trainer.max_steps"),
        _c("train-devices-99", "train", "trainer.devices=99", "trainer.devices"),
        _c("train-truncation-psi-5", "train", "generator=stylegan2_random generator.truncation_psi=5",
           "generator.truncation_psi"),
        _c("train-truncation-psi-nan", "train",
           "generator=stylegan2_random generator.truncation_psi=nan", "generator.truncation_psi"),
        _c("train-space-s-on-a-dcgan", "train", "generator.space=s", "generator.space"),
        _c("train-stylegan3-mixed-pickle", "train", "generator=stylegan3 generator.path=files/mixed-sg3.pkl",
           ("mixed-sg3.pkl", "Supported")),
        _c("train-option-not-in-generator", "train", "generator.truncation_psi=5",
           "generator.truncation_psi", note="dcgan_random has no truncation"),
        _c("train-lr-negative", "train", "method.optimizer.lr=-1",
           "method.optimizer.lr"),
        _c("train-lr-nan", "train", "method.optimizer.lr=nan", "method.optimizer.lr"),
        _c("train-unknown-method", "train", "method=nosuch", "method"),
        _c("train-ckpt-missing", "train", "ckpt_path=files/missing.ckpt", ("ckpt_path", "missing.ckpt")),
        _c("train-ckpt-text", "train", "ckpt_path=files/text.txt", ("ckpt_path", "text.txt")),
        _c("train-ckpt-unsafe-pickle", "train", "ckpt_path=files/unsafe.pt", ("ckpt_path", "unsafe.pt")),
        _c("train-ckpt-truncated", "train", "ckpt_path=files/truncated.ckpt",
           ("ckpt_path", "truncated.ckpt")),
        _c("train-ckpt-directions-file", "train", f"ckpt_path={GOOD}", ("ckpt_path", "directions.pt"),
           note="a directions file is no checkpoint"),
        _c("train-ckpt-last-none", "train", "run_name=nockpt ckpt_path=last", "ckpt_path",
           note="outputs/nockpt/ holds a config.yaml but no checkpoint"),
        _c("train-ckpt-last-no-run", "train", "run_name=nosuchrun ckpt_path=last", "ckpt_path"),
        _c("train-new-run-over-existing", "train", "run_name=good", "run_name",
           note="outputs/good/ holds a finished run"),
        _c("train-resume-other-method", "train", f"{resume} method=voynov_ortho", "method",
           note="resume a voynov run as voynov_ortho"),
        _c("train-resume-other-generator", "train", f"{resume} generator=dcgan_shapes", "generator"),
        _c("train-ckpt-of-another-method", "train",
           "run_name=fresh method=voynov_ortho ckpt_path=outputs/good/checkpoints/last.ckpt",
           ("ckpt_path", "last.ckpt"), note="a new run started from a voynov run's checkpoint"),
        _c("train-resume-other-num-directions", "train", f"{resume} method.num_directions=4",
           "num_directions"),
        _c("train-clip-missing", "train", "method=text_guided clip.path=files/missing.pt",
           ("clip", "missing.pt")),
        _c("train-clip-unsafe-pickle", "train", "method=text_guided clip.path=files/unsafe.pt", "unsafe.pt"),
        _c("train-clip-arch-unknown", "train", "method=text_guided clip.path=files/missing.bin "
           "clip.arch=ViT-Q-99", "clip.arch"),
        _c("train-text-unknown-word", "train", ["method=text_guided", "method.prompts=[a zebra]"], "zebra",
           note="the world CLIP reads the world's words only"),
        _c("train-text-guided-bad-loss", "train", "method=text_guided method.loss=nope", "method.loss"),
        _c("train-naming-bad-template", "train", "evaluation.enabled=true evaluation.naming.enabled=true "
           "evaluation.naming.prompts=[red,blue] evaluation.naming.template=shape",
           "evaluation.naming.template"),
        # ---- edit.py ---------------------------------------------------------------------
        _c("edit-alphas-nan", "edit", f"{d} alphas=[nan]", "alphas"),
        _c("edit-alphas-inf", "edit", f"{d} alphas=[inf]", "alphas"),
        _c("edit-alphas-abc", "edit", f"{d} alphas=abc", "alphas"),
        _c("edit-alphas-empty", "edit", f"{d} alphas=[]", "alphas"),
        _c("edit-seeds-abc", "edit", f"{d} seeds=[abc]", "seeds"),
        _c("edit-seeds-empty", "edit", f"{d} seeds=[]", "seeds"),
        _c("edit-seeds-float", "edit", f"{d} seeds=[1.5]", "seeds"),
        _c("edit-direction-99", "edit", f"{d} direction=99", "direction"),
        _c("edit-direction-negative", "edit", f"{d} direction=-1", "direction"),
        _c("edit-direction-abc", "edit", f"{d} direction=abc", "direction"),
        _c("edit-format-bmp", "edit", f"{d} format=bmp", "format"),
        _c("edit-fps-0", "edit", f"{d} format=gif fps=0", "fps"),
        _c("edit-fps-negative", "edit", f"{d} format=gif fps=-3", "fps"),
        _c("edit-out-is-folder", "edit", f"{d} out=outputs", "out"),
        _c("edit-latents-unsafe-pickle", "edit", f"{d} latents=files/unsafe.pt", ("latents", "unsafe.pt")),
        _c("edit-latents-empty-file", "edit", f"{d} latents=files/empty.pt", ("latents", "empty.pt")),
        _c("edit-latents-text", "edit", f"{d} latents=files/text.txt", ("latents", "text.txt")),
        _c("edit-latents-truncated", "edit", f"{d} latents=files/truncated_latents.pt",
           ("latents", "truncated_latents.pt")),
        _c("edit-latents-nan", "edit", f"{d} latents=files/nan_latents.pt", ("latents", "nan_latents.pt")),
        _c("edit-latents-wrong-shape", "edit", f"{d} latents=files/wrong_shape.pt",
           ("latents", "wrong_shape.pt")),
        _c("edit-latents-missing", "edit", f"{d} latents=files/missing.pt", ("latents", "missing.pt")),
        _c("edit-image-missing", "edit", f"{d} image=files/missing.png", ("image", "missing.png")),
        _c("edit-image-text", "edit", f"{d} image=files/text.png", ("image", "text.png")),
        _c("edit-image-wrong-size", "edit", f"{d} image=files/small.png", ("image", "small.png")),
        _c("edit-image-huge-header", "edit", f"{d} image=files/huge.png", ("image", "huge.png"),
           note="a PNG whose header declares 30000 x 30000 px"),
        _c("edit-image-and-latents", "edit", f"{d} image=files/face.png latents=files/latents.pt",
           ("image", "latents")),
        _c("edit-inversion-lr-nan", "edit", f"{d} image=files/face.png inversion.lr=nan", "inversion"),
        _c("edit-inversion-steps-0", "edit", f"{d} image=files/face.png inversion.steps=0", "inversion"),
        _c("edit-inversion-loss-unknown", "edit", f"{d} image=files/face.png inversion.loss=bogus",
           "inversion.loss"),
        _c("edit-classes-unconditional", "edit", f"{d} classes=[5]", "classes"),
        _c("edit-directions-missing", "edit", "directions=files/missing.pt", ("directions", "missing.pt")),
        _c("edit-directions-unsafe-pickle", "edit", "directions=files/unsafe.pt", ("directions", "unsafe.pt")),
        _c("edit-directions-text", "edit", "directions=files/text.txt", ("directions", "text.txt")),
        _c("edit-directions-truncated", "edit", "directions=files/truncated.pt",
           ("directions", "truncated.pt")),
        _c("edit-device-cuda-7", "edit", f"{d} device=cuda:7", "device"),
    ]
    # the recorded-config attack, through every script that rebuilds a generator from a file
    cases += _attack_cases("edit")
    # ---- evaluate.py -------------------------------------------------------------------------
    cases += [
        _c("evaluate-directions-missing", "evaluate", "directions=files/missing.pt",
           ("directions", "missing.pt")),
        _c("evaluate-directions-text", "evaluate", "directions=files/text.txt", ("directions", "text.txt")),
        _c("evaluate-samples-0", "evaluate", f"{d} evaluation.settings.samples=0",
           "evaluation.settings.samples"),
        _c("evaluate-alpha-nan", "evaluate", f"{d} evaluation.settings.alpha=nan",
           "evaluation.settings.alpha"),
        _c("evaluate-batch-size-0", "evaluate", f"{d} evaluation.settings.batch_size=0",
           "evaluation.settings.batch_size"),
        _c("evaluate-rca-steps-negative", "evaluate", f"{d} evaluation.settings.rca.steps=-1",
           "evaluation.settings.rca.steps"),
        _c("evaluate-baseline-unknown", "evaluate", f"{d} evaluation.baselines=[bogus]",
           ("evaluation.baselines", "bogus")),
        _c("evaluate-regressor-missing", "evaluate", f"{d} evaluation.regressor=files/missing_regressor.pt",
           ("evaluation.regressor", "missing_regressor.pt")),
        _c("evaluate-device-cuda-7", "evaluate", f"{d} device=cuda:7", "device"),
    ]
    cases += _attack_cases("evaluate")
    # ---- explore.py --------------------------------------------------------------------------
    cases += [
        _c("explore-port-negative", "explore", f"{d} port=-1", "port"),
        _c("explore-port-99999", "explore", f"{d} port=99999", "port"),
        _c("explore-port-abc", "explore", f"{d} port=abc", "port"),
        _c("explore-thumbnails-0", "explore", f"{d} thumbnails=0", "thumbnails"),
        _c("explore-strip-steps-1", "explore", f"{d} strip_steps=1", "strip_steps"),
        _c("explore-text-on-a-dcgan", "explore", f"{d} text.enabled=true", "text.enabled",
           note="the text box moves S styles; the file is a DCGAN's"),
        _c("explore-seed-abc", "explore", f"{d} seed=abc", "seed"),
        _c("explore-three-files", "explore", f"directions=[{GOOD},{GOOD},{GOOD}]", "directions"),
        _c("explore-no-files", "explore", "directions=[]", "directions"),
        _c("explore-directions-missing", "explore", "directions=files/missing.pt",
           ("directions", "missing.pt")),
        _c("explore-directions-unsafe-pickle", "explore", "directions=files/unsafe.pt",
           ("directions", "unsafe.pt")),
        _c("explore-host-not-here", "explore", f"{d} host=192.0.2.1", ("host", "192.0.2.1"),
           note="a documentation address (TEST-NET-1): no interface here has it"),
        _c("explore-device-cuda-7", "explore", f"{d} device=cuda:7", "device"),
    ]
    cases += _attack_cases("explore")
    # ---- leaderboard.py ----------------------------------------------------------------------
    cases += [
        _c("leaderboard-nothing-found", "leaderboard", "files/nowhere", "nowhere"),
        _c("leaderboard-not-json", "leaderboard", "lb/not_json", "evaluation.json", lines=2),
        _c("leaderboard-empty-file", "leaderboard", "lb/empty", "evaluation.json", lines=2),
        _c("leaderboard-json-list", "leaderboard", "lb/json_list", "evaluation.json", lines=2),
        _c("leaderboard-missing-keys", "leaderboard", "lb/missing_keys", "evaluation.json", lines=2),
        _c("leaderboard-all-bad", "leaderboard", "lb", "evaluation.json", lines=5,
           note="a folder of runs whose evaluation.json files are all bad"),
        _c("leaderboard-bad-file-named", "leaderboard", "lb/not_json/evaluation.json",
           "evaluation.json", lines=2),
    ]
    return cases


CASES: list[Case] = _cases()
CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def command_args(case: Case) -> list[str]:
    """The case's options with the script's common ones first (those it sets itself left out)."""
    own = {_key(a) for a in case.args}
    if any(k == "method" for k in own):
        own.add("method")
    common = [a for a in COMMON[case.script] if _key(a) not in own]
    return common + list(case.args)


def shown_command(case: Case) -> str:
    """The command as the doc shows it (train.py's tiny settings left out)."""
    args = [a.replace("{cwd}", "$PWD") for a in case.args]
    args = [f"{k}=<{len(v)} x {v[0]}>" if len(v) > 60 and len(set(v)) == 1 else f"{k}={v}"
            if sep else k for k, sep, v in (a.partition("=") for a in args)]
    return " ".join([f"python {case.script}.py", *args])


# ---- the working folder -------------------------------------------------------------------
def tree_state(root: Path) -> dict[str, str]:
    """Every path under ``root`` (folders included) with a digest of its bytes."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for name in dirnames:
            path = Path(dirpath) / name
            state[str(rel / name) + "/"] = "link" if path.is_symlink() else "dir"
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                state[str(rel / name)] = "link:" + os.readlink(path)
            else:
                state[str(rel / name)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def tree_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = [f"+ {p}" for p in sorted(after.keys() - before.keys())]
    out += [f"- {p}" for p in sorted(before.keys() - after.keys())]
    out += [f"~ {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return out


class _Payload:
    """Unpickling this runs ``open(MARKER, "w")``: what an unsafe pickle could do, harmlessly."""

    def __reduce__(self):
        import builtins

        return (builtins.open, (MARKER, "w"))


def _attack_sources(good_source: dict) -> dict[str, dict]:
    """The crafted ``generator_source`` of each attack (``runcfg``: see make_workspace)."""
    touch = {"_target_": "builtins.open", "_args_": [MARKER, "w"]}
    base = dict(good_source)
    return {
        "nested": {**base, "truncation_cutoff": touch},
        "top": dict(touch),
        "exec": {"_target_": "builtins.exec", "_args_": [f"open({MARKER!r}, 'w')"]},
        "args": {**base, "_args_": [touch]},
        "partial": {**base, "_partial_": True, "regressor": {"path": touch}},
        "list": {**base, "classes": [[touch]]},
        "interp": {**base, "name": "${oc.create:{_target_: builtins.open, _args_: [" + MARKER + ", w]}}"},
        "target_interp": {**base, "name": {"_target_": "${oc.decode:builtins.open}",
                                           "_args_": [MARKER, "w"]}},
        "print": {**base, "name": {"_target_": "builtins.print", "_args_": PRINTED.split("_", 1),
                                   "sep": "_"}},
    }


def payload_is_live(source: dict, scratch: Path) -> bool:
    """Whether instantiating ``source`` (what the scripts used to do) runs the payload."""
    import contextlib
    import io

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    scratch.mkdir(parents=True, exist_ok=True)
    old = os.getcwd()
    printed = io.StringIO()
    os.chdir(scratch)
    try:
        with contextlib.redirect_stdout(printed):
            try:
                instantiate(OmegaConf.create(source))
            except Exception:  # noqa: BLE001 - the payload runs before the build fails
                pass
        return (scratch / MARKER).exists() or PRINTED in printed.getvalue()
    finally:
        os.chdir(old)
        shutil.rmtree(scratch, ignore_errors=True)


def make_workspace(root: Path) -> dict:
    """The folder every case starts from: a finished tiny run and the crafted bad files."""
    import torch
    from omegaconf import OmegaConf
    from PIL import Image

    root.mkdir(parents=True)
    run = _run(root, "train", ["method=voynov", "run_name=good", *TINY], guard=False,
               timeout=SETUP_TIMEOUT)
    good = root / GOOD
    if run["exit"] not in (0, None) or not good.is_file():
        raise RuntimeError(f"the tiny training run failed (exit {run['exit']}):\n{run['output']}")
    shutil.rmtree(root / "outputs/good/.hydra", ignore_errors=True)
    # outputs/nockpt: a run folder (its config) without a checkpoint
    (root / "outputs/nockpt").mkdir()
    shutil.copy(root / "outputs/good/config.yaml", root / "outputs/nockpt/config.yaml")

    files = root / "files"
    files.mkdir()
    (files / "text.txt").write_text("not a checkpoint, not a tensor\n")
    (files / "text.png").write_text("not an image\n")
    (files / "empty.pt").write_bytes(b"")
    torch.save({"weights": _Payload()}, files / "unsafe.pt")
    data = good.read_bytes()
    (files / "truncated.pt").write_bytes(data[: len(data) // 2])
    ckpt = (root / "outputs/good/checkpoints/last.ckpt").read_bytes()
    (files / "truncated.ckpt").write_bytes(ckpt[: len(ckpt) // 2])
    latents = torch.randn(2, 8)
    torch.save(latents, files / "latents.pt")
    raw = (files / "latents.pt").read_bytes()
    (files / "truncated_latents.pt").write_bytes(raw[: len(raw) // 2])
    torch.save(torch.full((2, 8), float("nan")), files / "nan_latents.pt")
    torch.save(torch.zeros(2, 5), files / "wrong_shape.pt")
    _mixed_stylegan3(files / "mixed-sg3.pkl")
    Image.new("RGB", (32, 32), (120, 30, 200)).save(files / "face.png")
    Image.new("RGB", (16, 16), (120, 30, 200)).save(files / "small.png")
    (files / "huge.png").write_bytes(_png_header_only(30000, 30000))

    # the recorded-config attacks
    blob = torch.load(good, map_location="cpu", weights_only=True)
    good_source = blob["meta"]["generator_source"]
    assert isinstance(good_source, dict) and good_source.get("_target_"), good_source
    live = {}
    for name, source in _attack_sources(good_source).items():
        folder = root / Path(ATTACKS[name]).parent
        folder.mkdir(parents=True)
        crafted = dict(blob, meta=dict(blob["meta"], generator_source=source))
        torch.save(crafted, folder / "directions.pt")
        live[name] = payload_is_live(source, root.parent / f"scratch-{name}")
    evil = root / "outputs/evil"
    evil.mkdir()
    shutil.copy(good, evil / "directions.pt")
    config = OmegaConf.load(root / "outputs/good/config.yaml")
    config.generator = {"_target_": "builtins.open", "_args_": [MARKER, "w"]}
    OmegaConf.save(config, evil / "config.yaml")
    live["runcfg"] = payload_is_live(OmegaConf.to_container(config.generator), root.parent / "scratch-runcfg")

    # leaderboard: evaluation.json files that are all bad
    bad = {"not_json": "{ this is not json", "empty": "", "json_list": "[1, 2, 3]",
           "missing_keys": json.dumps({"run_name": "x", "label": "voynov"})}
    for name, text in bad.items():
        (root / "lb" / name).mkdir(parents=True)
        (root / "lb" / name / "evaluation.json").write_text(text)
    return {"payload_live": live, "setup_seconds": run["seconds"]}


def _mixed_stylegan3(path: Path) -> None:
    """A StyleGAN3 network pickle in NVIDIA's layout that also holds a StyleGAN2 block."""
    import torch
    from test_formats_nvidia import SynthesisBlock, snapshot, write_snapshot
    from test_formats_stylegan3 import SMALL, Generator

    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = Generator(16, **SMALL)
        g.synthesis.b4 = SynthesisBlock(0, 8, 16, 4, 256)
    write_snapshot(path, snapshot(g))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` and whose data is a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


# ---- running one command in this process --------------------------------------------------
class _Timeout(BaseException):
    pass


class _Reached(BaseException):
    """A guard tripped: the command got as far as work a refused command never starts."""


_GUARDS_ON = False
_RECORDS: list | None = None   # the log records of the running case: [level, logger, message]


def _capture_log_records() -> None:
    """Every log record that reaches a logger's handlers is also kept for the case (Hydra
    configures the handlers anew in each run, so the records are taken at the logger)."""
    import logging

    handle = logging.Logger.handle

    def keep(self, record):
        if _RECORDS is not None:
            _RECORDS.append([record.levelno, record.name, record.getMessage()])
        return handle(self, record)

    logging.Logger.handle = keep


def _install_guards() -> None:
    import pytorch_lightning as pl
    import uvicorn

    fit = pl.Trainer.fit

    def guarded_fit(self, *args, **kwargs):
        if _GUARDS_ON and (self.num_devices > 1 or self.num_nodes > 1):
            raise _Reached(f"Trainer.fit on {self.num_devices} devices (the driver stops "
                           "before it could start processes)")
        return fit(self, *args, **kwargs)

    def guarded_serve(self, *args, **kwargs):
        raise _Reached("the explorer's server started serving")

    pl.Trainer.fit = guarded_fit
    uvicorn.Server.run = guarded_serve


def _reset_warnings() -> None:
    """Warnings shown once per place are shown again, as in a fresh process."""
    import warnings

    for module in list(sys.modules.values()):
        registry = getattr(module, "__warningregistry__", None)
        if isinstance(registry, dict):
            registry.clear()
    warnings.filterwarnings("default")  # re-arms the filters' cache
    warnings.filters.pop(0)


def _call_script(script: str, args: list[str]) -> int | None:
    """``python <script>.py <args>``: the script's file runs as ``__main__`` (its own
    ``if __name__ == "__main__":`` block), as from the shell; the imports it shares with the
    other cases are already loaded."""
    import runpy

    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    path = str(ROOT / f"{script}.py")
    sys.argv = [path, *args]
    runpy.run_path(path, run_name="__main__")
    return 0


def _run(cwd: Path, script: str, args: list[str], guard: bool = True,
         timeout: int = CASE_TIMEOUT) -> dict:
    """Run ``script`` with ``args`` in ``cwd``; what it printed goes to a file (fd 1 and 2)."""
    import logging

    global _GUARDS_ON, _RECORDS
    log_path = cwd.parent / f"{cwd.name}.out"
    old_cwd, old_argv = os.getcwd(), sys.argv
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    _reset_warnings()
    status: int | str | None
    error = ""

    def alarm(signum, frame):
        raise _Timeout()

    old_handler = signal.signal(signal.SIGALRM, alarm)
    start = time.perf_counter()
    _GUARDS_ON = guard
    _RECORDS = records = []
    try:
        os.chdir(cwd)
        signal.alarm(timeout)
        try:
            status = _call_script(script, [a.replace("{cwd}", str(cwd)) for a in args])
        finally:
            signal.alarm(0)
    except SystemExit as exit:
        code = exit.code
        status = code if isinstance(code, int) or code is None else 1
        if isinstance(code, str):
            print(code, file=sys.stderr)
    except _Timeout:
        status, error = "timeout", f"no answer within {timeout} s"
    except _Reached as reached:
        status, error = "reached", str(reached)
    except BaseException as err:  # noqa: BLE001 - recorded as the case's outcome
        import traceback

        status, error = "exception", f"{type(err).__name__}: {err}"
        traceback.print_exc()
    finally:
        seconds = time.perf_counter() - start
        _GUARDS_ON = False
        _RECORDS = None
        signal.signal(signal.SIGALRM, old_handler)
        os.chdir(old_cwd)
        sys.argv = old_argv
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        for handler in list(logging.root.handlers):  # close the job's log files (train.log)
            handler.close()
            logging.root.removeHandler(handler)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    output = log_path.read_text(errors="replace")
    log_path.unlink()
    return {"exit": status, "error": error, "output": output, "records": records,
            "seconds": round(seconds, 2)}


def run_case(case: Case, template: Path, work: Path) -> dict:
    start = time.perf_counter()
    cwd = work / case.id
    if case.workspace == "full":
        shutil.copytree(template, cwd, symlinks=True)
    else:
        cwd.mkdir()
    before = tree_state(cwd)
    result = _run(cwd, case.script, command_args(case))
    after = tree_state(cwd)
    result.update(id=case.id, script=case.script, command=shown_command(case), cwd=str(cwd),
                  changed=tree_diff(before, after),
                  payload_ran=(cwd / MARKER).exists() or PRINTED in result["output"])
    shutil.rmtree(cwd, ignore_errors=True)
    result["overhead_seconds"] = round(time.perf_counter() - start - result["seconds"], 3)
    return result


# ---- what a case's output says --------------------------------------------------------------
def error_lines(result: dict) -> list[str]:
    """What a case printed as its error: its ERROR log records (the Hydra scripts log their
    refusal), and every printed line that is no log record (a line printed before Hydra
    starts, leaderboard.py's lines on stderr, but also tracebacks, Hydra's own multi-line
    errors, printed warnings: all of them count)."""
    errors = [message for level, _, message in result["records"] if level >= 40]
    messages = [m for _, _, m in result["records"] if m]
    return errors + [line.strip() for line in result["output"].splitlines()
                     if line.strip() and not any(m in line or line.strip() in m for m in messages)]


def problems(case: Case, result: dict) -> list[str]:
    """Everything wrong with a case's outcome (empty: it is refused as it should be)."""
    out = []
    if result["exit"] != case.expect:
        what = result["error"] or f"exit {result['exit']}"
        out.append(f"expected exit {case.expect}, got {result['exit']} ({what})")
    errors = error_lines(result)
    if len(errors) != case.lines:
        shown = f", the first: {errors[0][:120]!r}" if errors else ""
        out.append(f"expected {case.lines} error line(s), got {len(errors)}{shown}")
    for line in errors if len(errors) == case.lines else ():
        if "\n" in line.strip():
            out.append(f"the error is {len(line.strip().splitlines())} lines long: {line[:120]!r}")
        elif not any(n in line for n in case.needle):
            out.append(f"the error line names none of {list(case.needle)}: {line[:200]!r}")
    if "Traceback" in result["output"]:
        out.append("a traceback was printed")
    if result["changed"]:
        shown = ", ".join(result["changed"][:4]) + (" ..." if len(result["changed"]) > 4 else "")
        out.append(f"the folder changed: {shown}")
    if result["payload_ran"]:
        out.append("the recorded-config payload ran")
    return out


# ---- all cases ------------------------------------------------------------------------------
def _prepare_process() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("HYDRA_FULL_ERROR", None)


def _run_cases(cases: list[Case], template: Path, work: Path, handle) -> None:
    for case in cases:
        result = run_case(case, template, work)
        handle.write(json.dumps(result) + "\n")
        handle.flush()


def run_all(results_path: Path, only: set[str] | None = None, jobs: int = 2) -> dict:
    """Run the cases (``only``: these ids) and write one JSON object per line to
    ``results_path``: first the setup's record, then one per case as it finishes.

    With ``jobs=2``, a second process (started at once, so that its imports overlap the
    setup's tiny training) runs every other case in the same prepared folder."""
    _prepare_process()
    work = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    results_path = Path(results_path).resolve()
    cases = [c for c in CASES if not only or c.id in only]
    mine, theirs = (cases[0::2], cases[1::2]) if jobs > 1 and len(cases) > 1 else (cases, [])
    worker = None
    ready, part = work / "ready", work / "worker.jsonl"
    try:
        start = time.perf_counter()
        if theirs:
            import subprocess

            worker = subprocess.Popen(
                [sys.executable, __file__, "--worker", str(work), "--results", str(part),
                 "--only", ",".join(c.id for c in theirs)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _capture_log_records()
        try:
            setup = make_workspace(work / "template")
        except BaseException:
            ready.write_text("failed")
            raise
        ready.write_text("ok")
        _install_guards()
        with results_path.open("w") as handle:
            handle.write(json.dumps({"setup": setup}) + "\n")
            handle.flush()
            _run_cases(mine, work / "template", work, handle)
            if worker is not None:
                out, _ = worker.communicate(timeout=CASE_TIMEOUT * len(theirs) + SETUP_TIMEOUT)
                if part.is_file():
                    handle.write(part.read_text())
                if worker.returncode != 0:
                    raise RuntimeError(f"the second driver process failed (exit "
                                       f"{worker.returncode}):\n{out[-3000:]}")
        setup["total_seconds"] = round(time.perf_counter() - start, 1)
        return setup
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        shutil.rmtree(work, ignore_errors=True)


def _worker(work: Path, results_path: Path, only: set[str]) -> int:
    """The second process: import what the cases need, wait for the prepared folder, run."""
    _prepare_process()
    import edit  # noqa: F401 - the imports every case shares, while the setup trains
    import train  # noqa: F401

    _capture_log_records()
    _install_guards()
    ready = work / "ready"
    deadline = time.monotonic() + SETUP_TIMEOUT
    while not ready.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ready.is_file() or ready.read_text() != "ok":
        print("the setup failed or took too long", file=sys.stderr)
        return 3
    with Path(results_path).open("w") as handle:
        _run_cases([c for c in CASES if c.id in only], work / "template", work, handle)
    return 0


def read_results(path: Path) -> tuple[dict, dict[str, dict]]:
    setup, results = {}, {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "setup" in record:
            setup = record["setup"]
        else:
            results[record["id"]] = record
    return setup, results


# ---- the doc --------------------------------------------------------------------------------
DOC_HEAD = """# Bad inputs: what the scripts answer

Every command below must be refused the same way:

- exit status 2;
- one error line that names the option or its file: the script's `ERROR` log record, shown
  here without the log's prefix. Every printed line that is no log record counts as an error
  line too, so a traceback or a multi-line message fails. leaderboard.py prints one line per
  unreadable file, then one;
- nothing written in the working folder: every file and folder is hashed before and after, so
  a case that targets an existing run folder must leave it byte-identical;
- no payload of a recorded config run (it would create a file `BAD_INPUTS_PWNED` or print
  `BAD_INPUTS_PRINTED`);
- no hang (60 s a case).

The suite is `tests/test_bad_inputs.py` (issue 28). It drives the real scripts' entry points
with these command lines, each in a fresh folder ($PWD below) that holds:

- `outputs/good/`: a finished tiny run (Voynov on `generator=dcgan_random`, 4 batches), and
  `outputs/nockpt/`: a run folder with its config.yaml but no checkpoint;
- `files/`: a text file, an empty file, a pickle that would run code, truncated torch files,
  latents with NaN or of the wrong shape, a 16 px PNG, a PNG whose header declares
  30000 x 30000 px;
- `attack/*/directions.pt`: directions files (no config.yaml beside them) whose recorded
  generator config (`meta["generator_source"]`) holds a `_target_` that would run code: nested,
  at the top, in `_args_`, under `_partial_`, in a nested list, in a `${oc.create:...}`
  interpolation, as an interpolated `_target_`; `outputs/evil/`: a run whose config.yaml has
  such a generator;
- `lb/`: runs whose `evaluation.json` is not JSON, empty, a list, or lacks keys.

train.py cases also pass the tiny settings (`method=voynov generator=dcgan_random logger=none
data.batch_size=8 trainer.max_steps=4 ...`, tests/bad_inputs_driver.py `TINY`) unless they set
the option themselves; evaluate.py cases a tiny evaluation and `logger=none`; explore.py cases
`port=0`.

This file is generated from actual runs; regenerate it with

    .venv/bin/python tests/bad_inputs_driver.py --doc docs/bad_inputs.md

A row marked *not yet* is a case that is not refused cleanly today (the last column says how);
`XFAIL` in tests/test_bad_inputs.py lists them.
"""


_PREFIX = re.compile(r"^\[[^\]]*\]\[ERROR\] - ")


def _cell(text: str, result: dict | None = None) -> str:
    """``text`` for a table cell: the case's folder as $PWD, the repository as <repo>, a log
    prefix left out."""
    if result is not None:
        text = _PREFIX.sub("", text.replace(result.get("cwd", "\0"), "$PWD").replace(str(ROOT), "<repo>"))
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """An inline code span for a table cell (doubled backticks where the text holds one)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def write_doc(path: Path, results: dict[str, dict], xfail: dict[str, str] | None = None) -> None:
    xfail = xfail or {}
    lines = [DOC_HEAD, "| case | command | exit | what it prints |", "|---|---|---|---|"]
    for case in CASES:
        result = results.get(case.id)
        if result is None:
            lines.append(f"| `{case.id}` | {_code(_cell(shown_command(case)))} | | (not run) |")
            continue
        command = _code(_cell(shown_command(case))) + (f"<br>({_cell(case.note)})" if case.note else "")
        errors = error_lines(result)
        found = problems(case, result)
        if found:
            last = _cell(_last_line(result), result)[:200]
            said = (f"*not yet*: {_cell('; '.join(found), result)}"
                    + (f". Last line: {_code(last)}" if last else ""))
        else:
            said = "<br>".join(_code(_cell(line, result)) for line in errors)
        lines.append(f"| `{case.id}` | {command} | {result['exit']} | {said} |")
    Path(path).write_text("\n".join(lines) + "\n")


def _last_line(result: dict) -> str:
    lines = [line for line in result["output"].splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=None, help="JSON lines to write (default: a temp file)")
    parser.add_argument("--only", default="", help="comma-separated case ids")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes that run cases (1 or 2)")
    parser.add_argument("--doc", default=None, help="write the markdown table here")
    parser.add_argument("--show", action="store_true", help="print each case's outcome")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = {s for s in args.only.split(",") if s} or None
    unknown = (only or set()) - set(CASE_IDS)
    if unknown:
        parser.error(f"unknown case ids: {sorted(unknown)}")
    if args.worker:
        return _worker(Path(args.worker), Path(args.results), only or set())
    results_path = Path(args.results or tempfile.mktemp(suffix=".jsonl"))
    setup = run_all(results_path, only, jobs=args.jobs)
    _, results = read_results(results_path)
    if args.show:
        for case in CASES:
            if case.id in results:
                r = results[case.id]
                found = problems(case, r)
                print(f"{'ok  ' if not found else 'BAD '} {case.id} [{r['exit']}, {r['seconds']}s] "
                      + ("; ".join(found) if found else " | ".join(error_lines(r))))
    print(json.dumps(setup))
    if args.doc:
        write_doc(Path(args.doc), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
