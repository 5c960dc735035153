"""NVIDIA network pickles (generators/formats/nvidia.py), without NVIDIA's code.

The pickles are written here in the published structure: every network is a call
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` (meta: type, version, module_src,
class_name, state = the module's ``__dict__``), tensors go through torch's own reducers
(``_rebuild_parameter``, ``_rebuild_tensor_v2``, ``torch.storage._load_from_bytes``), numpy
scalars through numpy's, and the snapshot is a dict G, D, G_ema, augment_pipe,
training_set_kwargs (an ``EasyDict``). Stand-in ``torch_utils`` / ``dnnlib`` modules exist in
``sys.modules`` only while writing.

The networks below use NVIDIA's names and parametrisation (raw weights, gains applied at run
time) and compute their outputs with the generic reference path of the published math
(zero-insertion, padding and FIR filtering, then convolution with flipped weights for the
up-sampling layers; fused per-sample modulated convolution), independent of
generators/stylegan2.py's transposed-convolution path.
"""
from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generators.base import file_sha256
from generators.formats.nvidia import (
    ForbiddenGlobalError,
    NvidiaPickleError,
    PersistentObject,
    load_nvidia_pickle,
    read_nvidia_pickle,
)
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

SQRT2 = math.sqrt(2)
MODULE_SRC = "# the defining module's source: never executed by the loader\n"


# ---- writing in the published structure ---------------------------------------------------
def _reconstruct_persistent_obj(meta):  # what NVIDIA's loader does: exec(meta["module_src"])
    raise AssertionError("the writer's stand-in is never called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class EasyDict(dict):
    pass


EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def nvidia_modules():
    """Fake ``torch_utils.persistence`` and ``dnnlib.util`` so pickle can name their globals."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    fake = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Persistent(nn.Module):
    """Pickled as NVIDIA's persistent classes are: the class is replaced by a reconstruct call
    whose meta carries the module source, the class name and the whole ``__dict__``."""

    module_src = MODULE_SRC

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src,
                    class_name=type(self).__name__, state=self.__dict__)
        return _reconstruct_persistent_obj, (meta,), None


def write_snapshot(path, networks: dict, protocol: int = 4) -> None:
    with nvidia_modules():
        with open(path, "wb") as handle:
            pickle.dump(networks, handle, protocol=protocol)


# ---- NVIDIA's parametrisation and the reference math ---------------------------------------
def setup_filter(k=(1, 3, 3, 1)) -> torch.Tensor:
    k = torch.tensor(k, dtype=torch.float32)
    f = k[:, None] * k[None, :]
    return f / f.sum()


def upfirdn(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """Zero-insertion, padding, FIR filtering (a true convolution), decimation."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    if f is not None:
        k = (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
        x = F.conv2d(x, k, groups=c)
    return x[:, :, ::down, ::down]


def bias_act(x, b, act, gain=None, clamp=None):
    if b is not None:
        x = x + b.view(1, -1, *([1] * (x.ndim - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2) * (SQRT2 if gain is None else gain)
    elif gain is not None:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


class FullyConnectedLayer(Persistent):
    def __init__(self, in_f, out_f, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_f], float(bias_init)) + 0.1 * torch.randn(out_f))
        self.weight_gain = lr_multiplier / np.sqrt(in_f)  # a numpy float, as published
        self.bias_gain = lr_multiplier

    def forward(self, x):
        return bias_act(x @ (self.weight * float(self.weight_gain)).t(), self.bias * self.bias_gain,
                        self.activation)


def normalize_2nd_moment(x):
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(Persistent):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers, lr_multiplier=0.01):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, 0.995
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        feats = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], "lrelu", lr_multiplier))
        self.register_buffer("w_avg", torch.randn(w_dim) * 0.3)

    def forward(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
        x = normalize_2nd_moment(z)
        if self.c_dim:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        x = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = truncation_cutoff or self.num_ws
            x[:, :cut] = self.w_avg + truncation_psi * (x[:, :cut] - self.w_avg)
        return x


def modulated_conv(x, weight, styles, demodulate=True, up=1, f=None, padding=0):
    """Fused form: per-sample weights, grouped convolution (NVIDIA's inference path)."""
    n = x.shape[0]
    out_c, in_c, k, _ = weight.shape
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, n * in_c, *x.shape[2:])
    w = w.reshape(n * out_c, in_c, k, k)
    if up == 2:  # generic path: upsample-filter (pad 3 / 2, gain 4), then a true convolution
        x = upfirdn(x, f, up=2, pad=(3, 2), gain=4)
        x = F.conv2d(x, w.flip([2, 3]), groups=n)
    else:
        x = F.conv2d(x, w, padding=padding, groups=n)
    return x.reshape(n, out_c, *x.shape[2:])


