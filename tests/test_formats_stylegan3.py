"""NVIDIA StyleGAN3 (-T / -R) pickles (generators/formats/nvidia_stylegan3.py) and the pure
PyTorch StyleGAN3 (generators/stylegan3.py), without NVIDIA's code.

The networks below are written in the published layout (the classes, attribute names, buffers
and pickle structure of the stylegan3 repository's ``training/networks_stylegan3.py``, through
test_formats_nvidia's persistence stand-ins) and compute their images with NVIDIA's reference
(non-CUDA) path: the fused per-sample modulated convolution with its batch-wide style
normalisation, ``filtered_lrelu``'s reference (bias, ``upfirdn2d`` up-sampling at gain up^2,
leaky ReLU and clamp, ``upfirdn2d`` down-sampling) with 2-D filters built as outer products,
and the Fourier features sampled through ``affine_grid``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_formats_nvidia import (
    EasyDict,
    FullyConnectedLayer,
    MappingNetwork,
    Persistent,
    snapshot,
    write_snapshot,
)
from torch import nn

from generators.formats import detect_format, load_checkpoint
from generators.formats.nvidia import NvidiaPickleError, load_nvidia_pickle
from generators.stylegan3 import StyleGAN3Generator, layer_geometry, make_transform

SRC = "# training/networks_stylegan3.py: class SynthesisInput ... (never executed by the loader)\n"


def upfirdn_ref(x, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1.0):
    """NVIDIA's reference upfirdn2d: zero insertion, pad or crop, a true 2-D convolution
    (a 1-D filter as its outer product), decimation."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    if f is None:
        f = torch.ones(1, 1)
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    k = (f2 * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)[:, :, ::down, ::down]


class SynthesisInput(Persistent):
    module_src = SRC

    def __init__(self, w_dim, channels, size, sampling_rate, bandwidth):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # a transform that varies from sample to sample
            self.affine.weight.mul_(0.3)
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.1 * torch.randn(4))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)

    def forward(self, w):
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        m_r = torch.eye(3).unsqueeze(0).repeat([w.shape[0], 1, 1])
        m_r[:, 0, 0], m_r[:, 0, 1], m_r[:, 1, 0], m_r[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        m_t = torch.eye(3).unsqueeze(0).repeat([w.shape[0], 1, 1])
        m_t[:, 0, 2], m_t[:, 1, 2] = -t[:, 2], -t[:, 3]
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3)
        theta[0, 0] = 0.5 * self.size[0] / self.sampling_rate
        theta[1, 1] = 0.5 * self.size[1] / self.sampling_rate
        grids = F.affine_grid(theta.unsqueeze(0), [1, 1, int(self.size[1]), int(self.size[0])], align_corners=False)
        x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (np.pi * 2)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(Persistent):
    module_src = SRC

    def __init__(self, w_dim, spec, filters, conv_clamp=256):
        super().__init__()
        self.w_dim, self.is_torgb = w_dim, spec["is_torgb"]
        self.in_channels, self.out_channels = spec["in_channels"], spec["out_channels"]
        self.in_size = np.broadcast_to(np.asarray(spec["in_size"]), [2])
        self.out_size = np.broadcast_to(np.asarray(spec["out_size"]), [2])
        self.out_sampling_rate = spec["rate"]
        self.conv_kernel, self.conv_clamp = spec["kernel"], conv_clamp
        self.up_factor, self.down_factor, self.padding = spec["up"], spec["down"], list(spec["padding"])
        self.affine = FullyConnectedLayer(w_dim, self.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(0.1 * torch.randn(self.out_channels))
        self.register_buffer("magnitude_ema", torch.tensor(0.5 + torch.rand([]).item()))
        self.register_buffer("up_filter", filters[0])
        self.register_buffer("down_filter", filters[1])

    def forward(self, x, w):
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel ** 2))
        weight, n = self.weight, x.shape[0]
        if not self.is_torgb:  # NVIDIA's pre-normalisation: the styles over the whole batch
            weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
            styles = styles * styles.square().mean().rsqrt()
        wm = weight.unsqueeze(0) * styles[:, None, :, None, None]
        if not self.is_torgb:
            wm = wm * (wm.square().sum([2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
        wm = wm * self.magnitude_ema.rsqrt()
        x = F.conv2d(x.reshape(1, -1, *x.shape[2:]), wm.reshape(-1, self.in_channels, *weight.shape[2:]),
                     padding=self.conv_kernel - 1, groups=n)
        x = x.reshape(n, self.out_channels, *x.shape[2:])
        gain, slope = (1.0, 1.0) if self.is_torgb else (np.sqrt(2), 0.2)
        x = x + self.bias.view(1, -1, 1, 1)
        x = upfirdn_ref(x, self.up_filter, up=self.up_factor, padding=self.padding, gain=self.up_factor ** 2)
        x = torch.where(x >= 0, x, x * slope) * gain
        x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return upfirdn_ref(x, self.down_filter, down=self.down_factor)


class SynthesisNetwork(Persistent):
    module_src = SRC

    def __init__(self, w_dim, img_resolution, geometry, designed_filters):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, 3
        self.output_scale = 0.25
        self.input = SynthesisInput(w_dim, **geometry["input"])
        self.layer_names = []
        for i, (spec, filters) in enumerate(zip(geometry["layers"], designed_filters)):
            name = f"L{i}_{spec['out_size']}_{spec['out_channels']}"
            setattr(self, name, SynthesisLayer(w_dim, spec, filters))
            self.layer_names.append(name)
        self.num_ws = len(self.layer_names) + 1

    def forward(self, ws):
        x = self.input(ws[:, 0])
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, i + 1])
        return x * self.output_scale


class Generator(Persistent):
    module_src = SRC

    def __init__(self, img_resolution=16, w_dim=16, c_dim=0, radial=False, **geometry_kwargs):
        super().__init__()
        geometry = layer_geometry(img_resolution, use_radial_filters=radial, **geometry_kwargs)
        reference = StyleGAN3Generator(img_resolution, w_dim=w_dim, input=geometry["input"],
                                       layers=geometry["layers"])  # only its designed filters are used
        filters = [(m.up_filter, m.down_filter) for m in reference.layers_]
        self._init_args = ()
        self._init_kwargs = dict(z_dim=w_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                 img_channels=3, mapping_kwargs=EasyDict(num_layers=2),
                                 channel_base=geometry_kwargs.get("channel_base", 32768),
                                 channel_max=geometry_kwargs.get("channel_max", 512),
                                 conv_kernel=geometry_kwargs.get("conv_kernel", 3),
                                 use_radial_filters=radial, magnitude_ema_beta=0.999)
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = w_dim, c_dim, w_dim, img_resolution
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, geometry, filters)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(w_dim, c_dim, w_dim, self.num_ws, 2)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff))


