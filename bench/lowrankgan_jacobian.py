"""LowRankGAN's Jacobian on this CPU: the project's batched call against one pass per output.

J is the Jacobian of the channel-averaged image, resized to ``--size`` px (P = size^2 pixels),
with respect to one latent (d axes). Measured, at one latent:

- ``forward (batched)``: the project's ``image_jacobian(mode="forward")``, ``vmap`` over ``jvp``
  for the d axes in one call (what ``mode=auto`` takes when d <= P);
- ``reverse (batched)``: ``image_jacobian(mode="reverse")``, ``vmap`` over ``vjp`` for the P
  pixels in one call;
- ``one backward a pixel``: ``torch.autograd.functional.jacobian`` without vectorisation, the
  reference-style loop of P backward passes;
- ``one forward a latent axis``: a loop of d ``jvp`` calls.

On a large generator a loop is timed on its first ``--loop-limit`` items and the total
extrapolated linearly (said in the table); a batched call on a large generator runs in chunks
(``--chunk``). Generators: the built-in ``stylegan2_shapes32.pt`` (W, d = 64, 32 px) and a
random config-f StyleGAN2 at 256 px (W, d = 512).

    .venv/bin/python bench/lowrankgan_jacobian.py
    .venv/bin/python bench/lowrankgan_jacobian.py --generator builtin --size 32
"""
from __future__ import annotations

import argparse
import time

import torch
from stylegan2_forward import build, config_f
from torch.func import jvp

from generators import load_generator
from lightning_modules.fit_free.lowrankgan import image_jacobian


def pixels_of(g, size: int):
    def image(v: torch.Tensor) -> torch.Tensor:
        x = g(v[None]).mean(1, keepdim=True)
        if x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                                align_corners=False, antialias=True)
        return x.flatten()
    return image


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loop_time(step, total: int, limit: int) -> tuple[float, str]:
    """Seconds for ``total`` calls of ``step(i)``, measured on at most ``limit`` of them."""
    n = min(total, limit)
    seconds = timed(lambda: [step(i) for i in range(n)])
    return seconds * total / n, ("measured" if n == total else f"{n} of {total}, extrapolated")


def bench(name: str, g, size: int, chunk: int | None, loop_limit: int) -> list[tuple]:
    z = g.sample(1, torch.Generator().manual_seed(0))[0]
    d, p = z.numel(), size * size
    image = pixels_of(g, size)
    rows = []
    for mode in ("forward", "reverse"):
        passes = d if mode == "forward" else p
        if chunk is None or passes <= chunk:
            seconds, how = timed(lambda: image_jacobian(g, z, size, mode=mode)), "measured"
        else:  # chunks of the batched call, extrapolated
            axes = torch.eye(d)[:chunk]
            if mode == "forward":
                one = timed(lambda: torch.func.vmap(lambda t: jvp(image, (z,), (t,))[1])(axes))
            else:
                _, pull = torch.func.vjp(image, z)
                one = timed(lambda: torch.func.vmap(pull)(torch.eye(p)[:chunk]))
            seconds, how = one * passes / chunk, f"1 chunk of {chunk}, extrapolated"
        rows.append((name, d, p, f"{mode} (batched)", seconds, how))

    def backward(i: int, out=image(z.requires_grad_(True))) -> None:
        torch.autograd.grad(out[i], z, retain_graph=True)

    seconds, how = loop_time(backward, p, loop_limit)
    rows.append((name, d, p, "one backward a pixel", seconds, how))
    eye = torch.eye(d)
    seconds, how = loop_time(lambda i: jvp(image, (z.detach(),), (eye[i],)), d, loop_limit)
    rows.append((name, d, p, "one forward a latent axis", seconds, how))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", choices=["builtin", "stylegan2-256", "all"], default="all")
    parser.add_argument("--size", type=int, default=32, help="Jacobian grid side (P = size^2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=16, help="batched chunk on the 256 px model")
    parser.add_argument("--loop-limit", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    rows = []
    if args.generator in ("builtin", "all"):
        g = load_generator("stylegan2_shapes32.pt", space="w")
        rows += bench("built-in StyleGAN2 32 px", g, args.size, None, args.loop_limit)
    if args.generator in ("stylegan2-256", "all"):
        g = build(config_f(256), space="w")
        rows += bench("config-f StyleGAN2 256 px", g, args.size, args.chunk, min(args.loop_limit, 8))
    print("| generator | d | pixels | how J is computed | seconds | speed-up vs one backward a pixel | timing |")
    print("|---|---|---|---|---|---|---|")
    for name, d, p, how, seconds, note in rows:
        reference = next(r[4] for r in rows if r[0] == name and r[3] == "one backward a pixel")
        print(f"| {name} | {d} | {p} | {how} | {seconds:.2f} | {reference / seconds:.1f}x | {note} |")


if __name__ == "__main__":
    main()
