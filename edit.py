"""Apply any directions file: a traversal of chosen directions from chosen seeds or latents,
as an image grid or an animated GIF.

    python edit.py directions=outputs/<run>/directions.pt direction=3 seeds=[1,2,3]   # alphas=auto
    python edit.py directions=... direction=[0,3] alphas=[-6,-3,0,3,6] format=gif
    python edit.py directions=... latents=my_latents.pt direction=5
    python edit.py directions=... direction=3 image=photo.png   # invert a real image, then edit
    python edit.py directions=... direction=0 seeds=[1,2] classes=[207,208]   # conditional G
    python edit.py directions=... direction=0 input_transform="{translate: [0.2, 0], angle: 10}"  # StyleGAN3

With ``image=``, the image is inverted into the generator's editing space first (several
starts, L2 + Lap1 by default; ``inversion.*``); the reconstruction error is reported and written
beside the strip (``<image>_inversion.json``), with the inverted latents (``<image>_latents.pt``,
reusable as ``latents=``); the strip's first column is the image itself.

Non-linear directions (warps, walks) are applied by their own ``shift``, like linear ones.

On a conditional generator each seed draws its class among the generator's configured classes,
or, with ``classes=`` (one class or a list), is rendered once with each class given (rows:
seed x class); a latents file or an image needs ``classes=`` there. Class-dependent directions
(GANalyze's ``class_dependent``) move each latent along its own class's direction.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig

from common.checks import integer, integers, number, numbers
from common.errors import UserError
from common.images import read_image, save_grid
from common.io import atomic_write, atomic_write_json
from common.pickles import RefusedPickle, UnreadableFile, load_weights_only
from common.runs import check_command_line, exit_on_setup_error, register_resolvers
from directions import Directions
from generators.recorded import load_run_generator

log = logging.getLogger("edit")
register_resolvers()




MAX_SEED = 2 ** 63 - 1  # what torch.Generator.manual_seed takes as a seed


def _indices(value, count: int) -> list[int]:
    indices = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < count]
    if bad or not indices:
        raise UserError(f"direction={value}: the file has {count} directions, so pass an index "
                             f"from 0 to {count - 1} (or a list of them)")
    return indices


def _classes(cfg: DictConfig, generator, directions: Directions) -> list[int] | None:
    """The classes of ``classes=`` (None: each seed draws its own), checked before any work."""
    value = cfg.get("classes")
    if value is None:
        return None
    classes = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    n = generator.num_classes
    if not n:
        raise UserError(f"classes={value}: generator {generator.name!r} is unconditional; "
                             "drop classes=")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n]
    if bad or not classes:
        raise UserError(f"classes={value}: generator {generator.name!r} has classes 0..{n - 1}; "
                             "pass one class index or a list of them")
    made = directions.meta.get("direction_classes")
    if made is not None and set(classes) - set(made):
        raise UserError(f"classes={value}: these class-dependent directions have none for "
                             f"class(es) {sorted(set(classes) - set(made))}; they were made for "
                             f"classes {sorted(set(made))}")
    return classes


def check_numbers(cfg: DictConfig) -> list[float] | None:
    """Every number of the command, checked before any work (a ``UserError`` naming the
    option): returns the alphas (None: ``alphas=auto``). The direction indices and classes are
    checked against the file and the generator once they are loaded (``_indices``,
    ``_classes``)."""
    alphas = None
    if not (isinstance(cfg.alphas, str) and cfg.alphas == "auto"):
        if isinstance(cfg.alphas, (list, ListConfig)) and not cfg.alphas:
            raise UserError("alphas=[] gives nothing to show: pass alphas=[-6,-3,0,3,6] "
                                 "or alphas=auto")
        alphas = numbers(cfg.alphas, "alphas",
                         what="expected auto or a list of finite numbers such as [-6,-3,0,3,6]")
    integers(cfg.direction, "direction", low=0, empty=False,
             what="expected a direction index (an integer >= 0) or a list of them such as [0,3]")
    integers(cfg.seeds, "seeds", low=0, high=MAX_SEED,
             what=f"expected a list of seeds (integers in 0..{MAX_SEED}) such as [0,1,2]")
    if cfg.get("classes") is not None:
        integers(cfg.classes, "classes", low=0, empty=False,
                 what="expected a class index (an integer >= 0) or a list of them")
    number(cfg.get("default_alpha_range"), "default_alpha_range", low=0, low_open=True,
           none=True)
    number(cfg.fps, "fps", low=0, high=100, low_open=True,
           hint="frames per second of format=gif")
    inv = cfg.inversion
    integer(inv.steps, "inversion.steps", low=1)
    integer(inv.starts, "inversion.starts", low=1)
    number(inv.lr, "inversion.lr", low=0, low_open=True)
    integer(inv.seed, "inversion.seed", low=0)
    return alphas


def _image_paths(cfg: DictConfig) -> list[Path]:
    """The files of ``image=`` (one path or a list; [] without)."""
    value = cfg.get("image")
    if not value:
        return []
    return [Path(p) for p in (value if isinstance(value, (list, ListConfig)) else [value])]


def _images(cfg: DictConfig, generator, classes: list[int] | None) -> torch.Tensor | None:
    """The images of ``image=``, checked before any work; None without."""
    paths = _image_paths(cfg)
    if not paths:
        return None
    if cfg.latents:
        raise UserError("pass either image=... or latents=..., not both")
    if generator.num_classes and (classes is None or len(classes) != 1):
        raise UserError(f"image= on a conditional generator ({generator.name!r}) needs the "
                             "class to invert it as: pass classes=<one class index>")
    return torch.stack([read_image(p, generator.resolution) for p in paths])


def _invert(cfg: DictConfig, generator, images: torch.Tensor, out_dir: Path, tag: str,
            y: torch.Tensor | None = None) -> torch.Tensor:
    """Invert ``images`` (of classes ``y``); report and write the reconstruction error and the
    latents."""
    from editing.inversion import invert
    from metrics.distances import ImageDistance

    inv = cfg.inversion
    try:
        distance = ImageDistance.named(inv.loss)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"inversion.loss={inv.loss}: {err}") from None
    result = invert(generator, images.to(generator.device), distance=distance, steps=int(inv.steps),
                    lr=float(inv.lr), starts=int(inv.starts), seed=int(inv.seed), y=y)
    summary = dict(result.summary(), space=generator.space, loss=distance.describe(),
                   psnr_per_image=[round(float(v), 3) for v in result.psnr],
                   files=[str(p) for p in _image_paths(cfg)])
    atomic_write_json(summary, out_dir / f"{tag}_inversion.json")
    latents_path = out_dir / f"{tag}_latents.pt"
    atomic_write(latents_path, lambda handle: torch.save(result.latents.cpu(), handle))
    log.info("inverted %d image(s) into %s (%s space): reconstruction PSNR %.2f dB (lowest "
             "%.2f), %s %.4g; latents in %s", len(images), generator.name, generator.space,
             summary["psnr"], summary["psnr_min"], distance.describe(), summary["distance"],
             latents_path)
    return result.latents


def _latents(cfg: DictConfig, generator, classes: list[int] | None, needs_classes: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents to edit and their classes (None: unconditional): a latents file, or seeds;
    with ``classes``, each latent once with each class (latent-major)."""

    chosen = None if classes is None else torch.tensor(classes)
    if cfg.latents:
        path = Path(cfg.latents)
        expected = tuple(generator.latent_shape)
        want = (f"pass an {' x '.join(map(str, ('N',) + expected))} float tensor saved with "
                f"torch.save, for generator {generator.name!r} ({generator.space} space)")
        if not path.is_file():
            raise UserError(f"latents={path}: no such file; {want}")
        try:
            latents = load_weights_only(path)
        except RefusedPickle as err:
            raise UserError(f"latents={path}: torch.load(weights_only=True) refuses this file: it "
                            f"references the Python globals {err.found[:8]} (unpickling them could "
                            f"run code); {want}") from None
        except UnreadableFile as err:
            raise UserError(f"latents={err}; {want}") from None
        if not torch.is_tensor(latents) or latents.layout != torch.strided or \
                not latents.is_floating_point() or \
                latents.dim() != len(expected) + 1 or tuple(latents.shape[1:]) != expected or \
                not len(latents):
            held = (f"a tensor of shape {tuple(latents.shape)} and dtype "
                    f"{str(latents.dtype).removeprefix('torch.')}" if torch.is_tensor(latents) else
                    f"a {type(latents).__name__}, not a tensor")
            raise UserError(f"latents={path} holds {held}; {want}")
        if not torch.isfinite(latents).all():
            raise UserError(f"latents={path} holds NaN or infinite values; {want} with "
                                 "finite values")
        if chosen is None:
            if needs_classes:
                raise UserError("a latents file holds no classes, and these latents or "
                                     "directions need them: pass classes=[...] (or use seeds=[...])")
            return latents.float().to(generator.device), None
        k = len(classes)
        return (latents.float().repeat_interleave(k, 0).to(generator.device),
                chosen.repeat(latents.shape[0]).to(generator.device))
    seeds = list(cfg.seeds) if isinstance(cfg.seeds, (list, ListConfig)) else [cfg.seeds]
    if not seeds:
        raise UserError("seeds=[] gives nothing to edit: pass seeds=[0,1,2] or latents=<file>")
    if chosen is None:
        draws = [generator.draw(1, torch.Generator().manual_seed(int(s))) for s in seeds]
        y = torch.cat([d[1] for d in draws]) if generator.num_classes else None
        return torch.cat([d[0] for d in draws]), y
    latents = []
    for s in seeds:
        for c in classes:  # the seed's latent as draw() gives it, with class c instead
            rng = torch.Generator().manual_seed(int(s))
            generator.sample_classes(1, rng)
            latents.append(generator.sample(1, rng, y=torch.tensor([c]).to(generator.device)))
    return torch.cat(latents), chosen.repeat(len(seeds)).to(generator.device)


