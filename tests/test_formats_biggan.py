"""pytorch-pretrained-biggan directories (generators/formats/biggan.py, generators/biggan.py),
without the package.

A REFERENCE WRITER comes first: a minimal module tree whose ``state_dict`` has exactly the
package's key names, nesting, shapes and buffers (``embeddings``; ``generator.gen_z``;
``generator.layers.K`` holding the blocks and, at ``attention_layer_position``, the
self-attention module; ``generator.bn``; ``generator.conv_to_rgb``; spectral norm as torch's
``spectral_norm`` stores it: ``weight_orig``, ``weight_u``, ``weight_v``; per-truncation
``running_means`` / ``running_vars``), and whose forward follows the package's computations
(torch's own spectral norm in eval mode, the package's blend of the statistics). It writes
``config.json`` + ``pytorch_model.bin`` as the package's converter does (``torch.save`` of the
state dict); the project's loader is then checked against it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generators import load_generator
from generators.base import file_sha256, identity_mismatch
from generators.biggan import TRUNCNORM_BOUND, BigGANGenerator, stored_statistics, truncated_normal
from generators.formats import UnsafeCheckpointError, detect_format, load_checkpoint
from generators.formats.biggan import load_biggan

# A tiny BigGAN-deep at 32 px: the published 128 px layer pattern, shortened and narrowed.
TINY = {"output_dim": 32, "z_dim": 16, "class_embed_dim": 16, "channel_width": 8, "num_classes": 10,
        "layers": [[True, 16, 16], [True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]],
        "attention_layer_position": 3, "eps": 1e-4, "n_stats": 51}


# ==== reference writer: the package's layout and computations ===================================
def _sn(layer: nn.Module, eps: float) -> nn.Module:
    return nn.utils.spectral_norm(layer, eps=eps)  # weight_orig / weight_u / weight_v, as published


class RefBN(nn.Module):
    """Batch norm over stored per-truncation statistics: conditional (``scale`` / ``offset``)
    or plain (``weight`` / ``bias``)."""

    def __init__(self, c: int, n_stats: int, eps: float, cond: int | None = None) -> None:
        super().__init__()
        self.eps, self.step = eps, 1.0 / (n_stats - 1)
        self.register_buffer("running_means", torch.zeros(n_stats, c))
        self.register_buffer("running_vars", torch.ones(n_stats, c))
        self.cond = cond is not None
        if self.cond:
            self.scale = _sn(nn.Linear(cond, c, bias=False), eps)
            self.offset = _sn(nn.Linear(cond, c, bias=False), eps)
        else:
            self.weight, self.bias = nn.Parameter(torch.empty(c)), nn.Parameter(torch.empty(c))

    def forward(self, x, truncation, c=None):
        coef, idx = math.modf(truncation / self.step)
        idx = int(idx)
        mean, var = self.running_means[idx], self.running_vars[idx]
        if coef != 0.0:  # the package's weights: coef on row idx, 1 - coef on row idx + 1
            mean = self.running_means[idx] * coef + self.running_means[idx + 1] * (1 - coef)
            var = self.running_vars[idx] * coef + self.running_vars[idx + 1] * (1 - coef)
        if not self.cond:
            return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)
        mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        gain, shift = 1 + self.scale(c)[..., None, None], self.offset(c)[..., None, None]
        return (x - mean) / torch.sqrt(var + self.eps) * gain + shift


class RefBlock(nn.Module):
    def __init__(self, a: int, b: int, cond: int, up: bool, n_stats: int, eps: float) -> None:
        super().__init__()
        m, self.up = a // 4, up
        self.bn_0, self.conv_0 = RefBN(a, n_stats, eps, cond), _sn(nn.Conv2d(a, m, 1), eps)
        self.bn_1, self.conv_1 = RefBN(m, n_stats, eps, cond), _sn(nn.Conv2d(m, m, 3, padding=1), eps)
        self.bn_2, self.conv_2 = RefBN(m, n_stats, eps, cond), _sn(nn.Conv2d(m, m, 3, padding=1), eps)
        self.bn_3, self.conv_3 = RefBN(m, n_stats, eps, cond), _sn(nn.Conv2d(m, b, 1), eps)

    def forward(self, x, c, t):
        h = self.conv_0(F.relu(self.bn_0(x, t, c)))
        h = F.relu(self.bn_1(h, t, c))
        if self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, t, c)))
        h = self.conv_3(F.relu(self.bn_3(h, t, c)))
        if h.shape[1] != x.shape[1]:
            x = x[:, : x.shape[1] // 2]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return h + x


class RefAttention(nn.Module):
    def __init__(self, c: int, eps: float) -> None:
        super().__init__()
        self.snconv1x1_theta = _sn(nn.Conv2d(c, c // 8, 1, bias=False), eps)
        self.snconv1x1_phi = _sn(nn.Conv2d(c, c // 8, 1, bias=False), eps)
        self.snconv1x1_g = _sn(nn.Conv2d(c, c // 2, 1, bias=False), eps)
        self.snconv1x1_o_conv = _sn(nn.Conv2d(c // 2, c, 1, bias=False), eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n, c, h, w = x.shape
        theta = self.snconv1x1_theta(x).reshape(n, c // 8, h * w)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2, 2).reshape(n, c // 8, h * w // 4)
        g = F.max_pool2d(self.snconv1x1_g(x), 2, 2).reshape(n, c // 2, h * w // 4)
        beta = F.softmax(torch.bmm(theta.permute(0, 2, 1), phi), dim=-1)
        o = torch.bmm(g, beta.permute(0, 2, 1)).reshape(n, c // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(o)


class RefGenerator(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        ch, cond, eps, n = cfg["channel_width"], 2 * cfg["z_dim"], cfg["eps"], cfg["n_stats"]
        self.ch = ch
        self.gen_z = _sn(nn.Linear(cond, 4 * 4 * 16 * ch), eps)
        mods = []
        for i, (up, a, b) in enumerate(cfg["layers"]):
            if i == cfg["attention_layer_position"]:
                mods.append(RefAttention(a * ch, eps))
            mods.append(RefBlock(a * ch, b * ch, cond, up, n, eps))
        self.layers = nn.ModuleList(mods)
        self.bn = RefBN(ch, n, eps)
        self.conv_to_rgb = _sn(nn.Conv2d(ch, ch, 3, padding=1), eps)

    def forward(self, c, t):
        x = self.gen_z(c).view(-1, 4, 4, 16 * self.ch).permute(0, 3, 1, 2).contiguous()
        for mod in self.layers:
            x = mod(x, c, t) if isinstance(mod, RefBlock) else mod(x)
        x = self.conv_to_rgb(F.relu(self.bn(x, t)))
        return torch.tanh(x[:, :3])


class RefBigGAN(nn.Module):
    """``forward(z, class_vector, truncation)``: class_vector one-hot (floats), as published."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.embeddings = nn.Linear(cfg["num_classes"], cfg["z_dim"], bias=False)
        self.generator = RefGenerator(cfg)

    def forward(self, z, class_vector, truncation):
        assert 0 < truncation <= 1
        return self.generator(torch.cat((z, self.embeddings(class_vector)), dim=1), truncation)