SMALL = dict(channel_base=512, channel_max=32, num_layers=5, num_critical=2, margin_size=3)


@pytest.fixture(scope="module")
def nets():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        t = Generator(16, **SMALL).eval()
        r = Generator(16, radial=True, conv_kernel=1, **SMALL).eval()
        cond = Generator(16, c_dim=3, **SMALL).eval()
    return {"t": t, "r": r, "cond": cond}


@pytest.fixture(scope="module")
def files(nets, tmp_path_factory):
    root = tmp_path_factory.mktemp("sg3")
    out = {}
    for key, g in nets.items():
        out[key] = root / f"stylegan3-{key}.pkl"
        write_snapshot(out[key], snapshot(g))
    return out


@pytest.mark.parametrize("kind", ["t", "r"])
def test_stylegan3_files_reproduce_nvidias_reference_images(nets, files, kind):
    ref, path = nets[kind], files[kind]
    assert detect_format(path) == "stylegan3-pickle"
    g = load_checkpoint(path, space="z")
    assert isinstance(g, StyleGAN3Generator) and g.adapter == "stylegan3-nvidia"
    assert g.num_layers == ref.num_ws and g.resolution == 16
    if kind == "r":
        assert any(m.radial for m in g.layers_) and all(m.kernel == 1 for m in g.layers_)
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(z)
        got = g(z)
        assert (got - expected).abs().max() < 1e-5, float((got - expected).abs().max())
        assert expected.abs().max() > 0.05
        # truncation with the stored mean w, in W+ with a cutoff
        g.set_view("z", truncation_psi=0.6, truncation_cutoff=3)
        assert (g(z) - ref(z, None, 0.6, 3)).abs().max() < 1e-5
        # W+ and S draw the same images as NVIDIA's synthesis of the same codes
        ws = ref.mapping(z, None)
        g.set_view("w+")
        assert (g(ws) - ref.synthesis(ws)).abs().max() < 1e-5
        g.set_view("s")
        s = torch.cat(g.styles(ws), dim=1)
        assert (g(s) - ref.synthesis(ws)).abs().max() < 1e-5
        assert [layer.kind for layer in g.style_layers()][:2] == ["input", "conv"]
        assert g.style_layers()[-1].kind == "torgb" and g.latent_dim == s.shape[1]


