"""A stranger's generator, without reading the project's source (issue 30): a DCGAN of faces in
the PyTorch tutorial's architecture (it reads N x 100 x 1 x 1, its first layer ``main.0`` a
ConvTranspose2d, its checkpoint ``{"netG_state_dict": ..., "epoch": ...}``) runs every method and
tool from one config in a folder outside the repository, with no code beyond the network
(examples/faces_dcgan/). SeFa reads the matrix of a Linear, ConvTranspose2d or Conv2d layer
itself; ``input_shape`` feeds the network its shape; every refusal names the setting that fixes
it. The tests use ngf=8 for speed, and the real 64 px shape where only the weights are read."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import EVAL_TINY, ROOT, TINY, compose_cfg, run_script
from hydra.utils import instantiate
from torch import nn

from common.errors import UserError
from directions import BasisDirections, Directions
from generators.adapter import ModuleGenerator
from generators.check import GeneratorCheckError
from lightning_modules.fit_free.ganspace import GANSpace
from lightning_modules.fit_free.sefa import SeFa, sefa_directions

EXAMPLE = ROOT / "examples" / "faces_dcgan"
sys.path.insert(0, str(EXAMPLE))   # the PYTHONPATH of the docs' commands
from faces_dcgan import Generator  # noqa: E402

NGF = 8   # the tests' width: the tutorial's is 64
FIT_FREE = [t for t in TINY if not t.startswith(("generator=", "trainer.max_steps",
                                                 "method.traversal.every"))]
SHORT = [t for t in TINY if not t.startswith(("generator=", "trainer.max_steps="))]


def tutorial_net(ngf: int = NGF, seed: int = 0) -> Generator:
    """The tutorial's network with seeded random weights, its batch norms' running statistics
    away from (0, 1), as a trained network's are: batch norm in training mode would show."""
    torch.manual_seed(seed)
    net = Generator(ngf=ngf)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return net


def save_checkpoint(path, net: nn.Module) -> None:
    """The file the tutorial's training loop writes: the state dict under a key, beside others."""
    torch.save({"netG_state_dict": net.state_dict(), "epoch": 5,
                "netD_state_dict": {"main.0.weight": torch.zeros(64, 3, 4, 4), "main.2.weight": torch.zeros(1)},
                "optimizerG_state_dict": {"state": {}, "param_groups": [{"lr": 2e-4}]}}, path)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """A folder outside the repository as a stranger has it: the network's file, the generator
    config and the checkpoint (ngf=8). Returns (folder, the overrides that choose it)."""
    folder = tmp_path_factory.mktemp("stranger")
    shutil.copy(EXAMPLE / "faces_dcgan.py", folder)
    (folder / "generator").mkdir()
    shutil.copy(EXAMPLE / "generator" / "faces_dcgan.yaml", folder / "generator")
    save_checkpoint(folder / "dcgan_faces.pt", tutorial_net())
    args = [f"hydra.searchpath=[file://{folder}]", "generator=faces_dcgan",
            f"generator.weights={folder}/dcgan_faces.pt", f"generator.module.ngf={NGF}"]
    return folder, args


def build(args: list[str], *overrides: str, tmp_path=None) -> ModuleGenerator:
    return instantiate(compose_cfg(["method=voynov", *args, *overrides], tmp_path).generator)


def layer_jacobian(layer: nn.Module, d: int, conv: bool) -> torch.Tensor:
    """The layer's map on the latent it reads, bias left out, by autograd: rows x d."""
    def f(z):
        x = z.view(1, d, 1, 1) if conv else z.view(1, d)
        out = layer(x)
        return (out - layer(torch.zeros_like(x))).flatten()
    return torch.autograd.functional.jacobian(f, torch.zeros(d))