def reference_biggan(cfg: dict = TINY, seed: int = 0) -> RefBigGAN:
    """A reference network with random values everywhere (statistics rows differ, attention
    gain and final batch norm set), its spectral-norm vectors settled by power iteration."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = RefBigGAN(cfg)
        with torch.no_grad():
            for name, p in ref.named_parameters():
                p.copy_(torch.randn_like(p) * (0.3 if name.endswith(("bias", "gamma")) else 1.0))
            ref.generator.bn.weight.add_(1.0)
            for m in ref.modules():
                if isinstance(m, RefAttention):  # 0 as the package starts it: the attention would not count
                    m.gamma.fill_(0.7)
            for name, b in ref.named_buffers():
                if name.endswith("running_means"):
                    b.copy_(0.3 * torch.randn_like(b))
                elif name.endswith("running_vars"):
                    b.copy_(0.5 + torch.rand_like(b))
            ref.train()  # two power iterations: stored u and v as a trained network holds them
            for _ in range(2):
                z = torch.randn(2, cfg["z_dim"])
                ref(z, F.one_hot(torch.tensor([0, 1]), cfg["num_classes"]).float(), 1.0)
    return ref.eval()


def write_biggan(directory: Path, cfg: dict = TINY, seed: int = 0, legacy: bool = False,
                 state: dict | None = None) -> RefBigGAN:
    """``config.json`` + ``pytorch_model.bin`` of a reference network in ``directory``."""
    ref = reference_biggan(cfg, seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    torch.save(ref.state_dict() if state is None else state, directory / "pytorch_model.bin",
               _use_new_zipfile_serialization=not legacy)
    return ref


# ==== the tests ===================================================================================
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    directory = tmp_path_factory.mktemp("biggan") / "biggan-tiny"
    return directory, write_biggan(directory)


def _inputs(n: int = 4, t: float = 0.4):
    rng = torch.Generator().manual_seed(5)
    z = t * truncated_normal((n, TINY["z_dim"]), rng)
    y = torch.randint(TINY["num_classes"], (n,), generator=rng)
    return z, y


def test_the_writer_has_the_published_layout(written):
    directory, ref = written
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    assert state["embeddings.weight"].shape == (16, 10)
    for stem, shape in [("generator.gen_z", (2048, 32)), ("generator.layers.3.snconv1x1_theta", (4, 32, 1, 1)),
                        ("generator.layers.4.conv_1", (8, 8, 3, 3)), ("generator.conv_to_rgb", (8, 8, 3, 3))]:
        assert state[f"{stem}.weight_orig"].shape == shape
        assert state[f"{stem}.weight_u"].shape == shape[:1]
        assert state[f"{stem}.weight_v"].shape == (math.prod(shape[1:]),)
    assert state["generator.layers.0.bn_0.running_means"].shape == (51, 128)
    assert state["generator.layers.0.bn_0.scale.weight_orig"].shape == (128, 32)
    assert {"generator.bn.weight", "generator.bn.bias", "generator.layers.3.gamma"} <= set(state)
    assert not any(k.endswith(".weight") and k.replace(".weight", ".weight_orig") in state for k in state)


@pytest.mark.parametrize("truncation", [0.4, 0.537])  # on a stored step; between two (coef 0.85)
def test_images_match_the_package(written, truncation):
    directory, ref = written
    g = load_generator(directory, truncation=truncation)
    z, y = _inputs(4, truncation)
    with torch.no_grad():
        expected = ref(z, F.one_hot(y, 10).float(), truncation)
        images = g(z, y)
    assert images.shape == (4, 3, 32, 32)
    assert (images - expected).abs().max() < 1e-5
    assert (expected.abs() < 0.95).float().mean() > 0.5  # a real comparison, not saturated tanh
    # the truncation's statistics matter: another truncation draws other images from this z
    with torch.no_grad():
        assert (g.set_truncation(0.8)(z, y) - expected).abs().max() > 1e-3


def test_statistics_blend_as_the_package_does():
    means, variances = torch.randn(51, 3), torch.rand(51, 3)
    m, v = stored_statistics(means, variances, 0.537)  # modf(26.85): row 26 by 0.85, row 27 by 0.15
    assert torch.allclose(m, 0.85 * means[26] + 0.15 * means[27], atol=1e-6)
    assert torch.allclose(v, 0.85 * variances[26] + 0.15 * variances[27], atol=1e-6)
    assert torch.equal(stored_statistics(means, variances, 0.4)[0], means[20])
    assert torch.equal(stored_statistics(means, variances, 1.0)[0], means[50])


def test_spectral_norm_is_folded_with_the_stored_vectors(written):
    directory, ref = written
    g = load_checkpoint(directory)
    assert detect_format(directory) == "biggan" and g.adapter == "biggan"
    # torch's spectral norm in eval mode: weight_orig / (u . W v), what the reference applied
    assert torch.allclose(g.generator.gen_z.weight, ref.generator.gen_z.weight, atol=1e-7)
    assert torch.allclose(g.projection_weight(), ref.generator.gen_z.weight[:, :16], atol=1e-7)
    assert g.projection_weight().shape == (2048, 16)


def test_legacy_serialisation_loads_the_same(tmp_path, written):
    """The published files date from torch 1.x (the pre-zip format may be among them)."""
    directory, ref = written
    write_biggan(tmp_path / "legacy", legacy=True)
    z, y = _inputs()
    with torch.no_grad():
        assert torch.equal(load_generator(tmp_path / "legacy", truncation=0.4)(z, y),
                           load_generator(directory, truncation=0.4)(z, y))


def test_sampling_is_truncated_and_seeded(written):
    x = truncated_normal((200_000,), torch.Generator().manual_seed(0))
    assert x.abs().max() <= TRUNCNORM_BOUND
    # truncnorm(-2, 2): mean 0, standard deviation 0.8796 (a plain normal would give 1)
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 0.8796) < 0.005
    assert torch.equal(x, truncated_normal((200_000,), torch.Generator().manual_seed(0)))
    assert not torch.equal(x, truncated_normal((200_000,), torch.Generator().manual_seed(1)))
    g = load_generator(written[0], truncation=0.3)
    z, y = g.draw(64, torch.Generator().manual_seed(2))
    assert z.shape == (64, 16) and z.abs().max() <= 0.3 * TRUNCNORM_BOUND + 1e-6
    assert torch.equal(z, g.draw(64, torch.Generator().manual_seed(2))[0])


@pytest.mark.parametrize("classes, allowed", [(None, set(range(10))), (3, {3}), ([1, 7], {1, 7})])
def test_classes_option(written, classes, allowed):
    g = load_generator(written[0], truncation=0.4, classes=classes)
    drawn = set(g.sample_classes(400, torch.Generator().manual_seed(0)).tolist())
    assert drawn == allowed
    assert g.identity()["classes"] == (None if classes is None else sorted(allowed))
    assert g.num_classes == 10
    # a directions file made for other classes is told apart (generators.base.identity_mismatch)
    other = load_generator(written[0], truncation=0.4, classes=[4])
    assert identity_mismatch(other.identity(), g.identity()) == {"classes": ([4], g.classes)}


def test_hydra_config_rebuilds_from_its_source(written):
    from conftest import compose_cfg
    from hydra.utils import instantiate

    cfg = compose_cfg(["method=voynov", "generator=biggan", f"generator.path={written[0]}",
                       "generator.classes=[2,5]"])
    g = instantiate(cfg.generator)
    ident = g.identity()
    assert ident["truncation"] == {"biggan": 0.4} and ident["classes"] == [2, 5]
    assert ident["sha256"] == file_sha256(written[0] / "pytorch_model.bin")
    assert ident["space"] == "z" and ident["num_classes"] == 10 and ident["latent_dim"] == 16
    assert instantiate(g.source).identity() == ident
    # frozen and deterministic
    assert not any(p.requires_grad for p in g.parameters())
    g.train()
    assert not g.training
    z, y = g.draw(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(g(z, y), g(z, y)) and g(z, y).abs().max() <= 1


def test_bad_options_are_clear_errors(written, tmp_path):
    directory = written[0]
    for bad in ([], [10], -1, "dog", [True]):
        with pytest.raises(ValueError, match=r"generator.classes must be null.*0..9"):
            load_generator(directory, classes=bad)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"truncation must be in \(0, 1\]"):
            load_generator(directory, truncation=bad)
    with pytest.raises(ValueError, match="only the z space"):
        load_generator(directory, space="w")
    with pytest.raises(ValueError, match="no truncation_psi"):
        load_generator(directory, truncation_psi=0.7)
    with pytest.raises(ValueError, match="options of BigGAN directories"):
        load_generator("dcgan_shapes32.pt", truncation=0.4)
    g = load_generator(directory)
    z, y = _inputs(2)
    with pytest.raises(ValueError, match="class-conditional.*pass the class indices y"):
        g(z)
    with pytest.raises(ValueError, match=r"y must hold 2 class indices in 0..9"):
        g(z, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="takes latents N x 16"):
        g(torch.zeros(2, 17), y)


def test_incomplete_directory_names_the_missing_file(tmp_path, written):
    directory = written[0]
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        load_generator(half)
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        detect_format(half)
    (half / "config.json").unlink()
    (half / "pytorch_model.bin").write_bytes((directory / "pytorch_model.bin").read_bytes())
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_generator(half)
    # the bare weights file is recognised and pointed at its directory
    with pytest.raises(ValueError, match="pytorch-pretrained-biggan pytorch_model.bin: pass the directory"):
        load_generator(half / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="BigGAN directory not found"):
        load_biggan(tmp_path / "nope")


@pytest.mark.parametrize("key", ["n_stats", "layers", "attention_layer_position"])
def test_missing_config_key_is_named(tmp_path, written, key):
    directory = tmp_path / "cfg"
    directory.mkdir()
    (directory / "pytorch_model.bin").write_bytes((written[0] / "pytorch_model.bin").read_bytes())
    (directory / "config.json").write_text(json.dumps({k: v for k, v in TINY.items() if k != key}))
    with pytest.raises(ValueError, match=rf"missing key\(s\) \['{key}'\]"):
        load_generator(directory)


def test_inconsistent_config_is_refused(tmp_path, written):
    directory = tmp_path / "cfg"
    directory.mkdir()
    (directory / "pytorch_model.bin").write_bytes((written[0] / "pytorch_model.bin").read_bytes())
    (directory / "config.json").write_text(json.dumps(dict(TINY, output_dim=64)))
    with pytest.raises(ValueError, match="up-sample 4 px to 32 px, but output_dim is 64"):
        load_generator(directory)


def test_state_that_does_not_fit_lists_the_keys(tmp_path, written):
    state = dict(written[1].state_dict())
    del state["generator.layers.2.bn_1.running_vars"]
    state["generator.extra.weight"] = torch.zeros(1)
    state["generator.gen_z.bias"] = torch.zeros(5)
    write_biggan(tmp_path / "bad", state=state)
    with pytest.raises(ValueError, match=r"missing keys \['generator.layers.2.bn_1.running_vars'\], "
                                         r"unexpected keys \['generator.extra.weight'\], shape "
                                         r"mismatches \['generator.gen_z.bias \(5,\) vs \(2048,\)'\]"):
        load_generator(tmp_path / "bad")
    # another size: many keys, a few listed
    write_biggan(tmp_path / "wide", state=reference_biggan(dict(TINY, channel_width=16)).state_dict())
    with pytest.raises(ValueError, match=r"shape mismatches \[.*\.\.\. \(\d+ in all\)"):
        load_generator(tmp_path / "wide")


class _RunsCode:
    """Unpickling this calls os.system: the kind of file that must never be unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_weights_that_would_run_code_are_refused(tmp_path, written):
    marker = tmp_path / "MARKER"
    state = dict(written[1].state_dict(), evil=_RunsCode(marker))
    write_biggan(tmp_path / "evil", state=state)
    for read in (load_generator, load_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match=r"system.*may run code.*not read"):
            read(tmp_path / "evil")
        assert not marker.exists()
    # the file really is harmful: plain unpickling runs its code
    torch.load(tmp_path / "evil" / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_features_hook(written):
    g = load_generator(written[0], truncation=0.4)
    z, y = _inputs(2)
    with torch.no_grad():
        assert g.features(z, 0, y).shape == (2, 128, 4, 4)        # gen_z, reshaped
        assert g.features(z, 4, y).shape == (2, 32, 16, 16)       # the self-attention's output
        assert g.features(z, 6, y).shape == (2, 8, 32, 32)        # the last block
    with pytest.raises(ValueError, match="layers 0..6"):
        g.features(z, 7, y)
    assert isinstance(g, BigGANGenerator) and g.layer_groups() == {"all": [0]}
