"""evaluate.py, edit.py and leaderboard.py on the directions of a fast Voynov run: outputs,
baselines cached, the real CLIs, and clear errors for bad input."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, EVAL_TINY, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import evaluate
import leaderboard
import train
from common.errors import UserError
from regressors.attributes import AttributeRegressor

# learning runs, subprocesses: outside the fast loop (pytest -m "not slow")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def voynov_run(tmp_path_factory):
    """A tiny Voynov run on the random generator, evaluated at its end."""
    from conftest import TINY, compose_cfg

    out = tmp_path_factory.mktemp("runs")
    cfg = compose_cfg(["method=voynov", "run_name=tiny", *TINY, *EVAL_TINY], out)
    metrics = train.train(cfg)
    return out, out / "tiny", metrics


def eval_cfg(directions, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        tiny = [o for o in EVAL_TINY if o != "evaluation.enabled=true"]
        return compose("evaluate", overrides=[f"directions={directions}", "logger=none",
                                              *tiny, *overrides])


def test_a_run_ends_with_its_evaluation(voynov_run):
    out, run, metrics = voynov_run
    report = json.loads((run / "evaluation.json").read_text())
    assert report["order"] == ["voynov", "random", "coordinate"]
    assert set(report["results"]) == set(report["order"])
    # 16 learned and random directions; the coordinate axes of an 8-d latent space are 8.
    counts = {"voynov": 16, "random": 16, "coordinate": 8}
    for name, result in report["results"].items():
        m = result["metrics"]
        assert {"rca", "coverage", "purity", "gap", "lap1", "l2", "samples"} <= set(m)
        assert "d_score_edited" not in m  # the random generator brings no discriminator
        assert m["samples"] == 8 and 0 <= m["rca"] <= 1
        assert len(result["effect_matrix"]) == counts[name] and len(result["effect_matrix"][0]) == 6
        # the unit of each factor's column: its mean change between two of the 8 samples
        assert len(result["factor_spread"]) == 6 and all(v > 0 for v in result["factor_spread"])
    for name in ("evaluation.md", "effect_matrix.png", "traversal_annotated.png"):
        assert (run / name).stat().st_size > 0
    assert "eval/rca" in metrics and "| voynov |" in (run / "evaluation.md").read_text()
    assert len(list((out / ".cache" / "baselines").glob("*.json"))) == 2


def test_evaluate_reuses_cached_baselines(voynov_run):
    out, run, _ = voynov_run
    cfg = eval_cfg(run / "directions.pt", f"paths.output_dir={out}")
    report = evaluate.evaluate(cfg)
    assert report["results"]["random"].get("cached") and report["results"]["coordinate"].get("cached")
    assert not report["results"]["voynov"].get("cached")


def test_evaluate_edit_and_leaderboard_clis(voynov_run, tmp_path):
    out, run, _ = voynov_run
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline")
    tiny = [o for o in EVAL_TINY if o != "evaluation.enabled=true"]
    done = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"directions={run}/directions.pt",
                           f"paths.output_dir={out}", *tiny], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| random (baseline) |" in done.stdout and (run / "wandb").is_dir()
    for fmt in ("png", "gif"):
        done = subprocess.run([sys.executable, str(ROOT / "edit.py"), f"directions={run}/directions.pt",
                               "direction=[0,2]", "seeds=[1,2]", "alphas=[-3,0,3]", f"format={fmt}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (run / "edits" / f"direction00-02.{fmt}").stat().st_size > 0
    assert leaderboard.main([str(out), "--out", str(tmp_path / "board.md")]) == 0
    board = (tmp_path / "board.md").read_text()
    assert "voynov (tiny, dcgan_random)" in board and "random baseline (dcgan_random, K=16)" in board


def test_edit_writes_the_traversal_it_was_asked_for(voynov_run, tmp_path):
    import edit

    _, run, _ = voynov_run
    latents = torch.randn(2, 8)
    torch.save(latents, tmp_path / "z.pt")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("edit", overrides=[f"directions={run}/directions.pt", f"latents={tmp_path}/z.pt",
                                         "direction=1", "alphas=[-2,2]", f"out={tmp_path}/e.png"])
    from PIL import Image
    path = edit.edit(cfg)
    assert Image.open(path).size == (2 * 33 + 1, 2 * 33 + 1)  # 2 latents x 2 alphas of 32 px
    # alphas=auto (the default): 7 steps over the range the directions were trained on.
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("edit", overrides=[f"directions={run}/directions.pt", f"latents={tmp_path}/z.pt",
                                         f"out={tmp_path}/auto.png"])
    assert Image.open(edit.edit(cfg)).size == (7 * 33 + 1, 2 * 33 + 1)
    bad = [("direction=16", "16 directions"), ("alphas=[]", "alphas"), ("format=jpg", "png or gif"),
           (f"latents={tmp_path}/missing.pt", "no such file")]
    for override, message in bad:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("edit", overrides=[f"directions={run}/directions.pt", override])
        with pytest.raises(UserError, match=message):
            edit.edit(cfg)


def test_bad_input_gets_clear_errors(voynov_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no LPIPS weights here, whatever the machine
    out, run, _ = voynov_run
    before = (run / "evaluation.json").read_bytes()
    # Directions made for another generator: a different latent size, or other weights.
    with pytest.raises(UserError, match="8-d latent space"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", "generator_from_run=false",
                                   "generator=dcgan_shapes"))
    with pytest.raises(UserError, match="use the generator it was made for"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", "generator_from_run=false",
                                   "generator=dcgan_random", "generator.init_seed=1"))
    # A regressor that does not read the world's factors.
    other = AttributeRegressor([{"name": "smile", "kind": "binary"}],
                               backbone_kwargs={"channels": [8, 8, 8, 8], "stem_width": 8})
    other.save(tmp_path / "smile.pt")
    with pytest.raises(UserError, match=r"factors \['smile'\].*evaluation.factors=null"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", f"evaluation.regressor={tmp_path}/smile.pt"))
    # A device this machine does not have (no machine has 100 GPUs), or no device at all.
    with pytest.raises(UserError, match=r"device=cuda:99: \d+ CUDA GPU\(s\) visible"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", "device=cuda:99"))
    with pytest.raises(UserError, match="device=tpu0: not a device"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", "device=tpu0"))
    # Missing files.
    with pytest.raises(UserError, match="directions file not found"):
        evaluate.evaluate(eval_cfg(tmp_path / "nothing.pt"))
    with pytest.raises(UserError, match="regressor weights not found"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", "evaluation.regressor=nope.pt"))
    with pytest.raises(UserError, match="lap1"):
        evaluate.evaluate(eval_cfg(run / "directions.pt", "evaluation.settings.lpips=alex"))
    # A text file and a truncated directions file: one clear error, and nothing written beside them.
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "text.pt").write_text("hello\n")
    (bad_dir / "cut.pt").write_bytes((run / "directions.pt").read_bytes()[:3000])
    for name in ("text.pt", "cut.pt"):
        with pytest.raises(UserError, match="not a readable torch file"):
            evaluate.evaluate(eval_cfg(bad_dir / name))
    assert sorted(p.name for p in bad_dir.iterdir()) == ["cut.pt", "text.pt"]
    assert (run / "evaluation.json").read_bytes() == before  # nothing written by failed runs


def _edit_cfg(run, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("edit", overrides=[f"directions={run}/directions.pt", *overrides])


def test_edit_inverts_a_real_image_then_edits_its_reconstruction(voynov_run, tmp_path):
    """image=: a world render no generator made is inverted (its PSNR reported and written with
    the latents), and the strip starts with the image itself."""
    from PIL import Image

    import edit
    from datamodules.world import ShapesWorld

    _, run, _ = voynov_run
    world = ShapesWorld(32)
    render = world.render(world.sample_factors(1, torch.Generator().manual_seed(3)))[0]
    pixels = ((render.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    cfg = _edit_cfg(run, f"image={tmp_path}/photo.png", "direction=[0,2]", "alphas=[-2,0,2]",
                    "inversion.steps=20", "inversion.starts=2")
    path = edit.edit(cfg)
    assert path.name == "photo_direction00-02.png"
    assert Image.open(path).size == (4 * 33 + 1, 2 * 33 + 1)  # image + 3 alphas; 2 directions
    report = json.loads((path.parent / "photo_inversion.json").read_text())
    assert report["images"] == 1 and report["files"] == [str(tmp_path / "photo.png")]
    assert report["psnr"] == pytest.approx(report["psnr_per_image"][0], abs=1e-3) and report["psnr"] > 5
    latents = torch.load(path.parent / "photo_latents.pt", weights_only=True)
    assert latents.shape == (1, 8)
    # The latents file reproduces the strip without inverting again.
    again = edit.edit(_edit_cfg(run, f"latents={path.parent}/photo_latents.pt", "direction=[0,2]",
                                "alphas=[-2,0,2]", f"out={tmp_path}/again.png"))
    strip, replay = (torch.tensor(list(Image.open(p).getdata())).view(67, -1, 3) for p in (path, again))
    assert torch.equal(strip[:, 33:], replay)  # the same edits, without the image column


def test_edit_refuses_bad_images_before_work(voynov_run, tmp_path):
    from PIL import Image

    import edit

    _, run, _ = voynov_run
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    (tmp_path / "folder.png").mkdir()
    bad = [(f"image={tmp_path}/notes.png", "not a readable image"),
           (f"image={tmp_path}/big.png", "is 40 x 30 px; this generator draws 32 x 32"),
           (f"image={_png_header(tmp_path / 'bomb.png', 30000, 30000)}", "decompression-bomb limit"),
           (f"image={tmp_path}/missing.png", "no such file"),
           (f"image={tmp_path}/folder.png", "it is a directory"),
           ("inversion.loss=l3", "unknown image distance"),
           ("inversion.steps=0", "inversion.steps"),
           ("device=cuda:99", "CUDA GPU")]
    for override, message in bad:
        extra = [] if override.startswith("image=") else [f"image={tmp_path}/big.png"]
        if override.startswith("inversion.loss"):
            Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
            extra = [f"image={tmp_path}/ok.png"]
        with pytest.raises(UserError, match=message):
            edit.edit(_edit_cfg(run, override, *extra))
    assert not (run / "edits" / "ok_inversion.json").exists()


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` RGB pixels but holds the compressed data of
    a few bytes only: decoding it fails ("truncated"), reading its header does not."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_an_image_of_the_wrong_size_is_refused_from_its_header(tmp_path):
    """image=: the size is read from the header and refused before any pixel is decoded, so
    a 13,000 px square costs no memory, and one past PIL's decompression-bomb limit (30,000
    px) is the same one line, not a DecompressionBombError. Decoding these files fails
    ("truncated"): the size message proves nothing was decoded."""
    from common.images import read_image

    fit = r"this generator draws 32 x 32: crop and resize it first"
    with pytest.raises(ValueError, match=rf"is 13000 x 13000 px; {fit}"):
        read_image(_png_header(tmp_path / "large.png", 13000, 13000), 32)
    with pytest.raises(ValueError, match=rf"huge.png is over [\d,]+ pixels \(PIL's decompression-bomb "
                                         rf"limit\); {fit}") as caught:
        read_image(_png_header(tmp_path / "huge.png", 30000, 30000), 32)
    assert "\n" not in str(caught.value)
    # at the generator's size the pixels are decoded, and this file has none
    with pytest.raises(ValueError, match="not a readable image .*truncated"):
        read_image(_png_header(tmp_path / "right.png", 32, 32), 32)


class _RunsCode:
    """Unpickling it calls os.system: what a latents file must never be able to do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_edit_refuses_bad_latents_files_with_one_line(voynov_run, tmp_path):
    """latents=: a pickle that runs code (raw, or inside a torch file), an empty, text or
    truncated file, NaN or inf values, integers, the wrong shape or no tensor: each is one
    line naming latents=<path> and what to pass; nothing runs, nothing is written. On the
    command line: exit status 2, no traceback."""
    import pickle

    import edit

    _, run, _ = voynov_run
    marker = tmp_path / "ran"
    files = tmp_path / "latents"
    files.mkdir()
    (files / "code.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    torch.save(_RunsCode(marker), files / "code.pt")
    (files / "empty.pt").write_bytes(b"")
    (files / "text.pt").write_text("0.1 0.2 0.3\n")
    (files / "words.pt").write_text("hello world\n")
    torch.save(torch.randn(4, 8), files / "good.pt")
    (files / "cut.pt").write_bytes((files / "good.pt").read_bytes()[:300])
    torch.save(torch.tensor([[float("nan")] * 8]), files / "nan.pt")
    torch.save(torch.full((2, 8), float("inf")), files / "inf.pt")
    torch.save(torch.ones(2, 8, dtype=torch.long), files / "long.pt")
    torch.save(torch.randn(2, 7), files / "shape.pt")
    torch.save(torch.randn(8), files / "flat.pt")
    torch.save(torch.randn(0, 8), files / "none.pt")
    torch.save({"z": torch.randn(2, 8)}, files / "dict.pt")
    want = r"; pass an N x 8 float tensor saved with torch.save, for generator 'dcgan_random'"
    bad = {"code.pkl": "torch.load\\(weights_only=True\\) refuses this file",
           "code.pt": "torch.load\\(weights_only=True\\) refuses this file",
           "empty.pt": r"is not a readable torch file \(empty file\)",
           # text is refused by the unpickler or unreadable, as its first bytes happen to be
           "text.pt": "(?:refuses this file|is not a readable torch file)",
           "cut.pt": "is not a readable torch file", "words.pt": "is not a readable torch file",
           "nan.pt": "holds NaN or infinite values", "inf.pt": "holds NaN or infinite values",
           "long.pt": r"holds a tensor of shape \(2, 8\) and dtype int64",
           "shape.pt": r"holds a tensor of shape \(2, 7\) and dtype float32",
           "flat.pt": r"holds a tensor of shape \(8,\) and dtype float32",
           "none.pt": r"holds a tensor of shape \(0, 8\) and dtype float32",
           "dict.pt": "holds a dict, not a tensor"}
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name, message in bad.items():
        pattern = rf"^latents={re.escape(str(files / name))}[: ].*{message}.*{want}"
        with pytest.raises(UserError, match=pattern) as caught:
            edit.edit(_edit_cfg(run, f"latents={files / name}", f"out={tmp_path}/out.png"))
        assert "\n" not in str(caught.value), name
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and not marker.exists()
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline")
    done = subprocess.run([sys.executable, str(ROOT / "edit.py"), f"directions={run}/directions.pt",
                           f"latents={files}/code.pt", f"out={tmp_path}/out.png"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output[-2000:]
    assert f"latents={files}/code.pt: torch.load(weights_only=True) refuses this file" in output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and not marker.exists()


@pytest.mark.parametrize("method", ["voynov", "sefa"])
def test_the_end_of_training_comes_before_the_strategy_teardown(tmp_path, monkeypatch, method):
    """Lightning's strategy teardown moves the module to the CPU before on_fit_end. The final
    evaluation and the export come before it, on the run's device with every process still
    there (on a GPU, under NCCL, a reduction of CPU tensors fails), and the evaluation after
    fit puts the generator back on the run's device."""
    from conftest import TINY, compose_cfg
    from pytorch_lightning.strategies import SingleDeviceStrategy

    seen = {}
    teardown = SingleDeviceStrategy.teardown

    def recording_teardown(self):
        module = self.lightning_module
        seen["directions"] = (Path(module.trainer.default_root_dir) / "directions.pt").is_file()
        seen["metrics"] = dict(module.final_metrics)
        teardown(self)

    monkeypatch.setattr(SingleDeviceStrategy, "teardown", recording_teardown)
    tiny = TINY if method == "voynov" else [
        *(t for t in TINY if not t.startswith(("trainer.max_steps", "method.traversal.every"))),
        "method.num_directions=4"]
    metrics = train.train(compose_cfg([f"method={method}", "run_name=end", *tiny, *EVAL_TINY], tmp_path))
    assert seen["directions"], "the directions were written after the teardown"
    assert seen["metrics"], "the final metrics were computed after the teardown"
    assert "eval/rca" in metrics


def test_the_scripts_device_auto_is_a_gpu_when_there_is_one(voynov_run, tmp_path, monkeypatch):
    """evaluate.py, edit.py and explore.py: device=auto puts the generator on the first CUDA GPU
    when one is visible, else on the CPU; device=cpu keeps it there."""
    import edit
    from common.runs import resolve_device

    _, run, _ = voynov_run
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None) == expected
    assert resolve_device("cpu") == torch.device("cpu")
    seen, images = [], edit._images
    monkeypatch.setattr(edit, "_images", lambda cfg, generator, classes: (
        seen.append(generator.device), images(cfg, generator, classes))[1])
    for name, device in (("a", []), ("b", ["device=cpu"])):
        edit.edit(_edit_cfg(run, "direction=0", "alphas=[0,1]", "seeds=[0]", f"out={tmp_path}/{name}.png",
                            *device))
    assert [d.type for d in seen] == [expected.type, "cpu"]


def test_the_leaderboard_keeps_the_baselines_of_each_generator_view(voynov_run, tmp_path):
    """The Z and W views of one checkpoint are different generators: each keeps its own
    baselines in the table (they were merged under the checkpoint's name), and rows name the
    view where it is not the default."""
    _, run, _ = voynov_run
    report = json.loads((run / "evaluation.json").read_text())
    for space, psi in (("z", 1.0), ("w", 1.0), ("w", 0.7)):
        name = f"{space}{psi:g}"
        (tmp_path / name).mkdir()
        view = dict(report, run_name=name,
                    generator=dict(report["generator"], space=space, truncation={"psi": psi, "cutoff": None}))
        (tmp_path / name / "evaluation.json").write_text(json.dumps(view))
    board = leaderboard.leaderboard(sorted(tmp_path.glob("*/evaluation.json")))
    for gen in ("dcgan_random", "dcgan_random w", "dcgan_random w psi 0.7"):
        assert f"random baseline ({gen}, K=16) |" in board
    assert "voynov (w1, dcgan_random w)" in board and "voynov (z1, dcgan_random)" in board


def test_the_leaderboard_keeps_the_baselines_of_each_layer_range(voynov_run, tmp_path):
    """Baselines on the middle layers of W+ are other sets than on every layer: both stay in
    the table, named by their layers (reports before the field have none: every layer)."""
    _, run, _ = voynov_run
    report = json.loads((run / "evaluation.json").read_text())
    assert report["layers"] is None  # the tiny run moves the whole latent
    generator = dict(report["generator"], space="w+")
    for name, layers in (("every", None), ("middle", [3, 4, 5, 6, 7]), ("some", [0, 2])):
        (tmp_path / name).mkdir()
        view = dict(report, run_name=name, generator=generator, layers=layers)
        (tmp_path / name / "evaluation.json").write_text(json.dumps(view))
    board = leaderboard.leaderboard(sorted(tmp_path.glob("*/evaluation.json")))
    for gen in ("dcgan_random w+", "dcgan_random w+ layers 3-7", "dcgan_random w+ layers 0,2"):
        assert f"random baseline ({gen}, K=16) |" in board
    assert "voynov (middle, dcgan_random w+ layers 3-7)" in board


def _report(run_name: str, **changes) -> dict:
    """A small evaluation.json as evaluate.py writes it: the learned set and one baseline."""
    report = {"run_name": run_name, "label": "voynov", "method": "voynov", "layers": None,
              "generator": {"name": "dcgan_random", "space": "z", "truncation": None},
              "regressor": {"path": "shapes.pt", "sha256": "abc"},
              "settings": {"samples": 8, "alpha": 3.0, "rca": {"steps": 2}},
              "results": {"voynov": {"metrics": {"rca": 0.5, "coverage": 2, "purity": 0.75},
                                     "num_factors": 6, "effect_matrix": [[0.1] * 6] * 3},
                          "random": {"metrics": {"rca": 0.25, "coverage": 1, "purity": 0.5},
                                     "effect_matrix": [[0.1] * 6] * 3}}}
    return dict(report, **changes)


def test_the_leaderboard_never_mixes_effects_in_spreads_with_effects_in_own_units(tmp_path):
    """A report from before version 5 (no factor_spread) reads coverage in other units: it makes
    a table of its own, headed to say so."""
    new = _report("new")
    for name in new["results"]:
        new["results"][name]["factor_spread"] = [0.5] * 6
    for name, report in (("new", new), ("old", _report("old"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "evaluation.json").write_text(json.dumps(report))
    board = leaderboard.leaderboard(sorted(tmp_path.glob("*/evaluation.json")))
    assert board.count("### Setting") == 2 and board.count("own units") == 1
    old_table = board[board.index("own units"):]
    assert "voynov (old" in old_table and "voynov (new" not in old_table


def test_the_leaderboard_skips_each_bad_file_with_one_line(tmp_path, capsys):
    """One unreadable evaluation.json does not sink the table: each is skipped with one line
    on stderr naming it and why, the others make the table (exit status 0). Text from the
    files is escaped for markdown; NaN and inf read nan / inf; none readable: exit status 2."""
    good = _report("good")
    broken = {
        "missing": json.dumps({k: v for k, v in good.items() if k != "settings"}),
        "wrong_type": json.dumps(_report("w", results={"voynov": {"metrics": {"rca": "high"}}})),
        "not_object": json.dumps(_report("n", generator=["dcgan_random"])),
        "deep": "[" * 100_000,
        "utf8": b'{"run_name": "\xff\xfe"}',
        "digits": '{"settings": ' + "9" * 4301 + "}",
        "list": "[1, 2]",
        "empty": "",
    }
    reasons = {"missing": "missing key 'settings'",
               "wrong_type": "'results.voynov.metrics.rca' is str, not a number",
               "not_object": "'generator' is list, not an object",
               "deep": "not valid JSON: nested too deeply", "utf8": "not UTF-8 text",
               "digits": "not valid JSON (Exceeds the limit (4300 digits)",
               "list": "holds a JSON list, not an evaluation report", "empty": "empty file"}
    for name, text in broken.items():
        (tmp_path / name).mkdir()
        path = tmp_path / name / "evaluation.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    odd = {"good": good,
           "nan": _report("nan", results=dict(good["results"], voynov=dict(
               good["results"]["voynov"], metrics={"rca": float("nan"), "coverage": 2,
                                                   "purity": float("inf")}))),
           "markup": _report("<b>x</b> | y\nz & \\"), "far": _report("far", layers=[0, 10 ** 12]),
           # evaluated without a regressor: no sha256, no effect matrices (a table of its own)
           "noreg": _report("noreg", regressor={"path": None, "note": "no regressor"}, results={
               name: {"metrics": {"rca": 0.5, "l2": 0.1}} for name in ("voynov", "random")})}
    for name, report in odd.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "evaluation.json").write_text(json.dumps(report))
    assert leaderboard.main([str(tmp_path), "--out", str(tmp_path / "board.md")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(broken)
    for name, reason in reasons.items():
        line = next(line for line in err if f"/{name}/evaluation.json" in line)
        assert line.startswith("leaderboard: skipping ") and reason in line, line
    board = (tmp_path / "board.md").read_text()
    assert "| voynov (good, dcgan_random) | 0.500 | 2 / 6 | 0.750 |" in board.splitlines()
    assert "| voynov (nan, dcgan_random) | nan | 2 / 6 | inf |" in board.splitlines()
    assert r"| voynov (&lt;b&gt;x&lt;/b&gt; \| y z &amp; \\, dcgan_random) | 0.500 |" in board
    assert "voynov (far, dcgan_random layers 0,1000000000000)" in board
    assert "| random baseline (dcgan_random, K=3) | 0.250 | 1 / 6 | 0.500 |" in board.splitlines()
    assert "| random baseline (dcgan_random, of noreg) | 0.500 | 0.100 |" in board.splitlines()
    # nothing readable: one line, exit status 2
    only_bad = [str(tmp_path / name) for name in ("deep", "empty")]
    assert leaderboard.main(only_bad) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and err[-1].startswith("leaderboard: none of the 2 evaluation.json")