class SynthesisLayer(Persistent):
    def __init__(self, in_c, out_c, w_dim, resolution, up=1, conv_clamp=None):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, True, "lrelu"
        self.conv_clamp, self.padding, self.act_gain = conv_clamp, 1, SQRT2
        self.register_buffer("resample_filter", setup_filter())
        self.affine = FullyConnectedLayer(w_dim, in_c, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_c, in_c, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(0.5 * torch.randn([]))
        self.bias = nn.Parameter(0.2 * torch.randn(out_c))

    def forward(self, x, w):
        x = modulated_conv(x, self.weight, self.affine(w), up=self.up, f=self.resample_filter,
                           padding=self.padding)
        x = x + self.noise_const * self.noise_strength
        return bias_act(x, self.bias, "lrelu", self.act_gain, self.conv_clamp)


class ToRGBLayer(Persistent):
    def __init__(self, in_c, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_c, bias_init=1)
        self.weight = nn.Parameter(torch.randn(3, in_c, 1, 1))
        self.bias = nn.Parameter(0.2 * torch.randn(3))
        self.weight_gain = 1 / np.sqrt(in_c)

    def forward(self, x, w):
        x = modulated_conv(x, self.weight, self.affine(w) * float(self.weight_gain), demodulate=False)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(Persistent):
    def __init__(self, in_c, out_c, w_dim, resolution, conv_clamp):
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_c, resolution, 3
        self.architecture, self.use_fp16 = "skip", False
        self.register_buffer("resample_filter", setup_filter())
        if in_c == 0:
            self.const = nn.Parameter(torch.randn(out_c, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_c, out_c, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_c, out_c, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_c, w_dim, conv_clamp=conv_clamp)
        self.num_conv, self.num_torgb = (1 if in_c == 0 else 2), 1

    def forward(self, x, img, ws):
        if self.in_channels == 0:
            x = self.conv1(self.const[None].repeat(ws.shape[0], 1, 1, 1), ws[:, 0])
        else:
            x = self.conv1(self.conv0(x, ws[:, 0]), ws[:, 1])
        if img is not None:
            img = upfirdn(img, self.resample_filter, up=2, pad=(2, 1), gain=4)
        y = self.torgb(x, ws[:, self.num_conv])
        return x, (y if img is None else img + y)


class SynthesisNetwork(Persistent):
    def __init__(self, w_dim, img_resolution, channels, conv_clamp):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, 3
        self.block_resolutions = [4 * 2 ** i for i in range(len(channels))]
        self.num_ws = 0
        for i, res in enumerate(self.block_resolutions):
            block = SynthesisBlock(channels[i - 1] if i else 0, channels[i], w_dim, res, conv_clamp)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1

    def forward(self, ws):
        x = img = None
        idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, idx: idx + block.num_conv + block.num_torgb])
            idx += block.num_conv
        return img


class Generator(Persistent):
    def __init__(self, z_dim=16, c_dim=0, w_dim=16, img_resolution=16, channels=(32, 16, 8),
                 mapping_layers=2, lr_multiplier=0.01, conv_clamp=256):
        super().__init__()
        self._init_args = ()
        self._init_kwargs = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=3,
            mapping_kwargs=EasyDict(num_layers=mapping_layers),
            synthesis_kwargs=EasyDict(channel_base=channels[0] * 4, channel_max=channels[0],
                                      num_fp16_res=0, conv_clamp=conv_clamp))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, 3
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, list(channels), conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers, lr_multiplier)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff))


class Conv2dLayer(Persistent):
    def __init__(self, in_c, out_c, k, bias=True, activation="linear", down=1, conv_clamp=None):
        super().__init__()
        self.activation, self.down, self.conv_clamp, self.padding = activation, down, conv_clamp, k // 2
        self.register_buffer("resample_filter", setup_filter())
        self.weight_gain = 1 / np.sqrt(in_c * k * k)
        self.act_gain = SQRT2 if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn(out_c, in_c, k, k))
        self.bias = nn.Parameter(0.2 * torch.randn(out_c)) if bias else None

    def forward(self, x, gain=1.0):
        w = self.weight * float(self.weight_gain)
        if self.down == 2:  # generic path: pad, convolve, then filter and decimate
            pad = self.padding + 1
            x = upfirdn(x, None, pad=(pad, pad))
            x = upfirdn(F.conv2d(x, w), self.resample_filter, down=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, self.act_gain * gain, clamp)


