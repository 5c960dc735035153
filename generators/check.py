"""The start-up check of a generator: what every method relies on, tried on one small batch.

Every builder a generator config names (``load_generator``, ``random_generator``,
``ModuleGenerator``) ends with ``check_generator``, so train.py, evaluate.py, edit.py and the
explorer refuse a generator that breaks the interface before any work, with one line naming
every problem and the setting that fixes it (a builder's error reaches the scripts wrapped by
Hydra's instantiate, which they report as one line and exit status 2). It costs two forward
passes, of two images and of one (a third of one image for a conditional generator).
"""
from __future__ import annotations

import torch

from common.errors import UserError
from generators.base import Generator

TOLERANCE = 0.05  # how far a bounded generator's images may stray outside [-1, 1]


class GeneratorCheckError(UserError):
    """A generator that does not meet the interface (generators/base.py)."""


def check_generator(generator: Generator, n: int = 2) -> None:
    """Check a built generator on ``n`` latents: output shape ``n x 3 x H x W`` with H == W ==
    ``resolution``, values in [-1, 1] (a tolerance of ``TOLERANCE``; only non-negative values
    are refused from any generator, a sign of [0, 1] or [0, 255] images), latents of the
    editing space accepted, images on the latents' device, the same image for the same latent
    on a second call in a smaller batch (fixed noise, eval mode), frozen weights, a weights hash
    in its identity, and classes that change the image where ``num_classes`` is set (space z).

    Raises:
        GeneratorCheckError: naming every problem found (or the first one that stops the rest).
    """
    if not isinstance(generator, Generator):
        raise GeneratorCheckError(
            f"{type(generator).__name__} is not a generators.base.Generator: wrap your network "
            "with generators.adapter.ModuleGenerator (README, 'Your own generator')")
    name = generator.name

    def fail(problems: list[str]) -> GeneratorCheckError:
        return GeneratorCheckError(f"generator {name!r} fails the start-up check: "
                                   + "; ".join(problems))

    problems = []
    trainable = [k for k, p in generator.named_parameters() if p.requires_grad]
    if trainable:
        problems.append(f"{len(trainable)} parameters require grad (e.g. {trainable[0]}): "
                        "call freeze()")
    if any(m.training for m in generator.modules()):
        problems.append("it is in training mode: call freeze() (or eval())")
    if not generator.sha256:
        problems.append("its identity has no weights hash: set sha256 "
                        "(generators.state_sha256(module))")
    with torch.no_grad():
        try:
            latent, y = generator.draw(n, torch.Generator().manual_seed(0))
            shape = tuple(latent.shape)
            if shape != (n, *generator.latent_shape):
                raise UserError(f"sample({n}) gave latents {shape}, expected "
                                 f"{(n, *generator.latent_shape)}")
            images = generator(latent, y)
        except Exception as err:  # noqa: BLE001 - whatever the network raised is the message
            classes = (f"num_classes={generator.num_classes}: it is called with classes y, drop "
                       "num_classes if the network takes none" if generator.num_classes else
                       "a conditional network needs num_classes")
            raise fail(problems + [
                f"forward on latents {' x '.join(map(str, (n, *generator.latent_shape)))} failed "
                f"({type(err).__name__}: {err}); is latent_dim ({generator.latent_dim}) the size "
                f"the network reads? ({classes}){_input_hint(generator, latent, y)}"]) from err
        if not torch.is_tensor(images):
            raise fail(problems + [f"forward returned a {type(images).__name__}, not a tensor"])
        problems += _image_problems(generator, images, n)
        if images.device != latent.device:
            problems.append(f"images on {images.device} for latents on {latent.device}: make "
                            "tensors inside forward on the latent's device")
        again = generator(latent[:1], None if y is None else y[:1])
        if again.shape != images[:1].shape or not torch.allclose(again, images[:1], rtol=1e-4,
                                                                 atol=1e-4, equal_nan=True):
            problems.append(
                "the same latent gave another image on a second call, in a smaller batch: fix "
                "the noise (no random draws in forward) and call eval() (batch norm or dropout "
                "in training mode make an image depend on its batch)")
        elif y is not None and generator.space == "z" and generator.num_classes > 1:
            # against ``again``, drawn in the same batch size: a batch of two and a batch of
            # one may round differently (another BLAS kernel), an ignored class never does
            other = generator(latent[:1], (y[:1] + 1) % generator.num_classes)
            if torch.allclose(other, again):
                problems.append(f"num_classes={generator.num_classes} but the class changes "
                                "nothing: pass y to the network (the call hook) or drop "
                                "num_classes")
    if problems:
        raise fail(problems)


def _input_hint(generator: Generator, latent: torch.Tensor, y: torch.Tensor | None) -> str:
    """For your own network (the adapter's ``input_shape`` and ``call_module``): the setting
    that feeds it latents in the shape it reads. A network that runs on ``N x d x 1 x 1`` (a
    DCGAN's first transposed convolution) is told so; the others get both fixes."""
    if not (hasattr(generator, "input_shape") and hasattr(generator, "call_module")):
        return ""
    d, shape = generator.latent_dim, generator.input_shape
    if shape is not None:
        return (f"; with input_shape: {list(shape)} the network is called with latents "
                f"N x {' x '.join(map(str, shape))}: set the shape it reads, or override "
                "call_module")
    try:
        images = generator.call_module(latent.reshape(latent.shape[0], d, 1, 1), y)
        runs = torch.is_tensor(images) and images.ndim == 4 and images.shape[0] == latent.shape[0]
    except Exception:  # noqa: BLE001 - only a hint: it does not run on that shape either
        runs = False
    if runs:
        return (f"; it runs on latents N x {d} x 1 x 1: set input_shape: [{d}, 1, 1] (the "
                f"methods still edit N x {d} latents)")
    return (f"; a network that reads the latent in another shape (N x {d} x 1 x 1 for a DCGAN) "
            f"needs input_shape: [{d}, 1, 1] (that shape), or a subclass that overrides "
            "call_module (docs/generators.md, 'Your own generator')")


def _image_problems(generator: Generator, images: torch.Tensor, n: int) -> list[str]:
    r = generator.resolution
    if images.ndim != 4 or tuple(images.shape) != (n, 3, r, r):
        hint = ""
        if images.ndim == 4 and images.shape[0] == n and images.shape[2] == images.shape[3]:
            hint = (f": set resolution: {images.shape[2]}" if images.shape[1] == 3 else
                    ": the interface draws RGB (repeat a grey channel in the call hook)")
        return [f"images of shape {tuple(images.shape)} for {n} latents, expected "
                f"{n} x 3 x {r} x {r} (resolution {r}){hint}"]
    if not torch.isfinite(images).all():
        return ["the images hold NaN or infinite values"]
    lo, hi = float(images.min()), float(images.max())
    seen = f"images in [{lo:.3g}, {hi:.3g}]"
    if lo >= 0 and hi >= 0.5:  # a [-1, 1] generator draws dark pixels too
        top = 1 if hi <= 1 + TOLERANCE else 255
        return [f"{seen}, none negative: they look like [0, {top}] images: set "
                f"output_range: [0, {top}] (ModuleGenerator converts them to [-1, 1])"]
    if generator.bounded_output and (lo < -1 - TOLERANCE or hi > 1 + TOLERANCE):
        return [f"{seen}, outside [-1, 1]: set output_range to the network's range, or "
                "bounded: false for a network only roughly in [-1, 1] (no tanh, as StyleGAN2)"]
    return []
