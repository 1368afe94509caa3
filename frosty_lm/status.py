"""How a run stands and ends: its status.json, the lock of a run being trained, and the summaries that end a run and a
sweep. Lightning and torch are imported where used: Hydra loads SweepSummary before train.py checks its config."""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import shlex
import signal
import socket
import sys
import time
from datetime import datetime
from functools import partial
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from frosty_lm.cli import command_arg, generate_command, job_log_only, run_record
from frosty_lm.config import FrostyError, is_int

say = partial(print, file=sys.stderr, flush=True)  # the sweep's lines
log = logging.getLogger("frosty")


def alive(pid) -> bool:  # whether a process with this pid exists on this host
    if not is_int(pid) or pid <= 0:  # (0 and -1 would name this process's group, or every process)
        return False
    try:
        os.kill(pid, 0)
    except (OSError, OverflowError) as err:
        return isinstance(err, PermissionError)  # it exists, under another user
    return True


def run_state(record: dict) -> str:
    """status.json's status ("unknown" if none); "killed" for a "running" run whose process on this host is gone."""
    state = record.get("status") if isinstance(record.get("status"), str) else "unknown"
    gone = record.get("host") == socket.gethostname() and not alive(record.get("pid"))
    return "killed" if state == "running" and gone else state


def rank() -> int:  # this process's rank in a multi-process run (0 alone)
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank


class RunRecord:
    """status.json in a run directory: running (pid, host), finished, interrupted or failed, and the report's numbers.
    A run killed hard stays "running": the report tells it by its pid. A resume continues the record (its start, the
    overrides that compose it, summed wall time, a `resumes` entry); restore() reverts it if training never began."""

    def __init__(self, run_dir: str | Path, resumed: bool = False) -> None:
        self.path = Path(run_dir) / "status.json"
        self.started = time.time()
        self.previous = self.path.read_bytes() if resumed and self.path.is_file() else None
        if self.previous is not None:
            self._previous_times = self.path.stat().st_atime_ns, self.path.stat().st_mtime_ns
        try:
            self.data: dict = dict(json.loads(self.previous)) if self.previous else {}
        except (ValueError, TypeError, RecursionError):  # damaged: start a new one (restore() still puts it back)
            self.data = {}
        earlier = self.data.get("wall_time_s")
        self.earlier_wall_time = earlier if isinstance(earlier, (int, float)) else 0.0
        self.training_started = False  # set by train.fit

    def write(self, **fields) -> None:
        if rank() != 0:  # in a multi-process run, the first process keeps the record
            return
        self.data.update(fields, wall_time_s=round(self.earlier_wall_time + time.time() - self.started, 1))
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in self.data.items()}
        self._replace(json.dumps(finite, indent=2).encode())  # (NaN and Infinity are not JSON)

    def _replace(self, content: bytes) -> None:  # whole, or on a full disk in place: in the blocks it holds already
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(content)
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.path.is_file() or len(content) > (
                    self.path.stat().st_blocks * 512):  # (more than it holds: the old record stays whole)
                raise
            with open(self.path, "r+b") as f:
                f.write(content)
                f.truncate()
        finally:
            tmp.unlink(missing_ok=True)

    def start(self, overrides: list[str], command: list[str]) -> None:
        """overrides: those that composed the run (a resume's: the checkpoint's and this command's); command: this
        command's, for a resume's entry."""
        keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]  # a key given again: its last value, once
        self.data.pop("error", None)
        now = datetime.now().isoformat(timespec="seconds")
        if self.previous is not None:  # a resume: when, and with which command's overrides
            resumes = self.data.get("resumes")
            self.data["resumes"] = [*(resumes if isinstance(resumes, list) else []),
                                    {"started": now, "overrides": list(command)}]
        self.write(status="running", pid=os.getpid(), host=socket.gethostname(), started=self.data.get("started")
                   or now, overrides=[o for i, o in enumerate(overrides) if keys[i] not in keys[i + 1:]])

    def checkpointed(self) -> dict:
        """steps and best_val_loss as last.ckpt holds them: after a failure between a validation's record and its
        checkpoints (a full disk), status.json says what survived."""
        from frosty_lm.checkpoint import read_safely

        last = self.path.parent / "checkpoints" / "last.ckpt"
        try:
            ckpt = read_safely(last)
        except Exception:  # none (failed before its first), or unreadable: nothing survived to say
            return {"steps": 0, "best_val_loss": None}
        states = ckpt.get("callbacks", {})
        score = next((state.get("best_model_score") for key, state in states.items()
                      if key.startswith("ModelCheckpoint") and isinstance(state, dict)), None)
        return {"steps": ckpt.get("global_step", 0), "best_val_loss": None if score is None else float(score)}

    def restore(self) -> None:  # the record as it was before this process started: its bytes and modification time
        if self.previous is not None and rank() == 0:
            self._replace(self.previous)
            os.utime(self.path, ns=self._previous_times)