def test_the_input_transform_translates_and_rotates_as_nvidias(nets, files):
    """The published edit: the inverse of make_transform(translate, angle) in input.transform."""
    ref, g = nets["t"], load_nvidia_pickle(files["t"], space="w+")
    ws = ref.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(2)), None)
    with torch.no_grad():
        before = g(ws)
        g.set_input_transform(translate=(0.2, -0.1), angle=15.0)
        ref.synthesis.input.transform.copy_(torch.linalg.inv(make_transform((0.2, -0.1), 15.0)))
        try:
            moved = g(ws)
            assert (moved - ref.synthesis(ws)).abs().max() < 1e-5
        finally:
            ref.synthesis.input.transform.copy_(torch.eye(3))
        assert (moved - before).abs().max() > 0.01
        g.set_input_transform()
        assert torch.allclose(g(ws), before, atol=1e-6)


def test_a_conditional_stylegan3(nets, files):
    ref, g = nets["cond"], load_nvidia_pickle(files["cond"], space="z")
    assert g.num_classes == 3
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        assert (g(z, y) - ref(z, F.one_hot(y, 3).float())).abs().max() < 1e-5


def test_the_published_geometry():
    """The 1024 px design of the paper: grids of the sampling rate plus a 10-pixel margin each
    side, 36 to 1044, the last two layers at the image size, 15 layers and 16 codes."""
    g = layer_geometry(1024)
    sizes = [g["input"]["size"]] + [layer["out_size"] for layer in g["layers"]]
    assert sizes[0] == 36 and max(sizes) == 1044 and sizes[-2:] == [1024, 1024] and len(sizes) == 16
    assert all(s - 20 in (16, 32, 64, 128, 256, 512, 1024) for s in sizes[:-2])
    assert g["layers"][-1]["out_channels"] == 3 and g["layers"][-1]["kernel"] == 1


@pytest.mark.parametrize("change, message", [
    (lambda g: setattr(g.synthesis.L0_22_32, "padding", [1, 2]), "padding is .*expected 4 numbers"),
    (lambda g: setattr(g.synthesis.L0_22_32, "in_size", np.asarray([22, 23])), "only square sizes"),
    (lambda g: delattr(g.synthesis.input, "bandwidth"), "synthesis.input has no bandwidth"),
])
def test_configurations_the_network_does_not_cover_are_refused(tmp_path, change, message):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = Generator(16, **SMALL)
    change(g)
    path = tmp_path / "odd.pkl"
    write_snapshot(path, snapshot(g))
    with pytest.raises(NvidiaPickleError, match=message + ".*Supported: NVIDIA StyleGAN3"):
        load_nvidia_pickle(path)