class DiscriminatorBlock(Persistent):
    def __init__(self, in_c, tmp_c, out_c, resolution, conv_clamp):
        super().__init__()
        self.in_channels, self.resolution, self.architecture = in_c, resolution, "resnet"
        self.register_buffer("resample_filter", setup_filter())
        if in_c == 0:
            self.fromrgb = Conv2dLayer(3, tmp_c, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_c, tmp_c, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_c, out_c, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_c, out_c, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=np.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=np.sqrt(0.5))


class MinibatchStdLayer(Persistent):
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        y = x.reshape(g, -1, 1, c, h, w)
        y = ((y - y.mean(0)).square().mean(0) + 1e-8).sqrt().mean([2, 3, 4])
        return torch.cat([x, y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)], dim=1)


class DiscriminatorEpilogue(Persistent):
    def __init__(self, in_c, conv_clamp, group_size=4):
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution, self.architecture = in_c, 0, 4, "resnet"
        self.mbstd = MinibatchStdLayer(group_size)
        self.conv = Conv2dLayer(in_c + 1, in_c, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_c * 16, in_c, activation="lrelu")
        self.out = FullyConnectedLayer(in_c, 1)

    def forward(self, x):
        return self.out(self.fc(self.conv(self.mbstd(x)).flatten(1)))


class Discriminator(Persistent):
    def __init__(self, img_resolution=16, channels=(32, 16, 8), conv_clamp=256):
        super().__init__()
        self._init_args = ()
        self._init_kwargs = dict(c_dim=0, img_resolution=img_resolution, img_channels=3,
                                 architecture="resnet", conv_clamp=conv_clamp,
                                 epilogue_kwargs=EasyDict(mbstd_group_size=4))
        self.c_dim, self.img_resolution = 0, img_resolution
        self.block_resolutions = [4 * 2 ** i for i in range(len(channels) - 1, 0, -1)]
        ch = {4 * 2 ** i: c for i, c in enumerate(channels)}
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(0 if res == img_resolution else ch[res],
                                                        ch[res], ch[res // 2], res, conv_clamp))
        self.b4 = DiscriminatorEpilogue(ch[4], conv_clamp)

    def forward(self, img, c=None):
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)


def snapshot(g_ema, d=None, **extra) -> dict:
    """The top-level dict of a training snapshot."""
    nets = EasyDict(G=g_ema, D=d if d is not None else Discriminator(g_ema.img_resolution),
                    G_ema=g_ema, augment_pipe=None,
                    training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                 path="/data/x.zip", resolution=g_ema.img_resolution,
                                                 use_labels=bool(g_ema.c_dim), max_size=None,
                                                 xflip=False))
    nets.update(extra)
    return nets


@pytest.fixture(scope="module")
def nets():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Generator().eval(), Discriminator().eval(), Generator(c_dim=3, lr_multiplier=0.02).eval()


@pytest.fixture(scope="module")
def pkl(nets, tmp_path_factory):
    path = tmp_path_factory.mktemp("nvidia") / "network-snapshot-000100.pkl"
    write_snapshot(path, snapshot(nets[0], nets[1]))
    return path


# ---- tests -------------------------------------------------------------------------------
def test_read_recovers_the_state_tree(pkl, nets):
    networks = read_nvidia_pickle(pkl)
    assert sorted(networks) == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    g = networks["G_ema"]
    assert isinstance(g, PersistentObject) and g.class_name == "Generator"
    assert networks["G"] is g  # the same object twice: pickle's memo, as in snapshots
    assert g.module_src == MODULE_SRC and g.version == 6
    assert g.init_kwargs["synthesis_kwargs"]["conv_clamp"] == 256
    assert networks["training_set_kwargs"]["resolution"] == 16
    tensors = g.named_tensors()
    expected = nets[0].state_dict()
    assert sorted(tensors) == sorted(expected)
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert isinstance(g.module("mapping.fc0").get("weight_gain"), np.floating)


def test_generator_matches_reference_math(pkl, nets):
    ref = nets[0]
    g = load_nvidia_pickle(pkl, space="z")
    assert isinstance(g, StyleGAN2Generator) and g.adapter == "stylegan2-nvidia"
    assert g.sha256 == file_sha256(pkl) and g.source == {"format": "nvidia-pickle", "path": str(pkl)}
    assert g.name == pkl.stem and g.num_classes is None and g.discriminator is None
    assert (g.resolution, g.z_dim, g.w_dim, g.n_mlp, g.channels) == (16, 16, 16, 2, [32, 16, 8])
    assert g.num_layers == ref.num_ws == 6 and g.conv_clamp == 256 and g.lr_mlp == pytest.approx(0.01)
    assert torch.equal(g.w_avg, ref.mapping.w_avg)  # stored, not estimated
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(z)
        assert (g(z) - expected).abs().max() < 1e-4
        ws = ref.mapping(z, None)
        g.set_view("w")
        assert (g(ws[:, 0]) - expected).abs().max() < 1e-4
        assert torch.allclose(g.mapping(z), ws[:, 0], atol=1e-5)
        g.set_view("z", truncation_psi=0.6, truncation_cutoff=3)
        assert (g(z) - ref(z, None, 0.6, 3)).abs().max() < 1e-4
    assert expected.abs().max() > 0.1  # not a trivially small image


