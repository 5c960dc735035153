"""Forward time of the BigGAN generator (generators/biggan.py) per image.

The network is the one pytorch-pretrained-biggan 0.1.1 publishes as ``biggan-deep-128`` (the
package implements only BigGAN-deep; its 128 px config: channel_width 128, z_dim 128, 1000
classes, ten blocks 16 -> 1 ch, self-attention before block 8, 51 statistics rows), built with
random weights (no download): the time does not depend on the values. Frozen, eval mode, no
graph (``torch.no_grad``), truncation 0.4; for each batch size, ms per image of

* **G(z, y)**: the full forward (class embedding, condition, blocks, to RGB);
* **to 64 px**: ``features`` up to the last 64 px block, i.e. what the 128 px blocks and the
  output layer add is the difference (shown to see where the time goes).

Each cell is timed once a round, rounds repeated after ``--warmup`` untimed ones; figures are
medians divided by the batch size.

    .venv/bin/python bench/biggan_forward.py
    .venv/bin/python bench/biggan_forward.py --batch-sizes 1 8 --repeats 5 --device cuda

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

from generators.biggan import BigGANConfig, BigGANGenerator, GenBlock  # noqa: E402

#: pytorch-pretrained-biggan's default BigGANConfig: its biggan-deep-128.
BIGGAN_DEEP_128 = {"output_dim": 128, "z_dim": 128, "class_embed_dim": 128, "channel_width": 128,
                   "num_classes": 1000, "attention_layer_position": 8, "eps": 1e-4, "n_stats": 51,
                   "layers": [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8],
                              [False, 8, 8], [True, 8, 4], [False, 4, 4], [True, 4, 2],
                              [False, 2, 2], [True, 2, 1]]}


def build(device: str) -> BigGANGenerator:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = BigGANGenerator(BigGANConfig.from_dict(BIGGAN_DEEP_128), truncation=0.4, name="biggan-deep-128")
    return g.freeze().to(device)


def layer_before_last_up(g: BigGANGenerator) -> int:
    """The feature layer that ends at 64 px: the output of the module before the last
    up-sampling block (feature layer k is the output of ``generator.layers[k - 1]``)."""
    ups = [k for k, m in enumerate(g.generator.layers) if isinstance(m, GenBlock) and m.up_sample]
    return ups[-1]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(g: BigGANGenerator, batch_sizes: list[int], warmup: int, repeats: int,
                 device: str) -> dict[int, dict[str, float]]:
    stop = layer_before_last_up(g)
    inputs = {b: g.draw(b, torch.Generator().manual_seed(b)) for b in batch_sizes}
    calls = {"full": lambda z, y: g(z, y), "to64": lambda z, y: g.features(z, stop, y)}
    times = {b: {k: [] for k in calls} for b in batch_sizes}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for b in batch_sizes:
                for key, call in calls.items():
                    sync(device)
                    start = time.perf_counter()
                    call(*inputs[b])
                    sync(device)
                    if i >= warmup:
                        times[b][key].append(time.perf_counter() - start)
    return {b: {k: 1000.0 * statistics.median(t) / b for k, t in by.items()} for b, by in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    g = build(args.device)
    params = sum(p.numel() for p in g.parameters())
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; biggan-deep-128 (random weights): {params:,} "
          f"parameters; truncation 0.4; medians of {args.repeats} rounds after {args.warmup} "
          "warm-up round(s)\n")
    print("| batch | G(z, y) ms/image | up to 64 px ms/image |\n|---:|---:|---:|")
    for b, ms in time_forward(g, args.batch_sizes, args.warmup, args.repeats, args.device).items():
        print(f"| {b} | {ms['full']:.1f} | {ms['to64']:.1f} |")


if __name__ == "__main__":
    main()
