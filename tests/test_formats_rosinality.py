"""rosinality/stylegan2-pytorch checkpoints: safe reading, sizes from the tensors, equal images,
and format detection (generators/formats)."""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from generators.formats import (
    FORMATS,
    LOADERS,
    UnsafeCheckpointError,
    detect_format,
    load_checkpoint,
    load_rosinality,
    read_rosinality,
    stylegan2_config_from_state,
    stylegan2_discriminator_config_from_state,
)
from generators.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from generators.weights import WEIGHTS_DIR, WEIGHTS_FORMAT

# Non-default widths everywhere (the published table would say 512 at every size here).
G_KW = dict(resolution=16, style_dim=16, n_mlp=2, channels=[16, 16, 8])
D_KW = dict(resolution=16, channels=[12, 10, 6])


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every parameter (noise strengths and biases start at 0 / 1, which
    would hide a wrongly loaded tensor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return module.eval()


def _train_args(size: int) -> argparse.Namespace:
    """The fields of rosinality's train.py arguments (argparse defaults, then its additions)."""
    return argparse.Namespace(
        path="lmdb", arch="stylegan2", iter=800000, batch=16, n_sample=64, size=size, r1=10.0,
        path_regularize=2.0, path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9,
        ckpt=None, lr=0.002, channel_multiplier=2, wandb=False, local_rank=0, augment=False,
        augment_p=0.0, ada_target=0.6, ada_length=500000, ada_every=256, distributed=False,
        latent=16, n_mlp=2, start_iter=0)


def _adam_state(module: torch.nn.Module, reg_every: int) -> dict:
    """An Adam state as train.py builds it, after one step (so it holds moment tensors)."""
    ratio = reg_every / (reg_every + 1)
    optim = torch.optim.Adam(module.parameters(), lr=0.002 * ratio, betas=(0 ** ratio, 0.99 ** ratio))
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    optim.step()
    for p in module.parameters():
        p.grad = None
    return optim.state_dict()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint in rosinality's published train.py layout, and the networks it holds."""
    torch.manual_seed(0)
    g_ema = _perturbed(StyleGAN2Generator(**G_KW), 1)
    g = _perturbed(StyleGAN2Generator(**G_KW), 2)  # the training generator: other weights
    d = _perturbed(StyleGAN2Discriminator(**D_KW), 3)
    path = tmp_path_factory.mktemp("rosinality") / "010000.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
                "g_optim": _adam_state(g, 4), "d_optim": _adam_state(d, 16),
                "args": _train_args(16), "ada_aug_p": 0.0}, path)
    return path, g_ema, d


def _layers(gen: StyleGAN2Generator, ws: torch.Tensor) -> torch.Tensor:
    return ws[:, None].expand(-1, gen.num_layers, -1)


def test_read_is_safe_and_complete(written):
    path, _, _ = written
    blob = read_rosinality(path)
    assert set(blob) == {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
    assert isinstance(blob["args"], argparse.Namespace) and blob["args"].size == 16
    with pytest.raises(Exception):  # the reason for the allow-list: plain weights_only refuses it
        torch.load(path, map_location="cpu", weights_only=True)


def test_sizes_from_the_tensors(written):
    path, _, _ = written
    blob = read_rosinality(path)
    assert stylegan2_config_from_state(blob["g_ema"]) == {
        "resolution": 16, "style_dim": 16, "n_mlp": 2, "channels": [16, 16, 8],
        "blur_kernel": [1, 3, 3, 1]}
    assert stylegan2_discriminator_config_from_state(blob["d"]) == {
        "resolution": 16, "channels": [12, 10, 6], "blur_kernel": [1, 3, 3, 1]}


def test_loaded_generator_draws_the_written_images(written):
    path, ref, ref_d = written
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        w = ref.mapping(z)
        expected = ref.synthesis(_layers(ref, w))
        wplus = w[:, None] + 0.3 * torch.randn(5, ref.num_layers, 16,
                                               generator=torch.Generator().manual_seed(8))
        expected_plus = ref.synthesis(wplus)

        gen = load_rosinality(path, space="w")
        assert gen.config() == dict(ref.config(), name="010000")
        assert (gen.latent_dim, gen.num_layers, gen.resolution) == (16, 6, 16)
        assert (gen(w) - expected).abs().max() < 1e-5                    # W path
        gen.set_view("z")
        assert (gen(z) - expected).abs().max() < 1e-5                    # Z path (mapping)
        gen.set_view("w+")
        assert (gen(wplus) - expected_plus).abs().max() < 1e-5           # per-layer codes

        images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))
        assert gen.discriminator is not None and not gen.discriminator.training
        assert (gen.discriminator(images) - ref_d(images)).abs().max() < 1e-5
    assert not any(p.requires_grad for p in gen.parameters())
    assert not any(p.requires_grad for p in gen.discriminator.parameters())
    assert not any(n.startswith("discriminator") for n, _ in gen.named_parameters())


