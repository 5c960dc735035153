"""The image-folder datamodule: labels and kinds from a CSV, batches, the split, its errors, and a
regressor trained on a folder through train.py (experiment=regressor_folder)."""
import json
import math

import pytest
import torch
from conftest import compose_cfg
from torchvision.utils import save_image

from datamodules.image_folder import ImageFolderDataModule
from datamodules.world import ShapesWorld

N = 40
MISSING_ROW = 7  # the row whose score cell is empty


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 renders of the shapes world with a CelebA-style binary column and a score column."""
    root = tmp_path_factory.mktemp("images")
    world = ShapesWorld(32)
    factors = world.sample_factors(N, generator=torch.Generator().manual_seed(0))
    images = world.render(factors)
    lines = ["filename,Is_circle,score"]
    for i in range(N):
        save_image(images[i] * 0.5 + 0.5, root / f"{i:03d}.png")
        score = "" if i == MISSING_ROW else f"{factors[i, 3]:.4f}"
        lines.append(f"{i:03d}.png,{1 if factors[i, 0] == 1 else -1},{score}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def write_csv(path, text):
    path.write_text(text)
    return str(path)


def test_targets_and_kinds_are_inferred(folder):
    dm = ImageFolderDataModule(str(folder), batch_size=8)
    assert dm.factor_names == ["Is_circle", "score"]
    assert dm.targets == [{"name": "Is_circle", "kind": "binary"}, {"name": "score", "kind": "continuous"}]
    assert set(dm.factors[:, 0].tolist()) <= {0.0, 1.0}  # -1 became 0
    assert math.isnan(dm.factors[MISSING_ROW, 1]) and not dm.factors[:, 0].isnan().any()
    only = ImageFolderDataModule(str(folder), columns=["score"])
    assert only.factor_names == ["score"] and only.factors.shape == (N, 1)


def test_batches(folder):
    dm = ImageFolderDataModule(str(folder), batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"images", "factors"}
    assert batch["images"].shape == (8, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert batch["factors"].shape == (8, 2) and batch["factors"].dtype == torch.float32
    assert -1.0 <= batch["images"].min() and batch["images"].max() <= 1.0
    assert batch["images"].max() > 0.5  # a shape in full colour on black
    assert len(dm.train_dataloader()) == 36 // 8  # drop_last: full batches only
    val = [b for b in dm.val_dataloader()]
    assert sum(len(b["factors"]) for b in val) == 4
    everything = dm._images(range(N))
    assert math.isnan(everything[MISSING_ROW]["factors"][1])
    small = ImageFolderDataModule(str(folder), resolution=16, val_batches=1, batch_size=2)
    assert small._images([0])[0]["images"].shape == (3, 16, 16)
    assert sum(len(b["factors"]) for b in small.val_dataloader()) == 2


def test_non_square_images_are_center_cropped(tmp_path):
    image = torch.zeros(3, 20, 40)
    image[0, :, 10:30] = 1.0  # a red centre square between black side bands
    save_image(image, tmp_path / "wide.png")
    (tmp_path / "labels.csv").write_text("filename,a\nwide.png,0.5\nwide.png,0.7\n")
    dm = ImageFolderDataModule(str(tmp_path), resolution=8, val_fraction=0.5)
    pixels = dm._images([0])[0]["images"]
    assert pixels.shape == (3, 8, 8)
    assert torch.allclose(pixels[0], torch.ones(8, 8), atol=0.02)  # only the red square is kept


def test_split_is_deterministic_and_disjoint(folder):
    a, b = ImageFolderDataModule(str(folder), seed=3), ImageFolderDataModule(str(folder), seed=3)
    assert a.val_indices == b.val_indices and a.train_indices == b.train_indices
    assert len(a.val_indices) == 4 and len(a.train_indices) == 36
    assert not set(a.val_indices) & set(a.train_indices)
    assert sorted(a.val_indices + a.train_indices) == list(range(N))
    assert ImageFolderDataModule(str(folder), seed=4).val_indices != a.val_indices
    first = [next(iter(m.train_dataloader()))["factors"] for m in (a, b)]
    assert torch.equal(first[0].nan_to_num(-9), first[1].nan_to_num(-9))  # the same shuffle


def test_celeba_style_file(folder, tmp_path):
    text = "image_id,Smiling,Young\n" + "".join(f"{i:03d}.png,{(-1) ** i},{i % 2}\n" for i in range(N))
    path = write_csv(tmp_path / "attr.csv", text)
    with pytest.raises(ValueError, match=r"no column 'filename'.*\['image_id', 'Smiling', 'Young'\]"
                                         r".*filename_column=image_id"):
        ImageFolderDataModule(str(folder), csv=path)
    dm = ImageFolderDataModule(str(folder), csv=path, filename_column="image_id")
    assert [t["kind"] for t in dm.targets] == ["binary", "binary"]
    assert torch.equal(dm.factors[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("text, error, match", [
    ("filename,a\n000.png,1\n001.png,yes\n", ValueError, r"line 3, column 'a': 'yes' is not a number"),
    ("filename,a\n", ValueError, "lists no images"),
    ("filename,a\n000.png,1\nnope.png,2\ngone.png,3\n", FileNotFoundError,
     r"2 of the 3 images .* nope\.png, gone\.png"),
    ("filename,a\n000.png,\n001.png,nan\n", ValueError, "column 'a' has no labels"),
    ("filename,a\n000.png,1,2\n", ValueError, "line 2: 3 cells for the 2 columns"),
])
def test_csv_errors(folder, tmp_path, text, error, match):
    with pytest.raises(error, match=match):
        ImageFolderDataModule(str(folder), csv=write_csv(tmp_path / "bad.csv", text))


def test_setup_errors(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"labels CSV not found: .*labels\.csv.*header row"):
        ImageFolderDataModule(str(tmp_path))
    with pytest.raises(ValueError, match=r"no label column \['Smiling'\].*\['Is_circle', 'score'\]"):
        ImageFolderDataModule(str(folder), columns=["Smiling"])
    with pytest.raises(ValueError, match="held-out split is empty.*Raise val_fraction or add images"):
        ImageFolderDataModule(str(folder), val_fraction=0.01)
    two = write_csv(tmp_path / "two.csv", "filename,a\n000.png,1\n001.png,2\n")
    with pytest.raises(ValueError, match="training split is empty.*Lower val_fraction or add images"):
        ImageFolderDataModule(str(folder), csv=two, val_fraction=0.9)


def test_regressor_trains_on_a_folder(folder, tmp_path):
    import train
    from regressors.attributes import load_regressor

    cfg = compose_cfg(["experiment=regressor_folder", f"data.root={folder}", "run_name=test",
                       "data.columns=[Is_circle,score]", "data.batch_size=8", "logger=none",
                       "trainer.max_steps=3", "trainer.val_check_interval=3",
                       "trainer.enable_progress_bar=false", "callbacks.checkpoint.every_n_train_steps=0",
                       "method.backbone_kwargs={channels:[8,16,16,16],stem_width:8}"], tmp_path)
    train.train(cfg)
    run_dir = tmp_path / "test"
    model = load_regressor(run_dir / "regressor.pt")
    assert model.factor_names == ["Is_circle", "score"]
    assert [t.kind for t in model.targets] == ["binary", "continuous"]
    assert model.backbone_kwargs == {"channels": [8, 16, 16, 16], "stem_width": 8}
    scores = json.loads((run_dir / "regressor_scores.json").read_text())
    assert {"acc_Is_circle", "r2_score"} <= set(scores["held_out"])
    assert scores["data"] == "ImageFolderDataModule" and scores["batches"] == 3