def test_truncation_view_and_wplus(pkl, nets):
    g = load_nvidia_pickle(pkl, space="w+", truncation_psi=0.5, truncation_cutoff=2, name="ffhq")
    assert g.name == "ffhq" and g.identity()["truncation"] == {"psi": 0.5, "cutoff": 2}
    ws = g.sample(3, generator=torch.Generator().manual_seed(2))
    assert ws.shape == (3, 6, 16)
    with torch.no_grad():
        assert (g(ws) - nets[0].synthesis(ws)).abs().max() < 1e-4


def test_s_space_of_an_nvidia_pickle_is_its_affines_outputs(pkl, nets):
    """S space of an NVIDIA file: the styles are each layer's affine(w), as StyleSpace takes
    them (NVIDIA's ToRGB multiplies them by its weight gain after; the project folds that gain
    into the weight), in synthesis order; rendering them draws NVIDIA's image of the same ws."""
    ref = nets[0]
    g = load_nvidia_pickle(pkl, space="s", truncation_psi=0.7)
    ws = load_nvidia_pickle(pkl, space="w+", truncation_psi=0.7).sample(3, torch.Generator().manual_seed(4))
    s = g.sample(3, torch.Generator().manual_seed(4))
    syn, expected, i = ref.synthesis, [], 0
    with torch.no_grad():
        for res in syn.block_resolutions:
            block = getattr(syn, f"b{res}")
            if block.in_channels:
                expected.append(block.conv0.affine(ws[:, i]))
                i += 1
            expected += [block.conv1.affine(ws[:, i]), block.torgb.affine(ws[:, i + 1])]
            i += 1
        assert torch.allclose(s, torch.cat(expected, dim=1), atol=1e-5)
        assert (g(s) - syn(ws)).abs().max() < 1e-4
    assert [layer.kind for layer in g.style_layers()] == ["conv", "torgb"] + ["conv", "conv", "torgb"] * 2


def test_conditional_pickle(tmp_path, nets):
    ref = nets[2]
    path = tmp_path / "cond.pkl"
    write_snapshot(path, snapshot(ref))
    g = load_nvidia_pickle(path, space="z")
    assert g.num_classes == 3 and g.c_dim == 3 and g.lr_mlp == pytest.approx(0.02)
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        expected = ref(z, F.one_hot(y, 3).float())
        assert (g(z, y) - expected).abs().max() < 1e-4
        g.set_view("w")
        w = g.sample(6, generator=torch.Generator().manual_seed(3), y=y)
        assert (g(w) - expected).abs().max() < 1e-4
    with pytest.raises(ValueError, match="conditional"):
        g.set_view("z")(z)


def test_discriminator_maps_onto_the_project_one(pkl, nets):
    g = load_nvidia_pickle(pkl, discriminator=True)
    assert isinstance(g.discriminator, StyleGAN2Discriminator)
    assert g.discriminator.stddev_group == 4 and g.discriminator.channels == [32, 16, 8]
    assert "discriminator" not in dict(g.named_children())
    imgs = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = nets[1](imgs)[:, 0]
        assert (g.discriminator(imgs) - expected).abs().max() < 1e-4


def test_module_src_is_never_executed(tmp_path, nets):
    marker, marker2 = tmp_path / "ran.txt", tmp_path / "system.txt"
    evil_src = (f"import os\nopen({str(marker)!r}, 'w').write('module_src ran')\n"
                f"os.system('touch {marker2}')\n")
    g = Generator()
    for m in g.modules():
        m.module_src = evil_src
    path = tmp_path / "evil_src.pkl"
    write_snapshot(path, snapshot(g))
    gen = load_nvidia_pickle(path)
    assert gen.resolution == 16
    assert read_nvidia_pickle(path)["G_ema"].module_src == evil_src
    assert not marker.exists() and not marker2.exists()
    with nvidia_modules():  # NVIDIA's loader would run it: the stand-in here just refuses
        with pytest.raises(AssertionError, match="never called"):
            pickle.loads(path.read_bytes())