class RunLock:
    """One process trains a run at a time: the OS's lock (filelock) on its .lock, released however the process ends."""

    def __init__(self, run_dir: str | Path) -> None:
        from filelock import FileLock

        self.lock = FileLock(Path(run_dir) / ".lock", timeout=0)

    def acquire(self) -> None:
        from filelock import Timeout

        if rank() != 0:  # the other processes of a multi-process run train under rank 0's lock
            return
        try:
            self.lock.acquire()
        except Timeout:
            raise FrostyError(f"{Path(self.lock.lock_file).parent} is being trained by another process: wait for it "
                              "to end or stop it") from None

    def release(self) -> None:
        self.lock.release()

    def held(self) -> bool:  # whether another process trains the run now (its lock file there, and locked)
        from filelock import Timeout

        if any(os.environ.get(key, "0") != "0" for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID")):
            return False  # a rank of a multi-process run: rank 0 holds the lock for it
        try:
            if Path(self.lock.lock_file).is_file():
                self.lock.acquire()
                self.lock.release()
        except OSError as err:  # Timeout (one); or e.g. another user's lock file, which acquire() reports as it trains
            return isinstance(err, Timeout)
        return False


def summarise(trainer, cfg: DictConfig, loss: float, text: str) -> None:
    """The best checkpoint, val loss, training speed, a sample from a prompt out of the run's corpus (text: the val
    split's start) and the generate.py command that continues it; in a parallel sweep those two go to train.log only."""
    from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
    from frosty_lm.generation import corpus_prompt, default_prompt, sample_text
    from frosty_lm.progress import ProgressLines, duration

    if rank() != 0:
        return
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        log.info("no best checkpoint was written (no validation ran)")
        return
    path = Path(checkpoint.best_model_path).resolve()
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    prompt = corpus_prompt(text)
    if any(ch not in vocab for ch in prompt):  # e.g. "\n" for a one-line corpus without line breaks
        prompt = default_prompt(vocab)
    sample = sample_text(model, vocab, prompt, cfg.summary_sample_chars, temperature=0.8, seed=cfg.seed)
    log.info("best checkpoint: %s", path)
    log.info("best val loss %.4f nats/char, %.4f bits/char", loss, loss / math.log(2))
    lines = next((c for c in trainer.callbacks if isinstance(c, ProgressLines)), None)  # times training, validations
    if lines is not None and (speed := lines.average_speed()) is not None:  # characters/s, validation left out
        log.info("training speed: %s characters/s (%s)", f"{speed:,.0f}", trainer.precision)
    if lines is not None and lines.validations:
        log.info("time: %s training, %s in %d validations (val loss, sample, checkpoints)",
                 duration(lines.train_seconds), duration(lines.val_seconds), lines.validations)
    log.info("sample:\n%s", sample.strip("\n"), extra=job_log_only())
    log.info("continue from it with:\n  %s", generate_command(path, prompt, cfg.seed), extra=job_log_only())


def failed_early(job: Path) -> dict:
    """A sweep job without a status.json failed before its run began: its error as its train.log has it."""
    try:
        lines = (job / "train.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    marker = "[frosty][ERROR] - error: "  # exit_on_user_error's line, in Hydra's log format
    errors = [line.split(marker, 1)[1] for line in lines if marker in line]
    return {"status": "failed", "error": errors[-1] if errors else "before training: see its train.log"}


def _end_sweep(signum, frame) -> None:
    say("\nSIGTERM: the sweep stopped; each run keeps the checkpoints it wrote")
    sys.exit(128 + signum)


class SweepSummary(Callback):
    """Hydra callback ending a sweep: a line for it, one per job failed, interrupted or killed (recorded running, its
    process gone); exit status 1 if any failed or was killed, else 130 (143 for SIGTERM) if any was interrupted."""

    _previous = None  # the SIGTERM handler before a joblib sweep's, put back at its end

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """SIGTERM to a joblib sweep's main process ends it as an exception, so that joblib shuts its workers down
        (Python's default would leave them training); jobs run in this process stop by Lightning's own handler."""
        joblib = "joblib" in str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        if joblib and OmegaConf.select(config, "hydra.launcher.n_jobs", default=1) != 1:  # (1: jobs in this process)
            self._previous = signal.signal(signal.SIGTERM, _end_sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        sweep = Path(config.hydra.sweep.dir)
        jobs = sorted(p.parent for p in sweep.rglob(".hydra") if p.is_dir())  # (hydra.sweep.subdir may nest them)
        records = {str(job.relative_to(sweep)): run_record(job) for job in jobs}
        reportable = any(records.values())  # the report reads status.json
        records = {name: record or failed_early(sweep / name) for name, record in records.items()}
        failed = {name: r for name, r in records.items() if r.get("status") == "failed"}
        killed = [name for name, r in records.items() if r.get("status") == "running" and not alive(r.get("pid"))]
        interrupted = [name for name, r in records.items() if r.get("status") == "interrupted"]
        finished = sum(r.get("status") == "finished" for r in records.values())
        counts = {"failed": len(failed), "interrupted": len(interrupted), "killed": len(killed)}
        others = "".join(f", {n} {state}" for state, n in counts.items() if n)
        compare = f"; compare them with: python -m frosty_lm.report {shlex.quote(str(sweep))}" if reportable else ""
        say(f"sweep {sweep}: {finished} of {len(records)} runs finished{others}{compare}")
        for name in interrupted:
            say(f"interrupted: {name}: continue it with python train.py {command_arg('resume', sweep / name)}")
        for name, record in failed.items():
            say(f"failed: {name}: {record.get('error')}")
        for name in killed:  # (its process ended without a word: SIGKILL, out of memory)
            say(f"killed: {name}: its process ended while it trained; continue it with python train.py "
                f"{command_arg('resume', sweep / name)} if it saved a checkpoint")
        if failed or killed:
            sys.exit(1)
        if interrupted:  # Ctrl-C to a terminal reaches every job: each saved and stopped
            sys.exit(143 if any(records[n].get("error") == "stopped by SIGTERM" for n in interrupted) else 130)
