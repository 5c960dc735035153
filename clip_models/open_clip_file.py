"""A user's own CLIP weights, read from a local file through open_clip (``open-clip-torch``):
``clip.path=/models/open_clip_pytorch_model.bin clip.arch=ViT-B-32``.

open_clip builds the architecture from its own model config (no download); the weights come
from the file only, read without running anything in it: a ``.safetensors`` file through
safetensors, any other file through ``torch.load(weights_only=True)``. Accepted layouts: the
bare state dict open_clip publishes (``open_clip_pytorch_model.bin``,
``open_clip_model.safetensors``) and the checkpoints of open_clip's trainer
(``{"state_dict": ..., "epoch": ...}``, keys prefixed ``module.`` under DDP). Architectures whose
text tower or tokenizer comes from the Hugging Face hub (roberta, mt5, SigLIP ...) are refused:
their tokenizer would be downloaded.

Images in [-1, 1] are resized to the model's input side (bicubic, antialiased: differentiable,
so gradients reach a generator) and normalised with the model's mean and std.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from clip_models.base import ClipModel, resize
from common.errors import MissingFile, UserError
from common.io import file_sha256
from common.pickles import UnreadableFile, load_weights_only

_HUB_KEYS = ("hf_model_name", "hf_tokenizer_name")


def _import_open_clip():
    try:
        import open_clip
    except ImportError:
        raise UserError("clip.arch= reads a CLIP through open_clip, which is not installed: "
                        "pip install -e '.[clip]' (or pip install open-clip-torch); clip.arch=null "
                        "uses the project's world CLIP") from None
    return open_clip


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of an open_clip file (bare state dict or trainer checkpoint)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same mistake
            raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    else:
        try:
            state = load_weights_only(path, "cpu", what="CLIP weights file")
        except UnreadableFile as err:
            raise UserError(f"{err}; expected an open_clip weights file (open_clip_pytorch_model.bin, "
                            "open_clip_model.safetensors or a checkpoint of open_clip's trainer). "
                            "TorchScript archives of OpenAI's clip package are not read: save "
                            "their state_dict() with torch.save") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{path} does not hold a state dict of tensors (nor a checkpoint with one "
                        "under 'state_dict')")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


class OpenClipModel(ClipModel):
    """An open_clip architecture with the weights of a local file.

    Args:
        path: the weights file.
        arch: an open_clip model name (``open_clip.list_models()``), e.g. ``ViT-B-32``.
    """

    kind = "open_clip"

    def __init__(self, path: str | Path, arch: str) -> None:
        super().__init__()
        open_clip = _import_open_clip()
        if arch not in open_clip.list_models():
            near = [m for m in open_clip.list_models() if m.lower().startswith(str(arch).lower()[:3])]
            raise UserError(f"clip.arch={arch} is not an open_clip architecture; close names: "
                            f"{near[:12] or 'none'} (open_clip.list_models() has them all)")
        text_cfg = open_clip.get_model_config(arch).get("text_cfg", {})
        hub = [k for k in _HUB_KEYS if text_cfg.get(k)]
        if hub:
            raise UserError(f"clip.arch={arch}: its text tower or tokenizer comes from the Hugging "
                            f"Face hub ({', '.join(f'{k}={text_cfg[k]}' for k in hub)}), which "
                            "would download; use an architecture with open_clip's own tokenizer "
                            "(ViT-B-32, ViT-B-16, ViT-L-14, RN50 ...)")
        path = Path(path)
        if not path.is_file():
            raise MissingFile(f"CLIP weights not found: {path}. Put your open_clip weights file "
                              f"for {arch} there (open_clip_pytorch_model.bin or "
                              "open_clip_model.safetensors; nothing is downloaded), or pass its "
                              "path as clip.path=")
        state = read_state_dict(path)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # "no pretrained weights loaded": expected
        try:
            model = open_clip.create_model(arch, pretrained=None)
        finally:
            logging.getLogger().setLevel(quiet)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            ours = set(model.state_dict())
            missing, unexpected = sorted(ours - set(state)), sorted(set(state) - ours)
            raise UserError(f"{path} does not fit open_clip's {arch}: missing keys {missing[:8]}, "
                            f"unexpected keys {unexpected[:8]}"
                            + ("" if missing or unexpected else f" ({str(err).splitlines()[-1].strip()})")
                            + "; check clip.arch") from None
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(arch)
        preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = preprocess.get("size", model.visual.image_size)
        self.resolution = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = preprocess.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.embed_dim = int(model.text_projection.shape[-1] if hasattr(model, "text_projection")
                             and isinstance(model.text_projection, torch.Tensor)
                             else model.visual.output_dim)
        self.arch, self.path, self.sha256 = arch, str(path), file_sha256(path)
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] as the model reads them: resized, then normalised."""
        images = resize(images, self.resolution, mode="bicubic")
        return ((images + 1) / 2 - self.mean) / self.std

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images))

    def _text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.mean.device))

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "arch": self.arch}
