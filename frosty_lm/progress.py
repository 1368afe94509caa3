"""Following a run: the Rich bar on a terminal, and plain lines (step, train loss, characters/s, ETA; each
validation; the run's time estimated early) everywhere else (a pipe, nohup, a batch job, CI) and in train.log; the
console's lines (Lightning's quieted, a parallel sweep's job named, other ranks' left out)."""
from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from datetime import timedelta

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, Timer
from lightning.pytorch.utilities import rank_zero_only

from frosty_lm.cli import FILE_ONLY
from frosty_lm.config import is_int, is_number, must
from frosty_lm.machine import error_line

log = logging.getLogger("frosty")


class StepProgressBar(RichProgressBar):
    """One bar over the whole run (global step of max_steps), not one per epoch: an epoch is only a nominal pass."""

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if self.trainer.max_steps > 0 else super().total_train_batches

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self.progress is not None:  # named "Training" (Lightning names its bar after the epoch)
            name = f"[{self.theme.description}]Training" if self.theme.description else "Training"
            self.train_progress_bar_id = self.progress.add_task(name, total=self.total_train_batches)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pass  # the bar is the run's: not reset every epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)


def _no_tips(record: logging.LogRecord) -> bool:
    message = record.getMessage()  # a tip, or Lightning's own line for a Ctrl-C that train.py reports itself
    return "Tip:" not in message and "Detected KeyboardInterrupt" not in message


def quiet_lightning() -> None:
    """Silence Lightning's advertisements and the warnings that do not apply: Frosty's training stream resumes exactly
    without loader state, checkpoint directories are reused on purpose, an epoch is nominal, a GPU whose peak Lightning
    lacks gets no MFU, loader workers would only add processes, and the val loss is summed across processes already.
    Calling it again adds nothing."""
    lightning = logging.getLogger("lightning")  # its lines go through Hydra's handlers only: with its own console
    for handler in list(lightning.handlers):  # handler too, each would print twice, once without the job's prefix
        lightning.removeHandler(handler)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tips)
    if threading.excepthook is threading.__excepthook__:  # a disk error in TensorBoard's writer thread: the run's
        threading.excepthook = lambda args: error_line(args.exc_value) or threading.__excepthook__(args)  # line
    warnings.filterwarnings("ignore", message=r".*(IterableDataset.*__len__|treespec|sync_dist=True).*")
    warnings.filterwarnings("ignore", message=r".*(dataloader is not resumable|Checkpoint directory .* exists and is "
                                              r"not empty|smaller than the logging interval|The dirpath has changed "
                                              r"from|FLOPs not found for|does not have many workers).*")


def keep_off_console(prefix: str = "") -> None:
    """Console handlers drop FILE_ONLY lines and the other ranks' lines of Frosty's (rank 0 speaks for the run), and
    prefix each (a parallel sweep's job name, as jobs interleave)."""
    for handler in logging.getLogger().handlers:
        if type(handler) is not logging.StreamHandler:  # the console only; train.log is a FileHandler
            continue
        handler.addFilter(_off_console)  # (once: logging skips a filter it has)
        inner = handler.formatter.inner if isinstance(handler.formatter, _Prefixed) else handler.formatter
        handler.setFormatter(_Prefixed(inner or logging.Formatter(), prefix) if prefix else inner)


def _off_console(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False) and (record.name != "frosty" or rank_zero_only.rank == 0)


