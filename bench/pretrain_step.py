"""Time per batch of GAN pretraining (generators/pretrain.py) on CPU, channels-last or not.

Builds the experiment's own config (``experiment=pretrain_stylegan2`` by default, or
``--experiment pretrain_dcgan``) through Hydra and ``train.instantiate_all``, and runs a real
Lightning fit of ``--batches`` batches for each setting of ``method.channels_last``:
a batch is a D step and a G step on 32 world renders, with lazy R1 every 16 batches and style
mixing as configured. A callback times every batch; the first ``--warmup`` are left out. Rounds
alternate the settings, so that a change of the machine's load reaches both alike. Prints a
markdown table: mean and median ms per batch and batches per second (the mean counts the R1
batches, so it is the throughput a run gets).

    .venv/bin/python bench/pretrain_step.py
    .venv/bin/python bench/pretrain_step.py --experiment pretrain_dcgan --threads 1

A benchmark, not a test: nothing under tests/ imports it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project is not installed
    sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from train import instantiate_all  # noqa: E402


class BatchTimer(pl.Callback):
    """Wall time of every training batch, in seconds."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def time_batches(experiment: str, channels_last: bool, batches: int, out_dir: str) -> list[float]:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "logger=none",
                                          f"paths.output_dir={out_dir}",
                                          f"++method.channels_last={channels_last}",
                                          "method.sample_every_n_steps=0"])
    parts = instantiate_all(cfg)
    timer = BatchTimer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         max_steps=batches * parts["module"].optimizer_steps_per_batch,
                         callbacks=[timer], default_root_dir=out_dir)
    trainer.fit(parts["module"], datamodule=parts["datamodule"])
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="pretrain_stylegan2")
    parser.add_argument("--batches", type=int, default=80, help="batches per fit")
    parser.add_argument("--warmup", type=int, default=16, help="first batches of a fit not counted")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as out_dir:
        for _ in range(args.rounds):
            for channels_last in (False, True):
                times[channels_last] += time_batches(args.experiment, channels_last,
                                                     args.batches, out_dir)[args.warmup:]
    print(f"\n{args.experiment}, batch as configured, {args.threads} thread(s), "
          f"{args.rounds} x {args.batches - args.warmup} timed batches per setting\n")
    print("| memory format | mean ms / batch | median ms / batch | batches / s |")
    print("|---|---|---|---|")
    for channels_last, t in times.items():
        mean = statistics.mean(t)
        print(f"| {'channels-last' if channels_last else 'contiguous (NCHW)'} | {mean * 1e3:.0f} | "
              f"{statistics.median(t) * 1e3:.0f} | {1 / mean:.2f} |")


if __name__ == "__main__":
    main()
