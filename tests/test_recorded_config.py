"""A shared file's recorded generator config is data: edit.py, evaluate.py and explore.py rebuild
the generator only through the project's loaders with checked plain values, so a crafted record
(a `_target_` at any depth, `_args_`, `_partial_`, an interpolation, a pickle in the bytes of an
argument) runs nothing; your own network is rebuilt only when you name it."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

import edit
import evaluate
from common.errors import UserError
from directions import Directions, LinearDirections
from explorer.render import Explorer
from generators import random_generator
from generators.base import identity_mismatch
from generators.recorded import RecordedConfigError, rebuild_generator

RANDOM = OmegaConf.to_container(OmegaConf.load(CONFIGS / "generator" / "dcgan_random.yaml"))


class _Payload:
    """Unpickling it runs ``exec`` of ``code``: what an attacker puts in the bytes."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def payloads(marker: Path) -> dict[str, dict]:
    """Recorded generator configs, each of which creates ``marker`` under Hydra's instantiate."""
    pickled = list(pickle.dumps(_Payload(_touch(marker))))
    torch_load = {"_target_": "torch.load", "weights_only": False,
                  "f": {"_target_": "io.BytesIO",
                        "_args_": [{"_target_": "builtins.bytes", "_args_": [pickled]}]}}
    run = torch_load  # returns what the pickle's exec returns: None
    return {
        # the issue's two: a pickle in an argument's bytes, and the silent variant (exec returns
        # None for truncation_cutoff, so the right images follow)
        "torch-load": {**RANDOM, "init_seed": torch_load},
        "silent": {**RANDOM, "truncation_cutoff": run},
        "top-level": {"_target_": "builtins.exec", "_args_": [_touch(marker)]},
        "nested-list": {**RANDOM, "regressor": {"path": "shapes_regressor32.pt",
                                                "factors": ["x", run]}},
        "partial": {**RANDOM, "truncation_cutoff": {**run, "_partial_": True}},
        "args": {**RANDOM, "_args_": [run]},
        "interpolation": {**RANDOM, "name": "${oc.env:HOME}"},
        "adapter": {"_target_": "generators.adapter.ModuleGenerator", "_recursive_": False,
                    "module": run,
                    "latent_dim": 8, "resolution": 32},
    }


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A directions file for the tiny random DCGAN, recording the config that rebuilds it."""
    generator = instantiate(RANDOM)
    directions = Directions(LinearDirections(generator.latent_dim, 3),
                            {"method": "test", "generator": generator.identity(),
                             "generator_source": generator.source, "space": "z",
                             "alpha_range": 3.0})
    return directions.save(tmp_path_factory.mktemp("good") / "directions.pt")


def _crafted(good: Path, folder: Path, record) -> Path:
    blob = torch.load(good, weights_only=True)
    blob["meta"]["generator_source"] = record
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(blob, folder / "directions.pt")
    return folder / "directions.pt"


def _compose(name: str, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("kind", list(payloads(Path("m"))))
def test_a_crafted_record_runs_nothing_in_any_script(good, tmp_path, kind):
    marker = tmp_path / "pwned"
    record = payloads(marker)[kind]
    if kind not in ("interpolation", "partial", "top-level"):
        # the control: Hydra's instantiate runs the payload (its blocklist stops builtins.exec
        # as a target, not torch.load)
        try:
            instantiate(record)
        except Exception:  # noqa: BLE001 - most payloads also break the build afterwards
            pass
        assert marker.exists(), "the payload must be live for the test to mean anything"
        marker.unlink()
    path = _crafted(good, tmp_path / "shared", record)
    before = sorted((p.name, p.read_bytes()) for p in path.parent.iterdir())
    out = tmp_path / "out.png"
    with pytest.raises(UserError, match="recorded"):
        edit.edit(_compose("edit", f"directions={path}", f"out={out}", "seeds=[0]"))
    with pytest.raises(UserError, match="recorded"):
        evaluate.evaluate(_compose("evaluate", f"directions={path}", "logger=none"))
    with pytest.raises(UserError, match="recorded"):
        Explorer.open([path], generator_cfg=None)
    assert not marker.exists() and not out.exists()
    assert sorted((p.name, p.read_bytes()) for p in path.parent.iterdir()) == before


def test_a_crafted_run_config_runs_nothing(good, tmp_path):
    """A shared run folder's config.yaml is read the same way (as YAML, then checked)."""
    marker = tmp_path / "pwned"
    path = _crafted(good, tmp_path / "run", RANDOM)
    config = {"generator": payloads(marker)["silent"], "method": {"name": "voynov"}}
    (path.parent / "config.yaml").write_text(OmegaConf.to_yaml(config))
    with pytest.raises(UserError, match=r"config.yaml: generator.truncation_cutoff"):
        edit.edit(_compose("edit", f"directions={path}", "seeds=[0]"))
    assert not marker.exists() and not (path.parent / "edits").exists()


