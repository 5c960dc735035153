"""Preemption: a run told to stop by its scheduler saves, stops cleanly and is requeued.

Clusters warn a job before they kill it: SLURM sends SIGTERM before a preemption or a
``scancel`` (then SIGKILL after its KillWait, 30 s by default), and any signal asked for with
``sbatch --signal=USR1@120`` that long before the time limit. ``Preemption`` turns such a signal
into a clean stop:

1. the handler only records the signal (nothing is saved inside a signal handler, which can
   interrupt a training step halfway);
2. at the end of the batch under way, every process learns whether any process was signalled
   (one all-reduce of a flag), the run's ``LastCheckpoint`` writes ``last.ckpt`` (the exact
   state at a batch boundary, so the resumed run equals an uninterrupted one), and the trainer
   stops; the end-of-fit work (exports, evaluation) is skipped (``stopped_by_signal``);
3. for a signal in ``requeue_on`` inside a SLURM job (``SLURM_JOB_ID`` set), train.py asks SLURM
   to requeue the job (``scontrol requeue <id>``). SIGTERM is not in ``requeue_on`` by default:
   it is also what ``scancel`` sends, and a cancelled job must stay cancelled (a preemption with
   SLURM's ``PreemptMode=REQUEUE`` is requeued by SLURM itself).

The requeued job runs the same command; with ``ckpt_path=auto`` (``cluster=slurm`` sets it) it
resumes from ``last.ckpt`` when there is one. Lightning's own SLURM handler (which saves an
``hpc_ckpt`` from inside the signal handler and resumes from that instead) is replaced while
training runs, so there is one path for every signal.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
from typing import Sequence

import pytorch_lightning as pl

from common.callbacks import LastCheckpoint
from common.errors import UserError
from common.training import batches_done

log = logging.getLogger("preemption")


def _signal(name: str) -> signal.Signals:
    try:
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise UserError(f"unknown signal {name!r}: use names such as SIGUSR1, SIGTERM") from None


class Preemption(pl.Callback):
    """Saves ``last.ckpt`` and stops at the next batch end when the process gets a signal.

    Args:
        save_on: the signals that save and stop the run (names: ``SIGUSR1``, ``SIGTERM``, ...).
        requeue_on: those of them after which the job is requeued (inside a SLURM job only).
        requeue_command: the command that requeues job ``{job_id}``.
    """

    def __init__(self, save_on: Sequence[str] = ("SIGUSR1", "SIGTERM"),
                 requeue_on: Sequence[str] = ("SIGUSR1",),
                 requeue_command: str = "scontrol requeue {job_id}") -> None:
        super().__init__()
        self.save_on = [_signal(s) for s in save_on]
        self.requeue_on = [_signal(s) for s in requeue_on]
        unknown = set(self.requeue_on) - set(self.save_on)
        if unknown:
            raise UserError(f"requeue_on {sorted(s.name for s in unknown)} must also be in save_on")
        self.requeue_command = requeue_command
        self.received: signal.Signals | None = None  # the signal this process got
        self.stopped_by: str | None = None           # set once the run stopped for a signal
        self._previous: dict[signal.Signals, object] = {}

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    # Installed at the start of training, after Lightning's own handlers (registered when
    # fit begins), so that these replace them while batches run.
    def on_train_start(self, trainer, pl_module) -> None:
        self.received, self.stopped_by = None, None
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: signals cannot be caught, preemption is off")
            return
        for sig in self.save_on:
            self._previous[sig] = signal.signal(sig, self._record)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every process takes the same decision at the same batch (SLURM signals every task,
        # but not at the same instant).
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        self.stopped_by = self.received.name if self.received is not None else "another process's signal"
        for callback in trainer.callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.ensure_saved(trainer)
                break
        else:
            log.warning("%s: no LastCheckpoint callback, so nothing was saved", self.stopped_by)
        trainer.should_stop = True
        log.warning("%s received: stopped after batch %d, checkpoint saved", self.stopped_by,
                    batches_done(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def wants_requeue(self) -> bool:
        return self.received in self.requeue_on

    def requeue(self) -> bool:
        """Asks SLURM to requeue this job when the signal calls for it; True if it did."""
        job = os.environ.get("SLURM_JOB_ID")
        if not self.wants_requeue or not job:
            return False
        command = shlex.split(self.requeue_command.format(job_id=job))
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.error("could not requeue job %s (%s): resume it by hand with ckpt_path=last", job, err)
            return False
        if result.returncode != 0:
            log.error("`%s` failed (%s): resume the run by hand with ckpt_path=last",
                      " ".join(command), result.stderr.strip())
            return False
        log.warning("requeued SLURM job %s: it resumes from last.ckpt", job)
        return True


def stopped_by_signal(trainer) -> str | None:
    """The signal that stopped this run early (None if it ran to its end): the end-of-fit
    exports and the evaluation are skipped then, the run is not finished."""
    if trainer is None:
        return None
    for callback in trainer.callbacks:
        if isinstance(callback, Preemption) and callback.stopped_by:
            return callback.stopped_by
    return None