def test_identity_source_and_truncation(written):
    path, ref, _ = written
    gen = load_rosinality(path, space="z", truncation_psi=0.5, name="tiny", discriminator=False)
    ident = gen.identity()
    assert ident["adapter"] == "stylegan2-rosinality" and ident["name"] == "tiny"
    assert ident["truncation"] == {"psi": 0.5, "cutoff": None} and ident["space"] == "z"
    from generators.base import file_sha256
    assert gen.sha256 == file_sha256(path)
    assert gen.source["format"] == "rosinality" and gen.source["path"] == str(path)
    assert gen.discriminator is None and gen.w_avg_origin.startswith("estimated")
    # rosinality stores no w_avg: the estimate is the mean of mapped samples, as for the reference.
    w_avg = ref.estimate_w_avg().clone()
    assert torch.allclose(gen.w_avg, w_avg, atol=1e-6)
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = w_avg + 0.5 * (ref.mapping(z) - w_avg)
        assert (gen(z) - ref.synthesis(_layers(ref, ws))).abs().max() < 1e-5
    # The recorded source rebuilds the same view.
    again = load_checkpoint(**{k: v for k, v in gen.source.items() if k != "_target_"})
    assert again.identity() == ident


def test_converted_file_uses_its_latent_avg(tmp_path, written):
    """convert_weight.py files store the TensorFlow dlatent average as latent_avg."""
    _, ref, _ = written
    path = tmp_path / "stylegan2-converted.pt"
    latent_avg = torch.randn(16)
    torch.save({"g_ema": ref.state_dict(), "latent_avg": latent_avg}, path)
    assert detect_format(path) == "rosinality"
    gen = load_rosinality(path)
    assert torch.equal(gen.w_avg, latent_avg) and gen.w_avg_origin == "file (latent_avg)"
    assert gen.discriminator is None


def test_missing_g_ema_is_a_clear_error(tmp_path, written):
    path, ref, d = written
    bad = tmp_path / "no_ema.pt"
    torch.save({"g": ref.state_dict(), "d": d.state_dict()}, bad)
    with pytest.raises(ValueError, match=r"no 'g_ema'.*without the moving-average.*keys found: \['d', 'g'\]"):
        load_rosinality(bad)


