"""What the entry points share: a user error is one `error:` line and exit status 1 (a sweep's job returns instead),
a config node's constructor's too (make); Ctrl-C before training is one line and 130; standard output that fails; a
directory to write in, made or refused in one line; files replaced whole; a received run's records read safely;
key=value printed to paste back; sweep or not; and, at import, what conf/ needs registered: the resolvers
frosty_cpu_precision and frosty_dirname, the schemas."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, InterpolationKeyError, InterpolationResolutionError

from frosty_lm.config import SCHEMAS, FrostyError
from frosty_lm.machine import cpu_precision, error_line

FILE_ONLY = {"file_only": True}  # logging's `extra=`: the line goes to train.log, not to the console


def in_sweep() -> bool:
    """Whether this is a job of a Hydra multirun (a sweep or a search)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (the joblib launcher's n_jobs), else 1."""
    if not in_sweep():
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs") or 1
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def job_log_only() -> dict | None:
    """logging's `extra=` for lines that a parallel sweep keeps to the job's train.log, off the interleaved console."""
    return FILE_ONLY if parallel_jobs() > 1 else None


def user_message(err: BaseException) -> str | None:
    """The line a user gets for err: a FrostyError's; an interpolation that resolves to nothing, or a key removed
    with ~KEY, named; a file-system or memory error's (error_line); None for an unexpected error."""
    if isinstance(err, FrostyError):
        return str(err)
    if isinstance(err, InterpolationResolutionError):
        overrides = OmegaConf.to_container(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        typed = [o for o in overrides if re.search(r"(?<!\\)\$\{", o)]  # a ${ typed, not escaped (\${)
        key = err.full_key or (typed[0].split("=")[0].lstrip("+~") if typed else "")  # (a .get() names none)
        line = str(err).splitlines()[0]
        if typed and isinstance(err, InterpolationKeyError):
            line += "; ${...} in a value names another setting (generate.py's prompt writes the characters as \\${)"
        return f"{key}: {line}" if key else line
    if isinstance(err, (ConfigAttributeError, ConfigKeyError)) and err.full_key:  # removed with ~KEY
        return f"{err.full_key} is not set: give it a value ({err.full_key}=...) rather than remove it"
    return error_line(err)


def exit_on_user_error(func):
    """An error with a user_message prints `error: ...` and exits 1 (FROSTY_DEBUG=1 or HYDRA_FULL_ERROR=1: raised).
    A sweep's failing job returns None, whatever the error: the sweep goes on."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        sweep_job = in_sweep()
        try:
            return func(*args, **kwargs)
        except Exception as err:
            message = user_message(err)
            debugging = "1" in (os.environ.get("FROSTY_DEBUG"), os.environ.get("HYDRA_FULL_ERROR"))
            if debugging or (message is None and not sweep_job):
                raise
            if message is None:
                traceback.print_exc()  # an unexpected error: the traceback, then the sweep goes on
            else:  # a parallel sweep's job's line says which job it is, as its progress lines do
                job = f"[job {HydraConfig.get().job.num}] " if sweep_job and parallel_jobs() > 1 else ""
                print(f"{job}error: {message}", file=sys.stderr, flush=True)
            if sweep_job:  # into the job's train.log too (off the console: printed above)
                logging.getLogger("frosty").error("error: %s", message or traceback.format_exc().strip(),
                                                  extra=FILE_ONLY)
                return None
            sys.exit(1)

    return wrapper


def make(node: DictConfig, key: str, **kwargs):
    """Hydra's instantiate of the config node at key, with a user error raised by the constructor (ours, Lightning's
    MisconfigurationException, a bad argument's TypeError or ValueError, e.g. trainer.devices=-5) as a FrostyError."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, FrostyError):
            raise cause from None
        if isinstance(cause, (MisconfigurationException, TypeError, ValueError)):
            raise FrostyError(f"{key}: {' '.join(str(cause).split())} (python train.py --cfg job shows every "
                              "setting)") from None
        raise


def run_entry_point(main) -> None:
    """Run an entry point's main(); Ctrl-C that reaches it (during training a run stops itself at a step boundary)
    is one line and exit status 130, a user error one line and 1. A console that cannot be written loses its log
    lines, not the run."""
    logging.raiseExceptions = False
    try:
        main()
    except KeyboardInterrupt:
        sweep = any(arg in ("-m", "--multirun") for arg in sys.argv[1:])
        print("\ninterrupted: " + ("the sweep stopped; each run keeps the checkpoints it wrote (python train.py "
                                   "'resume=\"RUN_DIR\"' continues one)" if sweep else "nothing more was saved"),
              file=sys.stderr, flush=True)
        sys.exit(130)
    except Exception as err:  # Hydra refusing two modes at once (--cfg with -m, ...) before its own error report; the
        hydra = isinstance(err, ValueError) and str(err).startswith("Only one of --run")  # report's and the attention
        message = str(err) if hydra else user_message(err)  # tool's disk and memory errors (hydra.main's: their own)
        if message is None or "1" in (os.environ.get("FROSTY_DEBUG"), os.environ.get("HYDRA_FULL_ERROR")):
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


class OneLineParser(argparse.ArgumentParser):  # a bad argument: one line and exit 1, as Frosty's other errors
    def error(self, message: str):
        self.exit(1, f"error: {message} ({self.prog} --help lists the arguments)\n")


def stdout_failed(err: OSError) -> None:
    """After a write to standard output failed: quiet if its reader went away (`| head`), else a FrostyError (a
    full disk behind `> FILE`); either way no second error as Python flushes at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if not isinstance(err, BrokenPipeError):
        raise FrostyError(f"cannot write to standard output: {err.strerror or err}: send it to another file or "
                          "disk") from None


os.umask(UMASK := os.umask(0o022))  # reading the umask means setting it: set back at once


def replace_file(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """write(file) into a new file beside target, flushed to disk and renamed over it: a kill or a full disk leaves
    the old file or the new one, never a part, and a link planted at the target's name is replaced, not followed."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode) if target.is_file() else 0o666 & ~UMASK)  # (mkstemp's: 600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_small(file: Path, limit: int = 2**20) -> bytes | None:
    """A record of a run directory, which may come from someone else: None unless a regular file (a FIFO would block
    reading, a device never end) of at most limit bytes. An OSError in reading it is the caller's."""
    return file.read_bytes() if file.is_file() and file.stat().st_size <= limit else None


def run_record(run: Path) -> dict:
    """The run's status.json (RunRecord) as a dict; {} if it is missing, damaged or foreign."""
    try:  # (read_small: a received run's may be a FIFO, a device, a huge file)
        record = json.loads(read_small(run / "status.json") or b"null")
    except (OSError, ValueError, RecursionError):  # not JSON, or not UTF-8; nested too deep for the parser
        return {}
    return record if isinstance(record, dict) else {}


def make_dir(path: str, key: str) -> None:
    """Create path, writable, or a FrostyError naming why not and the key that moves it."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = "a file is in the way" if isinstance(err, FileExistsError) else err.strerror or err
        raise FrostyError(f"cannot create {path}: {why}: choose a writable directory with {key}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FrostyError(f"cannot write to {path}: choose a writable directory with {key}")
    free = shutil.disk_usage(path).free
    if free < 2**20:  # Hydra writes the config next, before any of Frosty's code could say so in one line
        raise FrostyError(f"no space left on the device: {path} has {free // 1024} KiB free: free some space, or "
                          f"choose another disk with {key}")
    files = os.statvfs(path) if hasattr(os, "statvfs") else None  # (f_files 0: a file system that counts none)
    if files and files.f_files and files.f_favail < 64:
        raise FrostyError(f"no space left on the device: {path} has room for {files.f_favail} more files (inodes): "
                          f"delete some files, or choose another disk with {key}")


def command_arg(key: str, value, quoted: bool = False) -> str:
    """key=value as a printed command must give it for the shell and for Hydra to read value back as it is: a value
    Hydra's grammar does not take bare, or any value if quoted, goes in Hydra's double quotes, then the shell's."""
    text = str(value)
    try:
        bare = OverridesParser.create().parse_override(f"{key}={text}").value() == text
    except HydraException:
        bare = False
    if quoted or not bare:  # in Hydra's quotes a backslash is itself, but doubled before a quote (or the last one)
        text = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', re.sub(r"(\\+)$", r"\1\1", text))
        text = f'"{text}"'
    return shlex.quote(f"{key}={text}")


def generate_command(path: Path, prompt: str, seed: int) -> str:
    """The command that samples from path with the summary's prompt (blank: generate.py's default) and seed."""
    command = f"python generate.py {command_arg('ckpt_path', path)}"
    if prompt.strip():
        command += " " + command_arg("prompt", prompt, quoted=True)
    return f"{command} seed={seed}"


# At import, not only in train.py: sweep workers resolve the hydra node too (joblib's import train.py; submitit's import
# run_dirs, which imports this, with the callbacks they unpickle). The schemas (config.py): each node's keys and types.
OmegaConf.register_new_resolver("frosty_cpu_precision", cpu_precision, replace=True)
OmegaConf.register_new_resolver("frosty_dirname", lambda name: name.replace("/", "_"), replace=True)  # a sweep job's
for group, options in SCHEMAS.items():  # schema/model/gpt, ...; the data node's: schema/data, at data
    for name, node in options.items():
        ConfigStore.instance().store(group="schema" if name is None else f"schema/{group}", name=name or group,
                                     node=node, package=group if name is None else None)
