"""Following a run: the Rich bar on a terminal, plain lines everywhere else (a pipe, nohup, a batch job, CI)
and always in train.log. A line every few seconds or steps (step, train loss, characters/s, ETA), one per
validation (val loss, bpc, best so far), and the run's time estimated from its first steps."""
from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, Timer

from frosty_lm.cli import parallel_jobs
from frosty_lm.config import check_progress_lines

log = logging.getLogger("frosty")

FILE_ONLY = {"file_only": True}  # logging's `extra=`: the line goes to train.log, not to the console


class StepProgressBar(RichProgressBar):
    """Rich progress bar over the whole run (global step out of max_steps) rather than per epoch:
    Frosty's runs are measured in steps, and an epoch is only a nominal pass over the corpus."""

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if self.trainer.max_steps > 0 else super().total_train_batches

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self.progress is not None:  # the run's bar, "Training" (Lightning adds one per epoch, named by it)
            name = f"[{self.theme.description}]Training" if self.theme.description else "Training"
            self.train_progress_bar_id = self.progress.add_task(name, total=self.total_train_batches)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pass  # the bar is the run's: not reset every epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)


def keep_off_console(prefix: str = "") -> None:
    """The console's log handlers (not train.log's) drop the lines logged with extra=FILE_ONLY, and start every
    line with prefix (in a parallel sweep, the job's name: its lines interleave with the other jobs')."""
    for handler in logging.getLogger().handlers:
        if type(handler) is not logging.StreamHandler:  # the console only; train.log is a FileHandler
            continue
        if _off_console not in handler.filters:
            handler.addFilter(_off_console)
        inner = handler.formatter.inner if isinstance(handler.formatter, _Prefixed) else handler.formatter
        handler.setFormatter(_Prefixed(inner or logging.Formatter(), prefix) if prefix else inner)