class _Prefixed(logging.Formatter):
    def __init__(self, inner: logging.Formatter, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(self.prefix + line for line in self.inner.format(record).split("\n"))


def duration(seconds: float) -> str:  # 3725.2 -> '1:02:05'; 65 -> '01:05'
    if not seconds < 100 * 365 * 86400:  # (an ETA of trainer.max_steps=10000000000000000)
        return "over 100 years"
    return str(timedelta(seconds=round(seconds))).removeprefix("0:")


class ProgressLines(L.Callback):
    """Rank 0's lines: every `every_seconds` of training or `every_n_steps` steps, whichever first (null: never), one
    per validation (also into `record`, train.fit's RunRecord), and the run's time estimated from the `estimate_after`
    steps after the first (a warm-up, far slower on a GPU). Training time leaves out validation and checkpointing."""

    def __init__(self, every_seconds: float | None = 30.0, every_n_steps: int | None = None,
                 estimate_after: int = 10) -> None:
        key = "callbacks.progress_lines."
        must(every_seconds is None or is_number(every_seconds) and every_seconds > 0, key + "every_seconds",
             every_seconds, "a positive number of seconds, or null")
        must(every_n_steps is None or is_int(every_n_steps) and every_n_steps > 0, key + "every_n_steps",
             every_n_steps, "a positive integer, or null")
        must(is_int(estimate_after) and estimate_after > 0, key + "estimate_after", estimate_after,
             "a positive integer")
        self.every_seconds, self.every_n_steps, self.estimate_after = every_seconds, every_n_steps, estimate_after
        self.on_console = True  # set by train.fit: False while the Rich bar shows the progress
        self.record, self.validated = None, None  # the last validation's fields, for the record once it saved
        self._reset(0)

    def _reset(self, step: int) -> None:  # at the start of training, from trainer.global_step
        self.train_seconds = self.val_seconds = 0.0
        self.steps = self.validations = self.chars = 0  # of this process's training (a resumed run: since resume)
        self._phase, self._since = "train", time.monotonic()
        self._line = {"step": step, "time": 0.0, "chars": 0}  # at the last progress line
        self._loss_sum, self._loss_count = 0.0, 0
        self._step_seen = step  # trainer.global_step at the last batch that ended a step
        self._first_step = 0.0  # training seconds of the first step: warm-up (a GPU's far more), left out of rates
        self._started = time.monotonic()

    @property
    def _where(self) -> dict | None:  # logging's `extra=` for the lines: train.log only beside the Rich bar
        return None if self.on_console else FILE_ONLY

    def _train_time(self, now: float) -> float:
        return self.train_seconds + (now - self._since if self._phase == "train" else 0.0)

    def _enter(self, phase: str) -> None:  # "train", "val" or "ended": the phase that ran adds to its time
        now = time.monotonic()
        if self._phase == "train":
            self.train_seconds += now - self._since
        elif self._phase == "val":
            self.val_seconds += now - self._since
        self._phase, self._since = phase, now

    def on_train_start(self, trainer, pl_module) -> None:
        self._reset(trainer.global_step)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._phase == "train":
            self._enter("val")

    def on_train_end(self, trainer, pl_module) -> None:
        self._enter("ended")
        self._record_validation()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.chars += batch[0].numel() * trainer.world_size  # every process's
        if trainer.global_step == self._step_seen:  # gradients still accumulating: the step is not done
            return
        self._step_seen = trainer.global_step
        self.steps += 1
        loss = getattr(pl_module, "step_loss", None)  # FrostyLM's mean loss of the step's batches
        if loss is not None:  # summed without a sync: read only when a line is written
            self._loss_sum, self._loss_count = self._loss_sum + loss.float(), self._loss_count + 1
        if not trainer.is_global_zero:
            return
        now = time.monotonic()
        if self.steps == 1:
            self._first_step = self._train_time(now)
        if self.steps == self.estimate_after + 1:
            self._log_estimate(trainer, now)
        every_steps = self.every_n_steps and trainer.global_step - self._line["step"] >= self.every_n_steps
        every_time = self.every_seconds and self._train_time(now) - self._line["time"] >= self.every_seconds
        if every_steps or every_time:
            self._log_progress(trainer, now)

    def _log_estimate(self, trainer, now: float) -> None:
        remaining = self.eta(trainer, now)
        if remaining is not None:
            validations = (f"validations at their {self.val_seconds / self.validations:.1f} s each" if self.validations
                           else "validations not yet included")
            log.info("time estimate: %s for the remaining %d steps (%.0f ms/step over the %d after the first; %s)",
                     duration(remaining), max(0, trainer.max_steps - trainer.global_step),
                     1000 * self._step_time(now), self.steps - 1, validations, extra=self._where)

    def _log_progress(self, trainer, now: float) -> None:
        train_time = self._train_time(now)
        window = train_time - self._line["time"]
        speed = (self.chars - self._line["chars"]) / window if window > 0 else float("nan")
        loss = (self._loss_sum / self._loss_count).item() if self._loss_count else float("nan")
        step, max_steps = trainer.global_step, trainer.max_steps
        of = f"/{max_steps} ({100 * step / max_steps:.0f}%)" if max_steps > 0 else ""
        eta = self.eta(trainer, now)
        log.info("step %d%s  train loss %.4f  %s chars/s  elapsed %s%s", step, of, loss, f"{speed:,.0f}",
                 duration(now - self._started), f"  ETA {duration(eta)}" if eta is not None else "",
                 extra=self._where)
        self._line = {"step": step, "time": train_time, "chars": self.chars}
        self._loss_sum, self._loss_count = 0.0, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.validations += 1
        if "val/loss" not in trainer.callback_metrics:
            return
        val, best = float(trainer.callback_metrics["val/loss"]), float(getattr(pl_module, "best_val_loss", math.inf))
        note = "new best" if val <= best else f"best {best:.4f}"
        log.info("validation at step %d: val loss %.4f (%.4f bpc), %s", trainer.global_step, val, val / math.log(2),
                 note, extra=self._where)
        eta = self.eta(trainer, time.monotonic())
        self.validated = {"steps": trainer.global_step, "best_val_loss": best, "eta_s": eta and round(eta, 1)}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._phase == "val":
            self._enter("train")
        self._record_validation()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._record_validation()

    def _record_validation(self) -> None:  # once its checkpoints are written (Lightning saves them after
        if self.validated is not None and self.record is not None:  # on_validation_end): status.json says what
            self.record.write(**self.validated)  # they hold, never more, also after kill -9
        self.validated = None

    def eta(self, trainer, now: float) -> float | None:
        """Seconds left: the remaining steps at this run's mean step time, plus the remaining validations at their
        mean time (once one has been measured); at most what trainer.max_time leaves. None before any step."""
        if not self.steps or trainer.max_steps <= 0:
            return None
        remaining = max(0, trainer.max_steps - trainer.global_step)
        seconds = remaining * self._step_time(now)
        interval = trainer.val_check_interval // trainer.accumulate_grad_batches  # in steps (batches in Lightning)
        if self.validations and isinstance(interval, int) and interval and remaining:
            end = trainer.global_step + remaining  # a validation every interval steps, and one after the last
            validations = end // interval - trainer.global_step // interval + (end % interval != 0)
            seconds += validations * self.val_seconds / self.validations
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # trainer.max_time's
        left = timer.time_remaining() if timer is not None else None
        return min(seconds, max(0.0, float(left))) if left is not None and math.isfinite(left) else seconds

    def _step_time(self, now: float) -> float:  # mean seconds a step, the first (warm-up) left out once there are more
        if self.steps == 1:
            return self._train_time(now)
        return (self._train_time(now) - self._first_step) / (self.steps - 1)

    def average_speed(self) -> float | None:
        """Characters trained per second over this process's training, validation left out."""
        seconds = self._train_time(time.monotonic())
        return self.chars / seconds if self.steps and seconds > 0 else None