def test_state_that_does_not_fit_lists_the_keys(tmp_path, written):
    _, ref, _ = written
    state = dict(ref.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["to_rgb1.bias"]
    bad = tmp_path / "bad.pt"
    torch.save({"g_ema": state}, bad)
    with pytest.raises(ValueError, match=r"missing keys \['to_rgb1.bias'\], unexpected keys \['extra.weight'\]"):
        load_rosinality(bad)


class _RunsCode:
    """Unpickling this calls os.system: the kind of file that must never be unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_file_that_would_run_code_is_refused(tmp_path, written):
    _, ref, _ = written
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": ref.state_dict(), "args": _RunsCode(marker)}, path)
    for read in (read_rosinality, load_rosinality, detect_format, load_checkpoint):
        with pytest.raises(UnsafeCheckpointError, match=r"system.*may run code.*not read"):
            read(path)
        assert not marker.exists()
    # The file really is harmful: plain unpickling runs its code.
    torch.load(path, weights_only=False)
    assert marker.exists()


# ---- detect_format ------------------------------------------------------------------------------
_SG2_SRC = ("import torch\nclass MappingNetwork(torch.nn.Module): ...\n"
            "class SynthesisNetwork(torch.nn.Module): ...\nclass Generator(torch.nn.Module): ...\n")
_SG3_SRC = _SG2_SRC.replace("class SynthesisNetwork",
                            "class SynthesisInput(torch.nn.Module): ...\nclass SynthesisNetwork")


def _nvidia_pickle(path: Path, g_src: str, protocol: int = 4) -> None:
    """A plain pickle shaped like an NVIDIA snapshot: networks pickled as calls to
    torch_utils.persistence._reconstruct_persistent_obj(meta) (stand-in modules while
    writing, removed before reading)."""
    package, persistence = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never be called
        raise AssertionError("the pickle was unpickled")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = persistence

    class Net:
        def __init__(self, src: str, cls: str) -> None:
            self.meta = dict(type="class", version=4, module_src=src, class_name=cls,
                             state=dict(_parameters=OrderedDict(w=torch.randn(2, 2)),
                                        _init_kwargs=dict(z_dim=16, w_dim=16)))

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    sys.modules.update({"torch_utils": package, "torch_utils.persistence": persistence})
    try:
        g = Net(g_src, "Generator")
        data = dict(G=g, D=Net(_SG2_SRC + "class Discriminator: ...\n", "Discriminator"),
                    G_ema=Net(g_src, "Generator"), augment_pipe=None,
                    training_set_kwargs=dict(resolution=16))
        with open(path, "wb") as handle:
            pickle.dump(data, handle, protocol=protocol)
    finally:
        del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]


def test_detect_format_of_each_kind(tmp_path, written):
    path, ref, d = written
    assert detect_format(path) == "rosinality"
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 serialisation (not a zip)
    torch.save({"g_ema": ref.state_dict(), "args": _train_args(16)}, legacy,
               _use_new_zipfile_serialization=False)
    assert detect_format(legacy) == "rosinality"
    assert load_rosinality(legacy).config()["channels"] == [16, 16, 8]

    assert detect_format(WEIGHTS_DIR / "dcgan_shapes32.pt") == "project"
    project = tmp_path / "generator.pt"
    torch.save({"format": WEIGHTS_FORMAT, "architecture": "stylegan2",
                "generator_config": ref.config(), "generator": ref.state_dict(),
                "discriminator_config": d.config(), "discriminator": d.state_dict()}, project)
    assert detect_format(project) == "project"
    assert load_checkpoint(project, space="w").adapter == "stylegan2"

    for src, kind in ((_SG2_SRC, "nvidia-pickle"), (_SG3_SRC, "stylegan3-pickle")):
        for protocol in (4, 3, 2, 0):  # 4: Python >= 3.8 default; 0 has no header byte
            pkl = tmp_path / f"{kind}{protocol}.pkl"
            _nvidia_pickle(pkl, src, protocol)
            assert detect_format(pkl) == kind, protocol
            assert "torch_utils" not in sys.modules  # scanned, never unpickled
    assert set(FORMATS) >= {"project", "rosinality", "nvidia-pickle", "stylegan3-pickle"}
    if "nvidia-pickle" not in LOADERS:  # before generators/formats/nvidia.py exists
        with pytest.raises(ValueError, match="no loader for it is installed"):
            load_checkpoint(tmp_path / "nvidia-pickle4.pkl")


def test_detect_format_refuses_unknown_files(tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                          dtype=torch.uint8).tolist()))
    with pytest.raises(ValueError, match=r"neither a torch file .* nor a pickle.*Supported formats: project"):
        detect_format(noise)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"a": OrderedDict(b=1)}))
    with pytest.raises(ValueError, match=r"plain pickle but not an NVIDIA network pickle.*OrderedDict"):
        detect_format(other)
    tensors = tmp_path / "tensors.pt"
    torch.save({"weight": torch.zeros(2)}, tensors)
    with pytest.raises(ValueError, match=r"holding a dict with keys \['weight'\], not a known"):
        detect_format(tensors)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is a directory"):
        detect_format(tmp_path)
    with pytest.raises(ValueError, match="given as format 'nvidia-pickle' but is 'project'"):
        load_checkpoint(WEIGHTS_DIR / "dcgan_shapes32.pt", format="nvidia-pickle")
