"""What the entry points share: turning a FrostyError into one line on stderr and exit status 1; whether
this is a sweep's job; quieting Lightning's noise."""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from frosty_lm.errors import Aborted, FrostyError
from frosty_lm.interrupts import Interrupted, after_import, interrupted_while, same_press, take_put_off


def in_sweep() -> bool:
    """Whether this is a job of a Hydra multirun (a sweep or a search)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


ELSEWHERE = "free some space, or put runs on another disk with paths.outputs_dir=DIR"
FILE_ERRORS = {
    errno.ENOSPC: ("no space left on the device", ELSEWHERE),
    errno.EDQUOT: ("disk quota exceeded", ELSEWHERE),
    errno.EACCES: ("permission denied", "choose files and directories you may use (paths.outputs_dir=DIR for runs)"),
    errno.EPERM: ("operation not permitted", "choose files and directories you may use (paths.outputs_dir=DIR)"),
    errno.EROFS: ("read-only file system", "put runs on a writable disk with paths.outputs_dir=DIR"),
    errno.EEXIST: ("a file is in the way", "move it, or put runs elsewhere with paths.outputs_dir=DIR"),
    errno.ENOTDIR: ("not a directory", "move the file in the way, or put runs elsewhere with paths.outputs_dir=DIR"),
}


def file_error(err: BaseException) -> str | None:
    """One line for an error that comes down to the file system (a full disk, a directory that cannot be written),
    however deep in the chain of exceptions its OSError sits; None for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FILE_ERRORS:
            what, fix = FILE_ERRORS[err.errno]
            return f"{what}{f': {err.filename}' if err.filename else ''}: {fix}"
        err = err.__cause__ or err.__context__
    return None


class SweepStop:
    """Set when a signal (Ctrl-C, SIGTERM) asked the sweep this process works for to stop: jobs that are training
    stop after their step and save (StopOnInterrupt), and jobs that have not started do not start."""

    signum: int | None = None
    at: float = 0.0  # time.monotonic() when it came
    main_pid: int | None = None  # the sweep's main process (a pid: a worker forked from it is not it)

    @classmethod
    def start(cls) -> None:
        """A new sweep in this process: no stop yet."""
        cls.signum, cls.at, cls.main_pid = None, 0.0, None

    @classmethod
    def in_main(cls) -> bool:
        """Whether this is the sweep's main process, whose handler a job run in it (hydra/launcher=basic, or joblib
        one job at a time) keeps, and which gets each signal once (no process passes it on to it)."""
        return cls.main_pid == os.getpid()


SWEEP_ABORTED = "again: the sweep aborted, without its summary; the checkpoints its jobs wrote are kept"
STOP_FILE = ".sweep-stopped"  # in the sweep's directory from its main process's first signal to the sweep's end


def sweep_stopped() -> int | None:
    """The signal that stopped this process's sweep, or None: received here, or by the sweep's main process (a
    worker that started after the signal finds it in STOP_FILE)."""
    if SweepStop.signum is None and HydraConfig.initialized():
        hydra = HydraConfig.get()  # (the sweep's directory may be relative to where it started: hydra.job.chdir)
        with contextlib.suppress(OSError, ValueError):
            SweepStop.signum = int((Path(hydra.runtime.cwd) / hydra.sweep.dir / STOP_FILE).read_text())
            SweepStop.at = time.monotonic()
    return SweepStop.signum


def stop_sweep_on_signals(main_of: Path | None = None) -> None:
    """Ctrl-C or SIGTERM in a sweep's process (a joblib worker, or its main process: main_of, the sweep's directory)
    sets SweepStop instead of killing the process, so that the sweep ends with its summary and no worker is left
    behind; the main process passes the signal on to its worker processes, and leaves STOP_FILE for those not
    started yet. A second signal aborts at once."""
    if threading.current_thread() is not threading.main_thread() or (main_of is None and SweepStop.in_main()):
        return
    if main_of is not None:
        SweepStop.main_pid = os.getpid()

    def handler(signum, frame) -> None:
        if SweepStop.signum is not None:
            if main_of is None and same_press(signum, SweepStop.signum, SweepStop.at):
                return
            if after_import(signum, frame, handler):
                return
            if main_of is not None:  # not "before training started": its jobs may have trained and saved
                interrupted_while(SWEEP_ABORTED)
            raise Interrupted(signum)  # exit status 128 + this signal's number
        SweepStop.signum, SweepStop.at = signum, time.monotonic()
        if main_of is not None:
            print(f"\n{signal.Signals(signum).name}: stopping the sweep: running jobs save and stop, the others do "
                  "not start (again to abort now)", file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                (main_of / STOP_FILE).write_text(str(signum))
            for child in child_processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    put_off = take_put_off()  # a signal to the entry point's handler that waits (a library's code ran): the sweep's
    if put_off is not None:
        handler(put_off, None)


def child_processes() -> list[int]:
    """The processes this one started (Linux's /proc; none elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            children.append(int(stat.parent.name))
    return children


def debugging() -> bool:
    """FROSTY_DEBUG=1 or HYDRA_FULL_ERROR=1: user errors come with their traceback."""
    return os.environ.get("FROSTY_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_on_user_error(func):
    """Run func; a FrostyError prints `error: ...` and exits 1 (FROSTY_DEBUG=1 or HYDRA_FULL_ERROR=1: traceback).
    In a sweep (Hydra multirun) a failing job, whatever the error, returns NaN instead, so the other jobs
    go on; its status.json says failed, and the sweep's summary lists it."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        sweep_job = in_sweep()
        try:
            return func(*args, **kwargs)
        except FrostyError as err:
            if sweep_job and isinstance(err, Aborted) and SweepStop.in_main():  # a job run in the sweep's process
                print(f"error: {err}", file=sys.stderr, flush=True)  # (hydra/launcher=basic, joblib one at a time):
                interrupted_while(SWEEP_ABORTED)  # it aborts the sweep, as a second signal to the sweep's process does
                raise Interrupted(err.signum) from err
            if debugging():
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            if sweep_job:
                return float("nan")
            sys.exit(1)
        except Exception as err:
            message = file_error(err)
            if message and not debugging():
                print(f"error: {message}", file=sys.stderr, flush=True)
                if sweep_job:
                    return float("nan")
                sys.exit(1)
            if not sweep_job:
                raise
            traceback.print_exc()  # an unexpected error: the traceback, then the sweep goes on
            return float("nan")

    return wrapper


def _no_tips(record: logging.LogRecord) -> bool:
    message = record.getMessage()  # a tip, or Lightning's own line for a Ctrl-C that train.py reports itself
    return "Tip:" not in message and "Detected KeyboardInterrupt" not in message


def quiet_lightning() -> None:
    """Silence what is noise in a Frosty run: Lightning's advertisements, its warnings about its own internals,
    and warnings that do not apply: Frosty's training stream resumes exactly without loader state (batch i is a
    function of seed and i), a resumed run reuses its checkpoint directory, a new run from another run's checkpoint
    (ckpt_path=) starts its own best on purpose, an "epoch" is nominal, a GPU whose peak Lightning lacks gets
    Frosty's measured one, and a batch is one gather in the main process (loader workers would only add processes).
    Calling it again adds nothing."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tips)
    warnings.filterwarnings("ignore", message=r".*(IterableDataset.*__len__|treespec).*")
    warnings.filterwarnings("ignore", message=r".*(dataloader is not resumable|Checkpoint directory .* exists and is "
                                              r"not empty|smaller than the logging interval|The dirpath has changed "
                                              r"from|FLOPs not found for|does not have many workers).*")
