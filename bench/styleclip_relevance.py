"""What StyleCLIP's channel relevance costs (editing/styleclip.py): 2 x images x channels renders,
each read by the CLIP, once per generator and CLIP (then cached; a text pair's direction is a
matrix-vector product).

For each case, the probe is timed on ``--time-images`` images x ``--time-channels`` channels
(the same batched code as the method: ``accumulate_relevance``), and the full computation
(``--images`` images x every channel of S but the ToRGB layers') projected from that rate:

* the built-in StyleGAN2 at 32 px (the shipped file) with the shipped world CLIP;
* the published config-f StyleGAN2 at 256 px (random weights: the time does not depend on
  them), with the world CLIP (images resized to 32 px) and with open_clip's ViT-B-32 (random
  weights, 224 px).

    .venv/bin/python bench/styleclip_relevance.py
    .venv/bin/python bench/styleclip_relevance.py --cases builtin --time-channels 64

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from clip_models import load_clip  # noqa: E402
from editing.styleclip import accumulate_relevance, probe_styles, probed_channels, style_statistics  # noqa: E402
from generators import load_generator, random_generator  # noqa: E402


class VitB32:
    """open_clip's ViT-B-32 with random weights, behind the project's CLIP interface."""

    def __new__(cls):
        import logging
        import tempfile

        import open_clip

        logging.getLogger().setLevel(logging.ERROR)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        path = Path(tempfile.mkdtemp()) / "open_clip_pytorch_model.bin"
        torch.save(model.state_dict(), path)
        return load_clip(path, arch="ViT-B-32")


def case(name: str):
    if name == "builtin":
        return "built-in StyleGAN2, 32 px", load_generator("stylegan2_shapes32.pt", space="s"), load_clip()
    g = random_generator("stylegan2", init_seed=0, space="s", resolution=256, style_dim=512, n_mlp=8,
                         channels=None, channel_multiplier=2)
    if name == "f256-world":
        return "config-f StyleGAN2, 256 px", g, load_clip()
    return "config-f StyleGAN2, 256 px", g, VitB32()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["builtin", "f256-world", "f256-vit"])
    parser.add_argument("--images", type=int, default=64, help="the probe's images (the default)")
    parser.add_argument("--time-images", type=int, default=2)
    parser.add_argument("--time-channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| generator | CLIP | channels probed | renders for 64 images | measured renders/s | "
          "projected time |")
    print("|---|---|---|---|---|---|")
    for name in args.cases:
        label, generator, clip = case(name)
        channels = probed_channels(generator, torgb=False)
        _, std = style_statistics(generator, 200, 0)
        styles, classes = probe_styles(generator, 0, 0, args.time_images)
        timed = channels[:args.time_channels]
        accumulate_relevance(generator, clip, styles[:1], None, timed[:1], std, 5.0, args.batch_size)
        started = time.perf_counter()
        accumulate_relevance(generator, clip, styles, classes, timed, std, 5.0, args.batch_size)
        seconds = time.perf_counter() - started
        rate = 2 * args.time_images * len(timed) / seconds
        total = 2 * args.images * len(channels)
        projected = total / rate
        clip_name = "world (32 px)" if clip.kind == "world" else f"{clip.arch} ({clip.resolution} px)"
        when = f"{projected / 60:.1f} min" if projected < 7200 else f"{projected / 3600:.1f} h"
        print(f"| {label} | {clip_name} | {len(channels):,} | {total:,} | {rate:.1f} | {when} |")


if __name__ == "__main__":
    main()
