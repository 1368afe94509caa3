"""Run status: each run's status.json, the lock of a run being trained, and the summary that ends a sweep."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from frosty_lm.cli import command_arg
from frosty_lm.errors import FrostyError
from frosty_lm.run_dirs import run_record


def alive(pid) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:  # it exists, under another user
        return True
    except (OSError, TypeError, ValueError):
        return False


def process_start(pid) -> int | None:
    """When the process with this pid started, in clock ticks since boot (field 22 of Linux's /proc/PID/stat): a pid
    reused by a later process has another. None where there is no /proc, or no such process."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # after the name (which may hold spaces): fields 3, 4, ...
    except (OSError, ValueError, TypeError, IndexError):
        return None


def rank() -> int:
    """This process's rank in a multi-process run (0 alone). Lightning is imported here, not with this module:
    Hydra loads this module (SweepSummary) before train.py checks its config, which must not wait for it."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank


class RunRecord:
    """status.json in a run directory: running (with pid and host), finished or failed, and the numbers
    the report needs. A run killed hard stays "running"; the report tells it from a live one by its pid.

    A resumed run continues its record: its start time and overrides stay those it was started with (the
    resuming command's overrides are added), its wall time adds up over the segments, and `resumes` lists each
    resume (when, with which overrides). If the resume fails
    before its training starts (refused, e.g. a missing corpus), restore() puts the earlier record back."""

    def __init__(self, run_dir: str | Path, resumed: bool = False) -> None:
        self.path = Path(run_dir) / "status.json"
        self.started = time.time()
        self.previous = self.path.read_bytes() if resumed and self.path.is_file() else None
        self._previous_times = None if self.previous is None else (self.path.stat().st_atime_ns,
                                                                    self.path.stat().st_mtime_ns)
        try:
            self.data: dict = dict(json.loads(self.previous)) if self.previous else {}
        except (ValueError, TypeError):  # a damaged record: start a new one (restore() still puts it back)
            self.data = {}
        earlier = self.data.get("wall_time_s", 0.0)
        self.earlier_wall_time = earlier if resumed and isinstance(earlier, (int, float)) else 0.0
        self.training_started = False  # set by training.fit

    def write(self, **fields) -> None:
        if rank() != 0:  # in a multi-process run, the first process keeps the record
            return
        self.data.update(fields, wall_time_s=round(self.earlier_wall_time + time.time() - self.started, 1))
        self._replace(json.dumps(self.data, indent=2).encode())

    def _replace(self, content: bytes) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, self.path)

    def start(self, overrides: list[str]) -> None:
        earlier = self.data.get("overrides", [])
        earlier = earlier if isinstance(earlier, list) else []
        added = [o for o in overrides if not o.startswith("resume=") and o not in earlier]
        self.data.pop("error", None)
        now = datetime.now().isoformat(timespec="seconds")
        if self.previous is not None:  # a resume: when, and with which command's overrides
            resumes = self.data.get("resumes")
            self.data["resumes"] = [*(resumes if isinstance(resumes, list) else []),
                                    {"started": now, "overrides": list(overrides)}]
        self.write(status="running", pid=os.getpid(), host=socket.gethostname(), overrides=earlier + added,
                   started=self.data.get("started") or now)

    def restore(self) -> None:
        """The record as it was before this process started (a resume that failed before training): its bytes and
        its modification time."""
        if self.previous is not None and rank() == 0:
            self._replace(self.previous)
            os.utime(self.path, ns=self._previous_times)


class RunLock:
    """A run is trained by one process at a time: .lock in its directory names the process (pid, host, and on Linux
    its start time). A lock whose process is gone (killed), or whose pid now belongs to a process that started at
    another time, is taken over; a live one refuses the second trainer in one line."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> None:
        if rank() != 0:  # the other processes of a multi-process run train under rank 0's lock
            return
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid())}
        for _ in range(2):
            if self._create(json.dumps(me)):
                self.held = True
                return
            try:
                holder = json.loads(self.path.read_text())
            except (OSError, ValueError):
                holder = {}
            ours = holder.get("pid") == me["pid"]  # left by an earlier run in this interpreter (tests)
            started = holder.get("started")  # (none in a lock written without /proc, or before it was recorded)
            reused = started is not None and process_start(holder.get("pid")) not in (None, started)
            if holder.get("host") == me["host"] and (ours or reused or not alive(holder.get("pid"))):
                self.path.unlink(missing_ok=True)  # stale: its process was killed (its pid maybe reused since)
                continue
            if "pid" not in holder:
                raise FrostyError(f"{self.path} names no process (a damaged lock): if no process trains "
                                  f"{self.path.parent}, remove {self.path}")
            raise FrostyError(
                f"{self.path.parent} is being trained by process {holder.get('pid')} on {holder.get('host')}: "
                f"wait for it to end or stop it (if that machine is gone, remove {self.path})")

    def _create(self, content: str) -> bool:
        """Create the lock with its content, whole or not at all: written beside it, then linked into place (a
        signal between creating .lock and writing it would leave a lock that names no process, which no later run
        could take over). False if there is a lock already."""
        beside = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        try:
            beside.write_text(content)  # (a full disk fails here, before any lock is made)
            try:
                os.link(beside, self.path)
            except FileExistsError:
                return False
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                return self._create_in_place(content)  # a file system without hard links (FAT)
        finally:
            beside.unlink(missing_ok=True)
        return True

    def _create_in_place(self, content: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _end_sweep(signum, frame) -> None:
    print("\nSIGTERM: the sweep stopped; each run keeps the checkpoints it wrote", file=sys.stderr, flush=True)
    sys.exit(128 + signum)


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, one line for the sweep and one per job that failed, was interrupted
    or was killed (its record says running, its process is gone); exit status 1 if any failed or was killed, else
    130 (143 for SIGTERM) if any was interrupted."""

    _previous = None  # the SIGTERM handler before a joblib sweep's, put back at its end

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """SIGTERM to the main process of a sweep whose jobs run in worker processes (joblib's) ends it as an
        exception, so that joblib shuts its workers down on the way out (Python's default would leave them
        training). Jobs run in this process (the basic launcher) are stopped by Lightning's own handler."""
        if "joblib" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")):
            self._previous = signal.signal(signal.SIGTERM, _end_sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        sweep = Path(config.hydra.sweep.dir)
        records = {p.parent.name: run_record(p.parent) for p in sorted(sweep.glob("*/.hydra"))}
        for record in records.values():  # a job that failed before it wrote status.json: its train.log says why
            if not record:
                record.update(status="failed", error="before training: see its train.log")
        failed = {name: r for name, r in records.items() if r.get("status") == "failed"}
        killed = [name for name, r in records.items() if r.get("status") == "running" and not alive(r.get("pid"))]
        interrupted = [name for name, r in records.items() if r.get("status") == "interrupted"]
        finished = sum(r.get("status") == "finished" for r in records.values())
        counts = {"failed": len(failed), "interrupted": len(interrupted), "killed": len(killed)}
        others = "".join(f", {n} {state}" for state, n in counts.items() if n)
        print(f"sweep {sweep}: {finished} of {len(records)} runs finished{others}; "
              f"compare them with: python -m frosty_lm.report {sweep}", file=sys.stderr, flush=True)
        for name in interrupted:
            print(f"interrupted: {name}: continue it with python train.py {command_arg('resume', sweep / name)}",
                  file=sys.stderr, flush=True)
        for name, record in failed.items():
            print(f"failed: {name}: {record.get('error')}", file=sys.stderr, flush=True)
        for name in killed:  # (its process ended without a word: SIGKILL, out of memory)
            print(f"killed: {name}: its process ended while it trained; continue it with python train.py "
                  f"{command_arg('resume', sweep / name)} if it saved a checkpoint", file=sys.stderr, flush=True)
        if failed or killed:
            sys.exit(1)
        if interrupted:  # Ctrl-C to a terminal reaches every job: each saved and stopped
            sys.exit(143 if any(records[n].get("error") == "stopped by SIGTERM" for n in interrupted) else 130)
