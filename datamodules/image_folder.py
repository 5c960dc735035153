"""A folder of the user's own images with a CSV of labels: the data of an attribute regressor
(``python train.py experiment=regressor_folder data.root=/path/to/images``).

The CSV has a header row, one column with the image file names (relative to the folder) and
one column per label::

    filename,Smiling,Young,score
    000001.jpg,1,-1,0.73
    000002.jpg,-1,1,

An empty cell or ``nan`` is a missing label: it counts in neither the loss nor the scores. The
kind of each label is read from its values, so a CelebA attribute file works as it is (with
``filename_column=image_id``): a column whose values are all -1/1 or all 0/1 is ``binary``
(stored as 0/1), any other numeric column is ``continuous``.

Batches are ``{"images": N x 3 x H x W in [-1, 1], "factors": N x F}``, the keys of the world's
batches, so that ``lightning_modules.regressor.RegressorTraining`` trains on either. Unlike the world's
endless streams this is a finite, map-style dataset: training is driven by ``max_steps`` and
the epochs simply repeat.

A folder without labels is read by ``list_images`` and ``ImageFolderImages`` (no CSV, items
without ``factors``): the training set of GLO (``datamodules/image_set.py``).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from common.errors import MissingFile, UserError

_FORMAT = ("a header row with a 'filename' column (image paths relative to the folder) and one "
           "column per label, e.g.\n    filename,Smiling,Young\n    000001.jpg,1,-1")
_SHOW = 5  # missing files named in an error


def _parse(text: str) -> float:
    """A label cell as a float (NaN when missing); ValueError when it is not a number."""
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    value = float(text)
    if not math.isfinite(value):  # an infinite label would make the loss infinite
        raise UserError(text)
    return value


def read_labels(path: Path, filename_column: str = "filename",
                columns: Sequence[str] | None = None) -> tuple[list[str], list[str], list[list[float]]]:
    """``(file names, label columns, rows of floats)`` of a labels CSV, NaN where missing."""
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets add a BOM
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if not header or header == [""]:
            raise UserError(f"{path} is empty; expected {_FORMAT}")
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise UserError(f"{path}: the header names columns {duplicated} more than once")
        if filename_column not in header:
            raise UserError(
                f"{path} has no column {filename_column!r} for the image file names; its columns "
                f"are {header}. Pass the right one (e.g. data.filename_column={header[0]}, CelebA "
                f"files call it image_id); the file must be comma-separated with {_FORMAT}")
        available = [h for h in header if h != filename_column]
        if columns is None:
            columns = available
        columns = list(columns)
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise UserError(f"{path}: no label column {unknown}; the label columns are {available}")
        if not columns:
            raise UserError(f"{path} has no label column besides {filename_column!r}; expected {_FORMAT}")
        file_index = header.index(filename_column)
        index = [header.index(c) for c in columns]
        files, rows = [], []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines, e.g. at the end of the file
            if len(row) != len(header):
                raise UserError(f"{path}, line {reader.line_num}: {len(row)} cells for the "
                                 f"{len(header)} columns of the header")
            values = []
            for c, i in zip(columns, index):
                try:
                    values.append(_parse(row[i]))
                except ValueError:
                    raise UserError(f"{path}, line {reader.line_num}, column {c!r}: {row[i]!r} is "
                                     "not a number (labels are numbers; leave the cell empty or "
                                     "write nan for a missing label)") from None
            files.append(row[file_index].strip())
            rows.append(values)
    return files, columns, rows


def infer_kind(values: torch.Tensor) -> str:
    """``binary`` when the present values are all in {-1, 1} or all in {0, 1}, else ``continuous``."""
    present = set(values[~torch.isnan(values)].tolist())
    return "binary" if present <= {0.0, 1.0} or present <= {-1.0, 1.0} else "continuous"


# Files an unlabelled folder is read from (list_images), by suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursively, by suffix), in sorted order: the images of
    a folder without a labels CSV (GLO trains on them)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFile(f"image folder not found: {root} (data.root)")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise MissingFile(f"no images in {root}: expected files ending in "
                                f"{', '.join(IMAGE_SUFFIXES)} (in the folder or below it)")
    return paths


class ImageFolderImages(Dataset):
    """``{"images": 3 x R x R in [-1, 1], "factors": F}`` of the given files, loaded lazily;
    without ``factors`` (an unlabelled folder) the items hold ``images`` only."""

    def __init__(self, paths: Sequence[Path], factors: torch.Tensor | None, resolution: int) -> None:
        self.paths, self.factors, self.resolution = list(paths), factors, resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image, ImageOps
        from torchvision.transforms.v2.functional import pil_to_tensor

        size = (self.resolution, self.resolution)
        with Image.open(self.paths[i]) as image:
            image.draft(image.mode, size)  # a JPEG decodes at 1/2 to 1/8 size when that suffices
            image = ImageOps.exif_transpose(image).convert("RGB")  # photos may be stored rotated
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            # Cropped before resizing (not resize(box=...)): the filter must not reach into the
            # cut-off margins. PIL's filter widens when it downsizes, so it antialiases.
            image = image.crop((left, top, left + side, top + side)).resize(size, Image.Resampling.BICUBIC)
        pixels = pil_to_tensor(image).float() / 127.5 - 1.0
        if self.factors is None:
            return {"images": pixels}
        return {"images": pixels, "factors": self.factors[i]}


class ImageFolderDataModule(pl.LightningDataModule):
    """Images of a folder with labels from a CSV, split once into train and held-out images.

    Everything that can be checked is checked here, before any work: the folder, the CSV, its
    columns and values, that every listed image exists, and that both splits are non-empty.

    Args:
        root: folder of the images.
        csv: the labels CSV (default ``<root>/labels.csv``): a header row, a column of file
            names relative to ``root`` and one numeric column per label.
        filename_column: the header of the file-name column (``image_id`` in CelebA files).
        columns: the label columns to learn, in this order (default: every other column).
        resolution: images are center-cropped to a square and resized to ``resolution`` pixels.
        batch_size: images per batch on each process.
        val_fraction: share of the rows held out for validation and the final scores.
        seed: seed of the split and of the shuffling of training images.
        val_batches: if set, evaluate on at most this many batches of the held-out images (the
            rest stay out of training all the same); by default on all of them.
        num_workers: DataLoader worker processes decoding images (0: the main process).

    Attributes:
        targets: ``[{"name", "kind"}]`` in column order, kind ``binary`` or ``continuous``.
        factor_names: the label columns.
        factors: ``N x F`` float32 labels of every row (NaN where missing).
        train_indices, val_indices: the rows of each split.
    """

    def __init__(self, root: str, csv: str | None = None, filename_column: str = "filename",
                 columns: list[str] | None = None, resolution: int = 32, batch_size: int = 64,
                 val_fraction: float = 0.1, seed: int = 0, val_batches: int | None = None,
                 num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size must be a positive integer, got {batch_size}")
        if resolution < 1:
            raise UserError(f"data.resolution must be a positive integer, got {resolution}")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if val_batches is not None and val_batches < 1:
            raise UserError(f"data.val_batches must be a positive integer or null, got {val_batches}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingFile(f"image folder not found: {self.root} (data.root)")
        self.csv = Path(csv).expanduser() if csv else self.root / "labels.csv"
        if not self.csv.is_file():
            raise MissingFile(f"labels CSV not found: {self.csv} (data.csv; default "
                                    f"<root>/labels.csv). Expected {_FORMAT}")
        self.resolution, self.batch_size, self.seed = resolution, batch_size, seed
        self.val_fraction, self.val_batches, self.num_workers = val_fraction, val_batches, num_workers

        if isinstance(columns, str):  # data.columns=Smiling on the command line
            columns = [columns]
        files, self.factor_names, rows = read_labels(
            self.csv, filename_column, None if columns is None else list(columns))
        if not files:
            raise UserError(f"{self.csv} lists no images (only a header); expected {_FORMAT}")
        self.paths = [self.root / f for f in files]
        missing = [f for f, p in zip(files, self.paths) if not p.is_file()]
        if missing:
            raise MissingFile(
                f"{len(missing)} of the {len(files)} images listed in {self.csv} are not in "
                f"{self.root}: {', '.join(missing[:_SHOW])}{', ...' if len(missing) > _SHOW else ''}"
                f" (the {filename_column!r} column holds paths relative to the folder)")

        self.factors = torch.tensor(rows, dtype=torch.float32).reshape(len(files), -1)
        self.targets: list[dict] = []
        for j, name in enumerate(self.factor_names):
            column = self.factors[:, j]
            if torch.isnan(column).all():
                raise UserError(f"{self.csv}: column {name!r} has no labels (every cell is empty)")
            kind = infer_kind(column)
            if kind == "binary":
                column[column == -1] = 0.0  # CelebA's -1 is "absent"
            self.targets.append({"name": name, "kind": kind})

        n = len(files)
        n_val = math.floor(n * val_fraction + 0.5)
        if n_val == 0:
            raise UserError(f"the held-out split is empty: {n} images x data.val_fraction="
                             f"{val_fraction} rounds to 0. Raise val_fraction or add images.")
        if n_val == n:
            raise UserError(f"the training split is empty: all {n} images are held out with "
                             f"data.val_fraction={val_fraction}. Lower val_fraction or add images.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.val_indices = sorted(order[:n_val].tolist())
        self.train_indices = sorted(order[n_val:].tolist())

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    def _images(self, indices: Sequence[int]) -> ImageFolderImages:
        return ImageFolderImages([self.paths[i] for i in indices], self.factors[list(indices)],
                                 self.resolution)

    def train_dataloader(self) -> DataLoader:
        images = self._images(self.train_indices)
        return DataLoader(images, batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed),
                          drop_last=len(images) >= self.batch_size, num_workers=self.num_workers,
                          # max_steps spans many epochs: keep the workers between them
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        indices = self.val_indices
        if self.val_batches is not None:
            indices = indices[: self.val_batches * self.batch_size]
        return DataLoader(self._images(indices), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)