# ---- the real shape: what is read from the tutorial's 64 px network ---------------------------
def test_the_example_config_reads_a_tutorial_checkpoint_of_the_real_shape(tmp_path, monkeypatch):
    """The example's config as shipped (ngf=64, 64 px) on a file laid out as the tutorial saves
    it: the weights under netG_state_dict, SeFa's matrix of main.0 (100 x 512 x 4 x 4) read as
    (512 x 4 x 4) x 100, GANSpace's features at 4, 8 and 16 px."""
    net = tutorial_net(ngf=64)
    save_checkpoint(tmp_path / "dcgan_faces.pt", net)
    monkeypatch.chdir(ROOT)
    g = build(["hydra.searchpath=[file://examples/faces_dcgan]", "generator=faces_dcgan",
               f"generator.weights={tmp_path}/dcgan_faces.pt"], tmp_path=tmp_path)
    assert torch.equal(g.module.main[0].weight, net.main[0].weight)
    assert torch.equal(g.module.main[1].running_var, net.main[1].running_var)
    assert g.latent_shape == (100,) and g.input_shape == (100, 1, 1) and g.resolution == 64
    weight = net.main[0].weight
    assert tuple(weight.shape) == (100, 512, 4, 4)
    a = g.projection_weight()
    assert a.shape == (512 * 4 * 4, 100)
    assert torch.equal(a, weight.permute(1, 2, 3, 0).reshape(-1, 100))
    SeFa(num_directions=16).check(g)
    latent, _ = g.draw(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = g(latent)
        shapes = [tuple(g.features(latent, k).shape) for k in range(3)]
    assert images.shape == (2, 3, 64, 64) and images.abs().max() <= 1
    assert shapes == [(2, 512, 4, 4), (2, 256, 8, 8), (2, 128, 16, 16)]
    identity = g.identity()
    assert identity["target"] == "faces_dcgan.Generator" and identity["input_shape"] == [100, 1, 1]


def test_batch_norm_stays_frozen_and_images_are_deterministic(stranger):
    g = build(stranger[1])
    stats = {k: v.clone() for k, v in g.module.state_dict().items()}
    g.train()  # what Lightning does at the start of fit
    norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 4 and not any(m.training for m in norms) and not g.training
    assert not any(p.requires_grad for p in g.parameters())
    latent, _ = g.draw(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        batch = g(latent)
        alone = torch.cat([g(latent[i:i + 1]) for i in range(6)])
        again = g(latent)
    assert torch.equal(batch, again)
    assert torch.allclose(batch, alone, atol=1e-5)  # no image depends on its batch
    assert all(torch.equal(stats[k], v) for k, v in g.module.state_dict().items())  # stats untouched
    assert batch.std() > 0.01 and batch.shape == (6, 3, 64, 64)


# ---- SeFa's matrix of each kind of layer that reads the latent --------------------------------
class Head(nn.Module):
    """``first`` reads the latent (N x d, or N x d x 1 x 1 through input_shape); a fixed linear
    map and a tanh make 3 x 8 x 8 images of whatever it outputs."""

    def __init__(self, first: nn.Module, conv: bool, d: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = first
        probe = first(torch.zeros(1, d, 1, 1) if conv else torch.zeros(1, d))
        self.to_image = nn.Linear(probe.numel(), 3 * 8 * 8)

    def forward(self, z):
        return torch.tanh(self.to_image(torch.relu(self.first(z)).flatten(1))).view(-1, 3, 8, 8)


def moved(w: torch.Tensor) -> torch.Tensor:
    """A ConvTranspose2d's weight d x out x k x k as (out k k) x d: row (o, i, j) is w[:, o, i, j]."""
    return w.permute(1, 2, 3, 0).reshape(-1, w.shape[0])


LAYERS = {
    "linear": (lambda: nn.Linear(6, 20), lambda w: w),
    "convT-k4-p0": (lambda: nn.ConvTranspose2d(6, 5, 4, 1, 0), moved),
    "convT-k4-p1": (lambda: nn.ConvTranspose2d(6, 5, 4, 2, 1), lambda w: moved(w[:, :, 1:3, 1:3])),
    "conv-k1": (lambda: nn.Conv2d(6, 5, 1), lambda w: w[:, :, 0, 0]),
    "conv-k3-p1": (lambda: nn.Conv2d(6, 5, 3, padding=1), lambda w: w[:, :, 1, 1]),
    "conv-k4-p3": (lambda: nn.Conv2d(6, 5, 4, padding=3),
                   lambda w: w.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, 6)),
    "convT-groups": (lambda: nn.ConvTranspose2d(6, 4, 2, groups=2), None),
}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_projection_weight_is_the_map_of_the_layer_on_the_latent(kind):
    """Rows x latent_dim, column j the change of the layer's output per unit of z_j: a Linear's
    weight; a ConvTranspose2d of padding 0 its weight moved to (out k k) x d; a padded one the
    taps inside its output; a Conv2d on a 1 x 1 input the taps that meet that pixel (the centre
    tap of a 3 x 3 kernel, padding 1)."""
    make, formula = LAYERS[kind]
    conv = kind != "linear"
    g = ModuleGenerator(Head(make(), conv), latent_dim=6, resolution=8, projection="first",
                        input_shape=[6, 1, 1] if conv else None)
    a = g.projection_weight()
    weight = g.module.first.weight
    assert a.ndim == 2 and a.shape[1] == 6
    assert torch.allclose(a, layer_jacobian(g.module.first, 6, conv), atol=1e-6)
    if formula is not None:
        assert torch.equal(a, formula(weight))
    vectors, _ = sefa_directions(a, 3)
    assert vectors.shape == (3, 6)


def test_a_digits_dcgan_with_a_linear_first_layer():
    """The other common shape: a Linear reads N x d, then a reshape (no input_shape)."""
    class Digits(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.fc = nn.Sequential(nn.Linear(10, 16 * 4 * 4), nn.BatchNorm1d(16 * 4 * 4), nn.ReLU())
            self.up = nn.Sequential(nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Tanh())

        def forward(self, z):
            return self.up(self.fc(z).view(-1, 16, 4, 4))

    g = ModuleGenerator(Digits(), latent_dim=10, resolution=8, projection="fc.0",
                        feature_layers=["fc.2"])
    assert torch.equal(g.projection_weight(), g.module.fc[0].weight)
    with torch.no_grad():
        assert g.features(g.sample(3), 0).shape == (3, 256)


# ---- every refusal names the setting that fixes it ------------------------------------------
def test_a_network_that_reads_n_x_100_x_1_x_1_is_told_input_shape():
    with pytest.raises(GeneratorCheckError) as info:
        ModuleGenerator(tutorial_net(), latent_dim=100, resolution=64)
    message = str(info.value)
    assert "is latent_dim (100) the size the network reads?" in message
    assert "it runs on latents N x 100 x 1 x 1: set input_shape: [100, 1, 1]" in message
    with pytest.raises(UserError, match=r"input_shape=\[10, 1, 1\] holds 10 numbers a latent, "
                                        r"latent_dim is 100: e.g. \[100, 1, 1\]"):
        ModuleGenerator(tutorial_net(), latent_dim=100, resolution=64, input_shape=[10, 1, 1])
    with pytest.raises(UserError, match="expected a list of positive sizes"):
        ModuleGenerator(tutorial_net(), latent_dim=100, resolution=64, input_shape=[100, 0])


def test_a_network_of_another_shape_is_told_both_fixes():
    """A network that fails on N x d x 1 x 1 too: input_shape or a call_module override."""
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(7, 3 * 8 * 8)

        def forward(self, z):
            return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)

    with pytest.raises(GeneratorCheckError) as info:
        ModuleGenerator(Wide(), latent_dim=6, resolution=8)
    assert "needs input_shape: [6, 1, 1] (that shape), or a subclass that overrides call_module" \
        in str(info.value)


def test_a_state_dict_under_a_key_is_told_weights_key(tmp_path):
    save_checkpoint(tmp_path / "g.pt", tutorial_net())
    fix = "set weights_key: netG_state_dict (generator.weights_key=netG_state_dict)"
    kwargs = dict(latent_dim=100, resolution=64, input_shape=[100, 1, 1], weights=str(tmp_path / "g.pt"))
    with pytest.raises(UserError) as info:
        ModuleGenerator(tutorial_net(), **kwargs)
    assert ("the network's state dict is under the key 'netG_state_dict' of the file (state dicts "
            "under ['netD_state_dict', 'netG_state_dict'])") in str(info.value)
    assert fix in str(info.value) and "unexpected keys" in str(info.value)
    with pytest.raises(UserError) as info:
        ModuleGenerator(tutorial_net(), weights_key="g_ema", **kwargs)
    assert "no weights_key 'g_ema' in the file" in str(info.value) and fix in str(info.value)
    g = ModuleGenerator(tutorial_net(seed=1), weights_key="netG_state_dict", **kwargs)
    assert torch.equal(g.module.main[0].weight, tutorial_net().main[0].weight)


@pytest.mark.parametrize("projection, messages", [
    (None, ["SeFa needs the weight that reads the latent", "set generator.projection=main.0 (its "
            "ConvTranspose2d reads the latent), or override projection_weight"]),
    ("main.1", ["projection='main.1' is a BatchNorm2d: SeFa reads the weight of a Linear, a "
                "ConvTranspose2d or a Conv2d on a 1 x 1 input", "set generator.projection=main.0"]),
    ("main.3", ["projection='main.3': this ConvTranspose2d reads inputs N x 64 x 4 x 4, not the "
                "latent (N x 100 x 1 x 1)", "generator.projection", "override projection_weight"]),
    ("main.99", ["has no submodule 'main.99'", "main.0"]),
], ids=["unset", "batch-norm", "not-the-first", "unknown"])
def test_sefa_refusals_name_the_layer_that_reads_the_latent(stranger, projection, messages):
    g = build(stranger[1], f"generator.projection={projection or 'null'}")
    with pytest.raises(UserError) as info:
        SeFa(num_directions=4).check(g)
    for message in messages:
        assert message in str(info.value)


@pytest.mark.parametrize("feature_layers, feature_layer, messages", [
    ("[]", 0, ["method.feature_layer=0: an index into the generator's feature layers, 0 the first",
               "has feature_layers [], the names of the submodules whose outputs are its features",
               "set generator.feature_layers to a list of names of its submodules", "main.2"]),
    ("[main.2,main.5]", 3, ["method.feature_layer=3", "use an index in 0..1, or add submodule "
                                                      "names to generator.feature_layers"]),
    ("[main.2,nosuch]", 1, ["method.feature_layer=1", "has no submodule 'nosuch'", "main.0"]),
], ids=["empty", "index", "name"])
def test_ganspace_refusals_explain_the_feature_layer(stranger, feature_layers, feature_layer,
                                                     messages):
    g = build(stranger[1], f"generator.feature_layers={feature_layers}")
    with pytest.raises(UserError) as info:
        GANSpace(num_directions=4, samples=16, feature_layer=feature_layer).check(g)
    for message in messages:
        assert message in str(info.value)


def test_the_evaluation_length_is_on_the_configuration_page():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert "| `evaluation.settings.rca.steps` |" in page and "| `evaluation.settings.samples` |" in page
    guide = (ROOT / "docs" / "generators.md").read_text()
    for hook in ("`network_input(latent)`", "`call_module(x, y)`", "`projection_weight()`",
                 "`features(latent, k)`", "`input_shape`", "examples/faces_dcgan"):
        assert hook in guide


# ---- the methods and tools, from the folder outside the repository ---------------------------
@pytest.mark.parametrize("method, extra", [
    ("sefa", ["method.num_directions=4"]),
    ("ganspace", ["method.num_directions=4", "method.samples=64", "data.batch_size=32"]),
])
def test_sefa_and_ganspace_run_from_a_config_outside_the_repository(stranger, tmp_path, method,
                                                                    extra):
    from train import train

    folder, args = stranger
    cfg = compose_cfg([f"method={method}", "run_name=faces", *FIT_FREE, *args, *extra], tmp_path)
    train(cfg)
    made = Directions.load(tmp_path / "faces" / "directions.pt")
    assert isinstance(made.directions, BasisDirections) and made.num_directions == 4
    identity = made.meta["generator"]
    assert identity["target"] == "faces_dcgan.Generator" and identity["input_shape"] == [100, 1, 1]
    assert made.meta["generator_source"]["weights_key"] == "netG_state_dict"
    if method == "sefa":
        weight = tutorial_net().main[0].weight
        expected, _ = sefa_directions(weight.permute(1, 2, 3, 0).reshape(-1, 100), 4)
        assert torch.allclose(made.directions.basis, expected, atol=1e-5)
    assert (tmp_path / "faces" / "traversal.png").is_file()


@pytest.mark.slow
def test_voynov_edit_evaluate_and_explore_from_a_folder_outside_the_repository(stranger, tmp_path):
    """The docs' commands as a stranger runs them from their own folder: train.py (Voynov),
    edit.py (naming the class), evaluate.py (naming the config), and the explorer's renders."""
    folder, args = stranger
    env = {"PYTHONPATH": str(folder)}
    out = tmp_path / "outputs"
    result = run_script(["method=voynov", *args, *SHORT, "trainer.max_steps=2",
                         f"paths.output_dir={out}", "run_name=voynov"], cwd=folder, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = out / "voynov"
    directions = Directions.load(run / "directions.pt")
    assert directions.meta["generator"]["input_shape"] == [100, 1, 1]

    full_env = {**os.environ, "PYTHONPATH": str(folder), "WANDB_MODE": "offline"}

    def script(name: str, *words: str):
        done = subprocess.run([sys.executable, str(ROOT / name), f"directions={run}/directions.pt",
                               *words], cwd=folder, env=full_env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    for image in ("a.png", "b.png"):   # twice: the same images (frozen batch norm, fixed noise)
        script("edit.py", "direction=0", "seeds=[0,1]", "alphas=[-3,0,3]",
               "trusted_modules=[faces_dcgan.Generator]", f"out={tmp_path / image}")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    tiny = [o for o in EVAL_TINY if o != "evaluation.enabled=true"]
    script("evaluate.py", *args[:2], "logger=none", f"paths.output_dir={out}", *tiny)
    assert (run / "evaluation.json").is_file() and (run / "evaluation.md").is_file()

    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from common.images import png_bytes
    from explorer.app import ExplorerApp
    from explorer.render import Explorer

    explorer = Explorer.open([run / "directions.pt"], None,
                             trusted_modules=["faces_dcgan.Generator"])
    client = TestClient(ExplorerApp(explorer).asgi())
    response = client.post("/api/render", json={"seed": 5, "edits": [[0, 2.0]]})
    assert response.status_code == 200, response.text
    g, d = explorer.generator, explorer.files[0].directions
    with torch.no_grad():
        latent = g.draw(1, torch.Generator().manual_seed(5))[0]
        assert response.content == png_bytes(g(d.apply(latent, [(0, 2.0)])), nrow=1)


@pytest.mark.slow
def test_a_checkpoint_under_a_key_is_one_line_on_the_command_line(stranger, tmp_path):
    folder, args = stranger
    result = run_script(["method=sefa", *args, "generator.weights_key=null", *FIT_FREE,
                         f"paths.output_dir={tmp_path}", "run_name=keyless"], cwd=folder,
                        env={"PYTHONPATH": str(folder)})
    message = result.stderr + result.stdout
    assert result.returncode == 2, message[-3000:]
    assert "generator.weights_key=netG_state_dict" in message and "Traceback" not in message
    assert not (tmp_path / "keyless").exists()
