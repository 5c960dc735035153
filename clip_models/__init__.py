"""CLIP models of image and text (``clip_models/base.py``: the interface): the project's own,
trained on the shapes world (``world.py``, shipped in ``weights/``), or a user's open_clip
weights file (``open_clip_file.py``)."""
from __future__ import annotations

from pathlib import Path

from clip_models.base import ClipModel


def load_clip(path: str | Path = "world_clip32.pt", arch: str | None = None) -> ClipModel:
    """A frozen CLIP: ``arch=None`` reads a world CLIP file (a path, or a name shipped in
    clip_models/weights/); an open_clip architecture name reads the user's weights for it."""
    if arch:
        from clip_models.open_clip_file import OpenClipModel

        return OpenClipModel(path, str(arch))
    from clip_models.world import load_world_clip

    return load_world_clip(path)