def _input_transform(cfg: DictConfig, generator) -> None:
    """``input_transform={translate: [x, y], angle: a}``: a StyleGAN3's input transform for every
    image of the edit (translation in half-image units, rotation in degrees)."""
    spec = cfg.get("input_transform")
    if spec is None:
        return
    if not callable(getattr(generator, "set_input_transform", None)):
        raise UserError(f"input_transform: generator {generator.name!r} has no input transform "
                        "(StyleGAN3 has); leave it out")
    if not hasattr(spec, "keys") or set(spec.keys()) - {"translate", "angle"}:
        raise UserError(f"input_transform must be {{translate: [x, y], angle: degrees}}, got {spec}")
    translate = numbers(spec.get("translate", [0.0, 0.0]), "input_transform.translate")
    if len(translate) != 2:
        raise UserError(f"input_transform.translate must be [x, y], got {list(translate)}")
    angle = number(spec.get("angle", 0.0), "input_transform.angle", low=-360, high=360)
    generator.set_input_transform(translate, angle)


def edit(cfg: DictConfig) -> Path:
    """Renders the traversal; returns the path written."""
    path = Path(cfg.directions)
    if not path.is_file():
        raise UserError(f"directions file not found: {path}")
    if cfg.format not in ("png", "gif"):
        raise UserError(f"format={cfg.format}: use png or gif")
    if cfg.out and (Path(cfg.out).is_dir() or Path(cfg.out).suffix.lower() != f".{cfg.format}"):
        raise UserError(f"out={cfg.out}: pass the path of the {cfg.format} file to write, "
                             f"ending in .{cfg.format} (format={cfg.format})")
    alphas = check_numbers(cfg)
    directions = Directions.load(path)
    generator = load_run_generator(path, cfg.generator, cfg.generator_from_run,
                                   recorded=directions.meta.get("generator_source"),
                                   device=cfg.get("device"),
                                   trusted_modules=cfg.get("trusted_modules"))
    directions.check_generator(generator, source=str(path))
    _input_transform(cfg, generator)
    directions.to(generator.device)
    if alphas is None:  # alphas=auto: the range the directions were trained on
        r, where = directions.alpha_range(default=cfg.get("default_alpha_range"))
        log.info("alphas=auto: -%g..%g, the alpha range %s", r, r, where)
        alphas = torch.linspace(-r, r, 7).tolist()
    indices = _indices(cfg.direction, directions.num_directions)
    classes = _classes(cfg, generator, directions)
    images = _images(cfg, generator, classes)
    name = "direction" + "-".join(f"{k:02d}" for k in indices)
    if classes is not None:
        name += "_class" + "-".join(map(str, classes))
    tag = None
    if images is not None:
        first = _image_paths(cfg)[0]
        tag = first.stem if len(images) == 1 else f"{first.stem}+{len(images) - 1}"
        name = f"{tag}_{name}"
    out = Path(cfg.out) if cfg.out else path.parent / "edits" / f"{name}.{cfg.format}"
    if images is not None:
        y = None if classes is None else torch.tensor(classes * len(images)).to(generator.device)
        latents = _invert(cfg, generator, images, out.parent, tag, y)
    else:
        needs = directions.class_dependent or bool(generator.num_classes and generator.space == "z")
        latents, y = _latents(cfg, generator, classes, needs)
    # One row per (direction, latent), direction-major; one column per alpha.
    rows = directions.traversal_rows(generator, latents, indices, alphas, y=y)
    grid = rows.reshape(-1, len(alphas), *rows.shape[2:])
    if cfg.format == "png":
        if images is not None:  # the real image first, then the edits of its reconstruction
            originals = images.to(grid).repeat(len(indices), 1, 1, 1)[:, None]
            grid = torch.cat([originals, grid], dim=1)
        save_grid(grid.flatten(0, 1), out, nrow=grid.shape[1])
    else:
        _save_gif(grid.transpose(0, 1), out, columns=latents.shape[0], fps=cfg.fps)
    rows = grid.shape[0]
    log.info("wrote %s (%d rows of %s, alphas %s)", out, rows,
             "direction x latent" if len(indices) > 1 else "latents", alphas)
    return out


def _save_gif(frames: torch.Tensor, path: Path, columns: int, fps: int) -> None:
    import torchvision
    from PIL import Image

    images = []
    for frame in list(frames) + list(frames.flip(0))[1:-1]:  # there and back
        grid = torchvision.utils.make_grid(frame.cpu().clamp(-1, 1) * 0.5 + 0.5, nrow=columns,
                                           padding=1, pad_value=0.5)
        array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        images.append(Image.fromarray(array).resize((array.shape[1] * 2, array.shape[0] * 2),
                                                    Image.NEAREST))
    atomic_write(path, lambda handle: images[0].save(handle, format="GIF", save_all=True,
                                                     append_images=images[1:],
                                                     duration=int(1000 / fps), loop=0))


@hydra.main(version_base="1.3", config_path="configs", config_name="edit")
def _hydra_main(cfg: DictConfig) -> None:
    exit_on_setup_error(edit, cfg, log)


def main() -> None:
    """The command line: a mistake in it is one line before Hydra runs the job."""
    check_command_line("edit", sys.argv[1:], "edit")
    _hydra_main()


if __name__ == "__main__":
    main()