class _Call:
    """Pickles as ``func(*args)``: how a malicious file runs code at load time."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_forbidden_global_is_refused_before_it_runs(tmp_path, protocol):
    import os

    marker = tmp_path / "pwned"
    path = tmp_path / "os_system.pkl"
    path.write_bytes(pickle.dumps(_Call(os.system, f"touch {marker}"), protocol=protocol))
    with pytest.raises(ForbiddenGlobalError, match=r"refusing the pickle global (os|posix)\.system"):
        read_nvidia_pickle(path)
    assert not marker.exists()


def test_forbidden_global_inside_a_network(tmp_path):
    marker = tmp_path / "pwned"
    g = Generator()
    g.synthesis.b8.conv0.extra = _Call(eval, f"open({str(marker)!r}, 'w')")
    path = tmp_path / "eval.pkl"
    write_snapshot(path, snapshot(g))
    with pytest.raises(ForbiddenGlobalError, match=r"builtins\.eval") as info:
        load_nvidia_pickle(path)
    assert "nothing in it was executed" in str(info.value)
    assert not marker.exists()


def test_protocol_3_pickles_with_builtin_sets(tmp_path, nets):
    path = tmp_path / "proto3.pkl"  # Python 3.7's default protocol: sets as builtins.set(list)
    write_snapshot(path, snapshot(nets[0], nets[1]), protocol=3)
    assert b"builtins\nset" in path.read_bytes()
    g = load_nvidia_pickle(path, space="z")
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (g(z) - nets[0](z)).abs().max() < 1e-4


def test_missing_g_ema_lists_what_there_is(tmp_path, nets):
    path = tmp_path / "no_ema.pkl"
    write_snapshot(path, EasyDict(G=nets[0], D=nets[1], augment_pipe=None))
    with pytest.raises(NvidiaPickleError, match=r"no G_ema.*'G': 'Generator'.*'D': 'Discriminator'"):
        load_nvidia_pickle(path)


class SynthesisInput(Persistent):
    def __init__(self):
        super().__init__()
        self.register_buffer("freqs", torch.randn(8, 2))
        self.register_buffer("phases", torch.randn(8))
        self.register_buffer("transform", torch.eye(3))


def test_a_malformed_stylegan3_pickle_is_refused_clearly(tmp_path):
    """A StyleGAN3 file with one synthesis layer and no ToRGB: refused with what is supported
    (well-formed StyleGAN3 files load: tests/test_formats_stylegan3.py)."""
    g = Generator()
    synthesis = Persistent()
    synthesis.input = SynthesisInput()
    setattr(synthesis, "L0_36_512", SynthesisLayer(8, 8, 16, 4))
    g.synthesis = synthesis
    path = tmp_path / "stylegan3-t.pkl"
    write_snapshot(path, snapshot(g))
    with pytest.raises(NvidiaPickleError, match="synthesis layers .* are not L0_.*Supported: NVIDIA StyleGAN3"):
        load_nvidia_pickle(path)


@pytest.mark.parametrize("change, message", [
    (lambda g: [setattr(b, "architecture", "resnet") for b in g.synthesis.children()], "architecture 'resnet'"),
    (lambda g: g._init_kwargs.update(img_channels=1), "only RGB"),
])
def test_unsupported_generators_are_refused(tmp_path, change, message):
    g = Generator()
    change(g)
    path = tmp_path / "odd.pkl"
    write_snapshot(path, snapshot(g))
    with pytest.raises(NvidiaPickleError, match=message):
        load_nvidia_pickle(path)


def test_unsupported_discriminator_says_so(tmp_path, nets):
    d = Discriminator()
    d.b16.architecture = "skip"
    path = tmp_path / "skip_d.pkl"
    write_snapshot(path, snapshot(nets[0], d))
    with pytest.raises(NotImplementedError, match="architecture 'skip'.*discriminator=False"):
        load_nvidia_pickle(path, discriminator=True)
    assert load_nvidia_pickle(path).discriminator is None  # the generator alone still loads


def test_not_a_pickle(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"g_ema": {}}, path)
    with pytest.raises(NvidiaPickleError, match="zip archive"):
        read_nvidia_pickle(path)
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(NvidiaPickleError, match="not a readable"):
        read_nvidia_pickle(tmp_path / "junk.pkl")
    with pytest.raises(FileNotFoundError):
        read_nvidia_pickle(tmp_path / "missing.pkl")
    path.write_bytes(pickle.dumps([1, OrderedDict()]))
    with pytest.raises(NvidiaPickleError, match="holds a list"):
        read_nvidia_pickle(path)