def _off_console(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


class _Prefixed(logging.Formatter):
    def __init__(self, inner: logging.Formatter, prefix: str) -> None:
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(self.prefix + line for line in self.inner.format(record).split("\n"))


def duration(seconds: float) -> str:
    """3725.2 -> '1:02:05'; 65 -> '01:05'."""
    return str(timedelta(seconds=round(seconds))).removeprefix("0:")


class ProgressLines(L.Callback):
    """Plain progress lines (logger "frosty"): every `every_seconds` seconds of training or `every_n_steps` steps
    (whichever comes first; null: never), one after each validation, and an estimate of the run's time from
    the `estimate_after` steps after the first (a warm-up, far slower on a GPU). On a terminal with the Rich bar
    the lines go to train.log only.

    Training time excludes validation and checkpointing; characters/s counts every process's characters.
    `record` (a status.RunRecord, set by training.fit) is updated at each validation: step, best val loss,
    ETA. Only the first process of a multi-process run writes."""

    def __init__(self, every_seconds: float | None = 30.0, every_n_steps: int | None = None,
                 estimate_after: int = 10) -> None:
        check_progress_lines(dict(every_seconds=every_seconds, every_n_steps=every_n_steps,
                                  estimate_after=estimate_after))
        self.every_seconds, self.every_n_steps, self.estimate_after = every_seconds, every_n_steps, estimate_after
        self.on_console = True  # set by training.fit: False while the Rich bar shows the progress
        self.record = None
        self._reset()

    def _reset(self) -> None:
        self.train_seconds = self.val_seconds = 0.0
        self.steps = self.validations = self.chars = 0  # of this process's training (a resumed run: since resume)
        self._phase, self._since = "train", time.monotonic()
        self._line = {"step": 0, "time": 0.0, "chars": 0}
        self._loss_sum, self._loss_count = None, 0
        self._step_seen = 0  # trainer.global_step at the last batch that ended a step
        self._first_step = 0.0  # training seconds of the first step: warm-up (a GPU's far more), left out of rates
        self._started = time.monotonic()

    @property
    def _where(self) -> dict | None:
        """logging's `extra=` for this callback's lines: train.log only while the Rich bar shows the progress."""
        return None if self.on_console else FILE_ONLY

    # bookkeeping: how long training and validation took

    def _train_time(self, now: float) -> float:
        return self.train_seconds + (now - self._since if self._phase == "train" else 0.0)

    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()
        self._line["step"] = self._step_seen = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._phase == "val":
            now = time.monotonic()
            self.val_seconds += now - self._since
            self._phase, self._since = "train", now

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._phase != "train":
            return
        now = time.monotonic()
        self.train_seconds += now - self._since
        self._phase, self._since = "val", now

    def on_train_end(self, trainer, pl_module) -> None:  # close the phase that was running: the times stop here
        now = time.monotonic()
        if self._phase == "val":
            self.val_seconds += now - self._since
        else:
            self.train_seconds += now - self._since
        self._phase, self._since = "ended", now

    # the lines

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.chars += batch[0].numel() * trainer.world_size
        # Lightning's loss of a batch is divided by accumulate_grad_batches: a step's batches add up to its loss
        loss = outputs["loss"].detach() if isinstance(outputs, dict) and "loss" in outputs else None
        if loss is not None:  # summed without a sync: read only when a line is written
            self._loss_sum = loss.float() if self._loss_sum is None else self._loss_sum + loss.float()
        if trainer.global_step == self._step_seen:  # gradients still accumulating: the step is not done
            return
        self._step_seen = trainer.global_step
        self.steps += 1
        self._loss_count += loss is not None
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
                     duration(remaining), self.remaining_steps(trainer), 1000 * self._step_time(now), self.steps - 1,
                     validations, extra=self._where)

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
        self._loss_sum, self._loss_count = None, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.validations += 1
        metrics = trainer.callback_metrics
        if "val/loss" not in metrics:
            return
        val, best = float(metrics["val/loss"]), float(getattr(pl_module, "best_val_loss", math.inf))
        note = "new best" if val <= best else f"best {best:.4f}"
        log.info("validation at step %d: val loss %.4f (%.4f bpc), %s", trainer.global_step, val, val / math.log(2),
                 note, extra=self._where)
        if self.record is not None:
            now = time.monotonic()
            eta = self.eta(trainer, now)
            self.record.write(steps=trainer.global_step, best_val_loss=best,
                              eta_s=round(eta, 1) if eta is not None else None)

    # estimates

    @staticmethod
    def remaining_steps(trainer) -> int:
        return max(0, trainer.max_steps - trainer.global_step) if trainer.max_steps > 0 else 0

    def eta(self, trainer, now: float) -> float | None:
        """Seconds left: the remaining steps at this run's mean step time, plus the remaining validations at their
        mean time (once one has been measured); at most what trainer.max_time leaves. None before any step."""
        if not self.steps or trainer.max_steps <= 0:
            return None
        remaining = self.remaining_steps(trainer)
        seconds = remaining * self._step_time(now)
        interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else None
        if self.validations and interval and remaining:
            end = trainer.global_step + remaining  # a validation every interval steps, and one after the last
            validations = end // interval - trainer.global_step // interval + (end % interval != 0)
            seconds += validations * self.val_seconds / self.validations
        limit = _max_time_left(trainer)
        return min(seconds, limit) if limit is not None else seconds

    def _step_time(self, now: float) -> float:
        """Mean seconds per training step, the first (warm-up) left out once there are others."""
        if self.steps == 1:
            return self._train_time(now)
        return (self._train_time(now) - self._first_step) / (self.steps - 1)

    def average_speed(self) -> float | None:
        """Characters trained per second over this process's training, validation left out."""
        seconds = self._train_time(time.monotonic())
        return self.chars / seconds if self.steps and seconds > 0 else None


def _max_time_left(trainer) -> float | None:
    """Seconds trainer.max_time leaves (Lightning's Timer callback), or None without a time limit."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    left = timer.time_remaining() if timer is not None else None
    return max(0.0, float(left)) if left is not None and math.isfinite(left) else None


def job_log_only() -> dict | None:
    """logging's `extra=` for lines that, in a parallel sweep, go to the job's train.log only (not the console,
    where every job's lines interleave)."""
    return FILE_ONLY if parallel_jobs() > 1 else None
