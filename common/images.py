"""Image grids: saved as PNG in the run directory and logged to W&B when that logger is on."""
from __future__ import annotations

import io
from pathlib import Path

import torch
import torchvision

from common.errors import UserError


def _grid(images: torch.Tensor, nrow: int, padding: int) -> torch.Tensor:
    """Images in [-1, 1] (N x 3 x H x W) as one grid in [0, 1], grey between the images."""
    return torchvision.utils.make_grid(images.detach().float().cpu().clamp(-1, 1) * 0.5 + 0.5,
                                       nrow=nrow, padding=padding, pad_value=0.5)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, padding: int = 1) -> Path:
    """Save images in [-1, 1] (N x 3 x H x W) as one PNG grid with ``nrow`` images a row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(_grid(images, nrow, padding), path)
    return path


def png_bytes(images: torch.Tensor, nrow: int, padding: int = 0) -> bytes:
    """The PNG file of ``save_grid``'s grid, in memory (what a web page is sent)."""
    buffer = io.BytesIO()
    torchvision.utils.save_image(_grid(images, nrow, padding), buffer, format="png")
    return buffer.getvalue()


def read_image(path: str | Path, resolution: int) -> torch.Tensor:
    """An RGB image file as a ``3 x H x W`` tensor in [-1, 1]; a clear error for a missing,
    unreadable or wrongly sized file (the generator's images are ``resolution`` px squares).
    The size is read from the header and checked before any pixel is decoded: a huge image
    costs nothing."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"image={path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        with warnings.catch_warnings():
            # PIL warns of a large pixel count at open; the size check below refuses it unread
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:  # lazy: the header only
                size = handle.size
                if size == (resolution, resolution):
                    handle.load()
                    image = handle.convert("RGB")
    except Image.DecompressionBombError:  # too large for PIL even to open: its size is unknown
        size = None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"image={path} is not a readable image ({type(err).__name__}: {err}); "
                         "pass a PNG or JPEG file") from None
    if size != (resolution, resolution):
        shown = (f"{size[0]} x {size[1]} px" if size is not None else
                 f"over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (PIL's decompression-bomb limit)")
        raise UserError(f"image={path} is {shown}; this generator draws {resolution} x "
                         f"{resolution}: crop and resize it first, e.g. PIL's "
                         f"ImageOps.fit(image, ({resolution}, {resolution}))")
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return array.view(resolution, resolution, 3).permute(2, 0, 1).float() / 127.5 - 1.0


def log_image(loggers, key: str, path: str | Path, step: int, caption: str | None = None) -> None:
    """Send a saved PNG to every W&B logger among ``loggers`` (others keep the file only)."""
    extra = {"caption": [caption]} if caption else {}  # (Lightning's log_image takes no caption=None)
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_image(key=key, images=[str(path)], step=step, **extra)


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, save as PNG (making the folder) and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def save_line_plot(path: str | Path, x, series: list[tuple], xlabel: str, ylabel: str) -> Path:
    """A small line plot PNG: ``series`` of ``(y, matplotlib format, label)`` against ``x``."""
    fig, ax = pyplot().subplots(figsize=(4.5, 3.5), dpi=100)
    for y, fmt, label in series:
        ax.plot(x, y, fmt, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