def test_a_plain_record_rebuilds_the_same_generator(good):
    directions = Directions.load(good)
    rebuilt = rebuild_generator(directions.meta["generator_source"], str(good))
    assert not identity_mismatch(directions.meta["generator"], rebuilt.identity())
    shipped = rebuild_generator({"_target_": "generators.load_generator",
                                 "path": "dcgan_shapes32.pt", "space": "z"}, "test")
    assert shipped.name == "dcgan_shapes32"


@pytest.mark.parametrize("record, message", [
    ({**RANDOM, "space": "q"}, "generator.space='q'"),
    ({**RANDOM, "truncation_psi": "x"}, "generator.truncation_psi='x'"),
    ({**RANDOM, "init_seed": True}, "generator.init_seed=True"),
    ({**RANDOM, "regressor": {"path": 3}}, "generator.regressor.path=3"),
    ({**RANDOM, "surprise": 1}, "unknown options ['surprise']"),
    ({**RANDOM, "architecture": "vit"}, "architecture='vit'"),
    ({**RANDOM, "width": {"a": 1}}, "a mapping"),
    ({k: v for k, v in {**RANDOM, "architecture": "stylegan3", "geometry": {"a": {"b": 1}}}.items()
      if k not in ("latent_dim", "width")}, "generator.geometry: a mapping"),
    ([1, 2], "not a mapping"),
    ({"_target_": "generators.load_generator", "path": 5}, "generator.path=5"),
    ({**RANDOM, "name": [[[[[[[[[["deep"]]]]]]]]]]}, "nested too deep"),
], ids=["space", "psi", "seed-bool", "regressor", "unknown", "architecture", "kwarg-map", "geometry-nested",
        "list", "path", "deep"])
def test_a_malformed_record_is_one_line_naming_the_entry(record, message):
    with pytest.raises(RecordedConfigError, match=None) as err:
        rebuild_generator(record, "crafted.pt")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_your_own_network_is_rebuilt_only_when_you_name_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "my_generator"))
    record = {"_target_": "generators.adapter.ModuleGenerator", "_recursive_": False,
              "module": {"_target_": "my_generator.ToyGenerator", "latent_dim": 8},
              "latent_dim": 8, "resolution": 32, "output_range": [0, 1]}
    with pytest.raises(RecordedConfigError, match=r"trusted_modules=\[my_generator.ToyGenerator\]"):
        rebuild_generator(record, "shared.pt")
    generator = rebuild_generator(record, "shared.pt", trusted=["my_generator.ToyGenerator"])
    assert generator.identity()["target"] == "my_generator.ToyGenerator"
    # trusting one class does not let the record smuggle code into its arguments
    bad = {**record, "module": {**record["module"], "latent_dim": {"_target_": "builtins.exec"}}}
    with pytest.raises(RecordedConfigError, match="Hydra key"):
        rebuild_generator(bad, "shared.pt", trusted=["my_generator.ToyGenerator"])
    # nor trusts an unrelated class as an adapter
    with pytest.raises(RecordedConfigError, match="not a subclass"):
        rebuild_generator({**record, "_target_": "collections.OrderedDict"}, "shared.pt",
                          trusted=["collections.OrderedDict"])


def test_the_recorded_bytes_payload_is_inert_as_data(tmp_path):
    """The refused record is read with torch.load(weights_only=True) as plain lists and dicts:
    the pickle inside is bytes, never unpickled."""
    marker = tmp_path / "pwned"
    record = payloads(marker)["torch-load"]
    buffer = io.BytesIO()
    torch.save({"record": record}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["record"] == record
    assert not marker.exists()
    assert random_generator is not None