def test_a_fresh_stylegan3_is_a_generator():
    """StyleGAN3Generator built from the published hyperparameters: every space, and S is
    the styles of W+."""
    torch.manual_seed(0)
    g = StyleGAN3Generator(16, w_dim=16, space="w+", geometry=SMALL)
    g.estimate_w_avg()
    g.freeze()
    ws = g.sample(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = g(ws)
        assert image.shape == (2, 3, 16, 16) and torch.isfinite(image).all()
        g.set_view("s")
        assert torch.allclose(g(torch.cat(g.styles(ws), 1)), image, atol=1e-6)
    assert math.isclose(sum(layer.channels for layer in g.style_layers()), g.latent_dim)


FAST_ON_SG3 = {("sefa", "w"), ("ganspace", "w"), ("lowrankgan", "w"), ("sefa", "s")}  # (the rest: 10-40 s)


@pytest.mark.parametrize("method, space", [
    pytest.param(m, sp, marks=() if (m, sp) in FAST_ON_SG3 else pytest.mark.slow)
    for m, sp in [(m, "w") for m in ("voynov", "warped", "ganalyze", "steerability", "eye", "sefa", "ganspace",
                                     "interfacegan", "lowrankgan", "plumerault")]
    + [("sefa", "s"), ("stylespace", "s"), ("voynov", "s")]])
def test_every_method_runs_on_a_stylegan3_file(tmp_path, files, method, space):
    """`python train.py method=<m> generator=stylegan3 generator.path=<pkl>`, end to end."""
    from conftest import compose_cfg
    from test_s_space import FIT_FREE, LEARNED, OVERRIDES, TINY

    from directions import Directions
    from train import train

    base = TINY if method in LEARNED else FIT_FREE
    overrides = [o for o in base + OVERRIDES[method] if not o.startswith("generator=")]
    cfg = compose_cfg([f"method={method}", "run_name=sg3", *overrides, "generator=stylegan3",
                       f"generator.path={files['t']}", f"generator.space={space}",
                       "+generator.regressor={path: shapes_regressor32.pt, factors: world}"], tmp_path)
    train(cfg)
    made = Directions.load(tmp_path / "sg3" / "directions.pt")
    assert made.meta["generator"]["adapter"] == "stylegan3-nvidia" and made.meta["space"] == space
    assert (tmp_path / "sg3" / "traversal.png").is_file()


def test_a_file_that_mixes_stylegan2_and_stylegan3_is_refused(tmp_path):
    """A StyleGAN3 generator that also holds StyleGAN2 blocks: one line naming what is left."""
    from test_formats_nvidia import SynthesisBlock

    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = Generator(16, **SMALL)
        g.synthesis.b4 = SynthesisBlock(0, 8, 16, 4, 256)
    path = tmp_path / "mixed.pkl"
    write_snapshot(path, snapshot(g))
    with pytest.raises(NvidiaPickleError, match="tensors this loader does not know: .*synthesis.b4"):
        load_nvidia_pickle(path)


# ---- the input transform as an edit: the explorer and edit.py -------------------------------
@pytest.fixture(scope="module")
def sg3_directions(tmp_path_factory):
    """A directions file for a random StyleGAN3 (rebuilt from the file's record)."""
    from directions import Directions, LinearDirections
    from generators import random_generator

    g = random_generator("stylegan3", resolution=16, w_dim=16, space="w", geometry=SMALL)
    path = tmp_path_factory.mktemp("sg3run") / "directions.pt"
    Directions(LinearDirections(16, 2, init_seed=0), {"method": "voynov", "alpha_range": 3.0},
               generator=g).save(path)
    return path


def test_the_explorer_translates_and_rotates_a_stylegan3(sg3_directions):
    from starlette.testclient import TestClient
    from test_explore import draw, png_bytes

    from explorer.app import ExplorerApp
    from explorer.render import Explorer

    explorer = Explorer.open([sg3_directions], generator_cfg=None)
    client = TestClient(ExplorerApp(explorer).asgi())
    assert client.get("/api/info").json()["generator"]["input_transform"] is True
    g, d = explorer.generator, explorer.files[0].directions
    body = {"seed": 1, "edits": [[0, 2.0]], "transform": [0.25, -0.1, 30]}
    moved = client.post("/api/render", json=body)
    assert moved.status_code == 200
    with torch.no_grad(), g.input_transform((0.25, -0.1), 30):
        assert moved.content == png_bytes(g(d.apply(draw(g, 1), [(0, 2.0)])), nrow=1)
    plain = client.post("/api/render", json={"seed": 1, "edits": [[0, 2.0]]}).content
    assert plain != moved.content and torch.equal(g.input.transform, torch.eye(3))  # for one render
    for bad, message in (([0.1, 0.2], "transform must be \\[x, y, angle\\]"),
                         ([2.0, 0, 0], "x translation"), ([0, 0, 400], "angle")):
        refused = client.post("/api/render", json={"seed": 1, "transform": bad})
        assert refused.status_code == 400 and __import__("re").search(message, refused.json()["error"])


def test_edit_py_applies_the_input_transform(sg3_directions, tmp_path):
    from conftest import CONFIGS
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from edit import edit

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        plain = compose("edit", overrides=[f"directions={sg3_directions}", "seeds=[0]",
                                           f"out={tmp_path / 'plain.png'}"])
        moved = compose("edit", overrides=[f"directions={sg3_directions}", "seeds=[0]",
                                           f"out={tmp_path / 'moved.png'}",
                                           "input_transform={translate: [0.3, 0], angle: 20}"])
        bad = compose("edit", overrides=[f"directions={sg3_directions}", "seeds=[0]",
                                         "input_transform={translate: [0.3], angle: 20}"])
    assert edit(plain).read_bytes() != edit(moved).read_bytes()
    with pytest.raises(ValueError, match="translate must be \\[x, y\\]"):
        edit(bad)
