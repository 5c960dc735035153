"""Your own generator (README, "Your own generator"): any nn.Module through
generators.adapter.ModuleGenerator, the example in examples/my_generator/ run from the command
line through Hydra's search path, and the start-up check that refuses a broken generator with
a message naming the problem and the setting that fixes it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, run_script
from hydra.utils import instantiate
from torch import nn

from directions import Directions
from generators import check_generator, random_generator
from generators.adapter import ModuleGenerator
from generators.base import identity_mismatch
from generators.check import GeneratorCheckError

EXAMPLE = ["hydra.searchpath=[file://examples/my_generator]", "generator=my_generator"]
EXAMPLE_ENV = {"PYTHONPATH": "examples/my_generator"}  # relative: the command runs from ROOT
SHORT = [a for a in TINY if not a.startswith(("generator=", "trainer.max_steps="))]


class Net(nn.Module):
    """A tiny network N x latent -> N x channels x size x size, ``scale * tanh + offset``;
    ``noise``: a random draw in forward; ``conditional``: it needs classes y."""

    def __init__(self, latent: int = 4, size: int = 8, channels: int = 3, scale: float = 1.0,
                 offset: float = 0.0, noise: bool = False, conditional: bool = False,
                 ignore_y: bool = False) -> None:
        super().__init__()
        self.shape, self.scale, self.offset = (channels, size, size), scale, offset
        self.noise, self.conditional, self.ignore_y = noise, conditional, ignore_y
        self.fc = nn.Linear(latent, channels * size * size)
        self.embed = nn.Embedding(3, latent)

    def forward(self, z, y=None):
        if self.conditional and not self.ignore_y:
            z = z + self.embed(y)
        x = self.fc(z) + (torch.randn(z.shape[0], 1) if self.noise else 0)
        return self.scale * torch.tanh(x).view(-1, *self.shape) + self.offset

    def draw(self, z):  # another call signature: a method that is not forward
        return self.forward(z)


class BatchRounding(Net):
    """A network whose images change in their last bits with the batch size, as a BLAS kernel
    chosen by batch size does on some CPUs (a class it ignores must still be found out)."""

    def forward(self, z, y=None):
        return super().forward(z, y) + 1e-6 * z.shape[0]


def wrap(net: nn.Module | None = None, **kwargs) -> ModuleGenerator:
    kwargs = {"latent_dim": 4, "resolution": 8, **kwargs}
    return ModuleGenerator(net if net is not None else Net(), **kwargs)


@pytest.mark.slow
def test_the_example_runs_voynov_from_the_command_line(tmp_path):
    """The command of the README, from the repository root, with relative paths."""
    readme = (ROOT / "README.md").read_text()
    assert ("PYTHONPATH=examples/my_generator python train.py method=voynov \\\n        "
            + " ".join(EXAMPLE)) in readme
    result = run_script(["method=voynov", *EXAMPLE, *SHORT, "trainer.max_steps=2",
                         f"paths.output_dir={tmp_path}", "run_name=mine"], cwd=ROOT,
                        env=EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    directions = Directions.load(tmp_path / "mine" / "directions.pt")
    identity = directions.meta["generator"]
    assert identity["target"] == "my_generator.ToyGenerator" and identity["adapter"] == "module"
    assert identity["output_range"] == [0, 1] and identity["sha256"]
    # the recorded config rebuilds the same generator (evaluate.py / edit.py without the run)
    source = directions.meta["generator_source"]
    assert source["_target_"] == "generators.adapter.ModuleGenerator"
    # edit.py rebuilds it from the run once the user names the class (the README's command),
    # and refuses in one line otherwise: the run folder never names code that runs
    edit = [sys.executable, str(ROOT / "edit.py"), f"directions={tmp_path}/mine/directions.pt",
            "direction=0", "seeds=[0]", f"out={tmp_path}/edit.png"]
    env = {**os.environ, **EXAMPLE_ENV, "WANDB_MODE": "offline"}
    refused = subprocess.run(edit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "trusted_modules=[my_generator.ToyGenerator]" in refused.stdout
    assert not (tmp_path / "edit.png").exists()
    named = subprocess.run([*edit, "trusted_modules=[my_generator.ToyGenerator]"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
    assert named.returncode == 0, named.stdout[-2000:] + named.stderr[-2000:]
    assert (tmp_path / "edit.png").is_file()


@pytest.mark.slow
def test_a_broken_generator_is_refused_on_the_command_line(tmp_path):
    """The example's network draws [0, 1] images: declared as [-1, 1], the run stops at
    start-up with one line saying which setting to use, exit status 2, no run directory."""
    result = run_script(["method=voynov", *EXAMPLE, *SHORT, "generator.output_range=[-1,1]",
                         f"paths.output_dir={tmp_path}", "run_name=broken"], cwd=ROOT,
                        env=EXAMPLE_ENV)
    message = result.stderr + result.stdout
    assert result.returncode == 2, message[-3000:]
    assert "fails the start-up check" in message and "set output_range: [0, 1]" in message
    assert "Traceback" not in message and not (tmp_path / "broken").exists()


@pytest.mark.slow
def test_the_example_without_its_pythonpath_is_one_clear_line(tmp_path):
    result = run_script(["method=voynov", *EXAMPLE, *SHORT, f"paths.output_dir={tmp_path}"],
                        cwd=ROOT)
    message = result.stderr + result.stdout
    assert result.returncode == 2 and "PYTHONPATH=examples/my_generator" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("net, kwargs, message", [
    (Net(size=16), {}, "set resolution: 16"),
    (Net(channels=1), {}, "draws RGB"),
    (Net(scale=127.5, offset=127.5), {}, "set output_range: [0, 255]"),
    (Net(scale=0.5, offset=0.5), {}, "set output_range: [0, 1]"),
    (Net(scale=2.0), {}, "outside [-1, 1]"),
    (Net(noise=True), {}, "fix the noise"),
    (Net(latent=6), {}, "is latent_dim (4) the size the network reads"),
    (Net(conditional=True), {}, "a conditional network needs num_classes"),
    (Net(conditional=True, ignore_y=True), {"num_classes": 3}, "the class changes nothing"),
    (BatchRounding(conditional=True, ignore_y=True), {"num_classes": 3},
     "the class changes nothing"),
], ids=["shape", "grey", "0-255", "0-1", "range", "noise", "latent", "classes", "ignores-y",
        "ignores-y-rounding"])
def test_each_broken_generator_is_refused_with_its_fix(net, kwargs, message):
    with pytest.raises(GeneratorCheckError, match="fails the start-up check") as info:
        wrap(net, **kwargs)
    assert message in str(info.value)


def test_the_check_names_what_is_not_frozen_and_what_is_not_a_generator():
    g = random_generator("dcgan", latent_dim=4, resolution=8, width=4, frozen=False)
    with pytest.raises(GeneratorCheckError) as info:
        check_generator(g)
    assert "require grad" in str(info.value) and "training mode" in str(info.value)
    with pytest.raises(GeneratorCheckError, match="wrap your network"):
        check_generator(Net())


def test_what_the_adapter_converts_and_accepts():
    # [0, 255] declared: images arrive in [-1, 1]; a conditional network gets its classes
    g = wrap(Net(scale=127.5, offset=127.5, conditional=True), output_range=[0, 255],
             num_classes=3)
    latent, y = g.draw(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = g(latent, y)
    assert images.shape == (5, 3, 8, 8) and images.abs().max() <= 1 and images.min() < 0
    assert g.identity()["num_classes"] == 3 and g.identity()["output_range"] == [0, 255]
    assert not any(p.requires_grad for p in g.parameters()) and not g.training
    # another method by name; a subclass for a network that returns more than images
    assert wrap(Net(), call="draw").identity()["target"].endswith("Net.draw")

    class Pair(Net):
        def forward(self, z, y=None):
            return super().forward(z), z

    with pytest.raises(GeneratorCheckError, match="override call_module"):
        wrap(Pair())

    class PairGenerator(ModuleGenerator):
        def call_module(self, latent, y):
            return self.module(latent)[0]

    sub = PairGenerator(Pair(), latent_dim=4, resolution=8)
    assert sub.adapter.endswith("PairGenerator") and sub.identity()["adapter"] == sub.adapter


def test_the_identity_follows_the_weights_and_the_network(tmp_path):
    net = Net()
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    base = wrap(Net(), weights=str(path)).identity()
    assert base == wrap(net).identity()  # the same weights, from a file or in memory
    with torch.no_grad():
        net.fc.bias.add_(0.1)
    torch.save({"g_ema": net.state_dict()}, path)
    changed = wrap(Net(), weights=str(path), weights_key="g_ema").identity()
    assert changed["sha256"] != base["sha256"] and "sha256" in identity_mismatch(base, changed)
    # the network's class and its output range are part of the identity too
    other = wrap(Net(), call="draw").identity()
    assert "target" in identity_mismatch(base, other)
    wider = wrap(Net(scale=0.4), output_range=[-2, 2]).identity()
    assert "output_range" in identity_mismatch(base, wider)
    # a file for another network is refused naming the keys
    torch.save({"other.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="missing keys"):
        wrap(Net(), weights=str(path))


def test_the_config_rebuilds_the_generator(tmp_path):
    """The recorded config rebuilds the generator; a network whose weights come from an
    unseeded initialisation is another generator on each build, and its identity says so."""
    config = {"_target_": "generators.adapter.ModuleGenerator", "_recursive_": False,
              "module": {"_target_": "test_own_generator.Net"}, "latent_dim": 4, "resolution": 8}
    g = instantiate(config)
    assert g.source["module"] == config["module"]
    assert instantiate(g.source).identity()["sha256"] != g.identity()["sha256"]
    torch.save(g.module.state_dict(), tmp_path / "net.pt")
    g = instantiate({**config, "weights": str(tmp_path / "net.pt")})
    assert instantiate(g.source).identity() == g.identity()


def test_the_readme_weights_overrides_compose_and_load_the_key(tmp_path, monkeypatch):
    """README: "A trained network's weights come with ``generator.weights=<file>
    [generator.weights_key=g_ema]``", added to the example's command: both keys are in the
    example's config (Hydra refused ``weights_key`` as "Could not override"), and the
    composed generator loads the state dict under that key."""
    from conftest import compose_cfg

    monkeypatch.syspath_prepend(str(ROOT / "examples" / "my_generator"))  # the README's PYTHONPATH
    from my_generator import ToyGenerator

    readme = (ROOT / "README.md").read_text()
    assert "`generator.weights=<file> [generator.weights_key=g_ema]`" in readme
    net = ToyGenerator(latent_dim=8, seed=5)  # not the config's seed 0: the file's weights show
    torch.save({"g_ema": net.state_dict(), "step": 10}, tmp_path / "trained.pt")
    monkeypatch.chdir(ROOT)  # the README's file:// path is relative to the repository root
    cfg = compose_cfg(["method=voynov", *EXAMPLE, f"generator.weights={tmp_path}/trained.pt",
                       "generator.weights_key=g_ema"], tmp_path)
    assert cfg.generator.weights_key == "g_ema"
    g = instantiate(cfg.generator)
    assert torch.equal(g.module.fc.weight, net.fc.weight)
