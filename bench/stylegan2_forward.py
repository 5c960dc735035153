"""Forward time of the StyleGAN2 generator (generators/stylegan2.py) per image on CPU.

Two tables, in markdown:

* the published config-f network at ``--resolution`` (256 px by default): widths from
  ``default_channels(resolution, channel_multiplier=2)``, style_dim 512, 8 mapping layers;
* the project's built-in size at 32 px (configs/experiment/pretrain_stylegan2.yaml: channels
  [64, 64, 64, 32], style_dim 64, 4 mapping layers); ``--no-builtin`` leaves it out.

Both are random (``generators.random_generator``, init_seed 0) and frozen: eval mode, the
generator's own fixed noise buffers, no graph (``torch.no_grad``, as a method renders its
unshifted batch). For each batch size, ms per image of

* **Z path**: ``G(z)`` in the ``z`` view: mapping network + synthesis;
* **W path**: ``G(w)`` in the ``w`` view, ``w`` mapped beforehand: synthesis only;
* **mapping alone**: ``w = M(z)``, what the Z path adds to the W path (too small to read as
  the difference of the two under a noisy load).

Every cell (batch size x path) is timed once a round, rounds repeated, after ``--warmup``
untimed rounds, so that a change of the machine's load reaches all cells alike; every figure
is the median over the repeats divided by the batch size.

    .venv/bin/python bench/stylegan2_forward.py
    .venv/bin/python bench/stylegan2_forward.py --resolution 128 --batch-sizes 1 4 --repeats 5

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from generators import random_generator  # noqa: E402
from generators.stylegan2 import StyleGAN2Generator, default_channels  # noqa: E402

# The project's built-in style-based generator (configs/experiment/pretrain_stylegan2.yaml).
BUILTIN_32 = {"resolution": 32, "style_dim": 64, "n_mlp": 4, "channels": [64, 64, 64, 32]}


def config_f(resolution: int) -> dict:
    """Keyword arguments of the published config-f generator at ``resolution`` px (channels
    None: the generator takes the published table, channel multiplier 2)."""
    return {"resolution": resolution, "style_dim": 512, "n_mlp": 8, "channels": None,
            "channel_multiplier": 2}


def build(kwargs: dict, space: str = "w") -> StyleGAN2Generator:
    """A random frozen StyleGAN2 generator (init_seed 0) in ``space``."""
    return random_generator("stylegan2", init_seed=0, space=space, **kwargs)


def describe(g: StyleGAN2Generator) -> str:
    mapping = sum(p.numel() for p in g.style.parameters())
    total = sum(p.numel() for p in g.parameters())
    return (f"{g.resolution} px, channels {g.channels}, style_dim {g.style_dim}, n_mlp {g.n_mlp}: "
            f"{total:,} parameters ({mapping:,} mapping, {total - mapping:,} synthesis)")


def time_paths(g: StyleGAN2Generator, batch_sizes: list[int], warmup: int, repeats: int
               ) -> dict[int, dict[str, float]]:
    """Median ms per image by batch size: ``z`` (mapping + synthesis), ``w`` (synthesis) and
    ``mapping`` (the mapping network alone). Every cell is timed once a round, in the same
    order, so that a change of the machine's load reaches all of them alike."""
    inputs = {}
    for batch_size in batch_sizes:
        z = torch.randn(batch_size, g.z_dim, generator=torch.Generator().manual_seed(batch_size))
        with torch.no_grad():  # psi = 1: G(z) in the z view equals G(w) in the w view
            inputs[batch_size] = {"z": z, "w": g.mapping(z)}

    def render(space: str, latent: torch.Tensor) -> None:
        g.set_view(space)
        g(latent)

    calls = {"z": lambda x: render("z", x["z"]), "w": lambda x: render("w", x["w"]),
             "mapping": lambda x: g.mapping(x["z"])}
    times = {b: {path: [] for path in calls} for b in batch_sizes}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for batch_size in batch_sizes:
                for path, call in calls.items():
                    start = time.perf_counter()
                    call(inputs[batch_size])
                    elapsed = time.perf_counter() - start
                    if i >= warmup:
                        times[batch_size][path].append(elapsed)
    g.set_view("w")
    return {b: {path: 1000.0 * statistics.median(t) / b for path, t in by_path.items()}
            for b, by_path in times.items()}


def table(g: StyleGAN2Generator, batch_sizes: list[int], warmup: int, repeats: int) -> str:
    lines = ["| batch | Z path ms/image (mapping + synthesis) | W path ms/image (synthesis) "
             "| mapping alone ms/image |", "|---:|---:|---:|---:|"]
    for batch_size, ms in time_paths(g, batch_sizes, warmup, repeats).items():
        lines.append(f"| {batch_size} | {ms['z']:.1f} | {ms['w']:.1f} | {ms['mapping']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256,
                        help="of the config-f generator (a power of two >= 8)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds (config-f table)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--builtin-repeats", type=int, default=30,
                        help="timed rounds (built-in 32 px table)")
    parser.add_argument("--no-builtin", action="store_true",
                        help="leave out the table of the built-in 32 px generator")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.builtin_repeats < 1 or args.warmup < 0:
        parser.error("--repeats and --builtin-repeats must be at least 1, --warmup at least 0")
    if min(args.batch_sizes) < 1:
        parser.error("--batch-sizes must be positive")
    default_channels(args.resolution)  # a clear error for a resolution without a table entry
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; random frozen "
          f"generators (init_seed 0), fixed noise, no graph; medians over the rounds after "
          f"{args.warmup} warm-up round(s)\n")

    g = build(config_f(args.resolution))
    print(f"config-f: {describe(g)}; {args.repeats} repeats\n")
    print(table(g, args.batch_sizes, args.warmup, args.repeats))
    del g

    if not args.no_builtin:
        g = build(BUILTIN_32)
        print(f"\nbuilt-in: {describe(g)}; {args.builtin_repeats} repeats\n")
        print(table(g, args.batch_sizes, args.warmup, args.builtin_repeats))


if __name__ == "__main__":
    main()
