"""Run directories: where a run goes, never over another run; which run `resume=` continues; the newest run; the
best finished run on a corpus (generate.py's default)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from frosty_lm.cli import command_arg
from frosty_lm.config import FrostyError, is_number

LAST = Path("checkpoints") / "last.ckpt"
BEST = Path("checkpoints") / "best.ckpt"


def newest_run(outputs_dir: str | Path, corpus: str | None = None) -> Path | None:
    """The run under outputs_dir (runs and sweeps alike) whose last.ckpt was written most recently (on corpus if
    given), or None: what resume=latest continues, and generate.py's run=latest samples."""
    found = [p for p in Path(outputs_dir).rglob(str(LAST))
             if p.is_file() and (corpus is None or on_corpus(p.parents[1], corpus))]
    return max(found, key=lambda p: p.stat().st_mtime).parents[1] if found else None


class BestRun(NamedTuple):
    """The best finished run on a corpus, and how many finished runs on it there were."""
    run: Path
    val_loss: float
    steps: int | None
    corpus: str
    among: int


def best_run(outputs_dir: str | Path, corpus: str) -> BestRun | None:
    """The finished run on corpus under outputs_dir with the lowest best val loss (status.json) and a best.ckpt,
    or None; runs whose status.json or .hydra/config.yaml is missing, damaged or foreign are left out."""
    finished = []
    for ckpt in sorted(Path(outputs_dir).rglob(str(BEST))):
        run = ckpt.parents[1]
        record = run_record(run)
        loss, steps = record.get("best_val_loss"), record.get("steps")
        if ckpt.is_file() and record.get("status") == "finished" and is_number(loss) and on_corpus(run, corpus):
            finished.append(BestRun(run, float(loss), int(steps) if is_number(steps) else None, corpus, 0))
    return min(finished, key=lambda found: found.val_loss)._replace(among=len(finished)) if finished else None


def run_record(run: Path) -> dict:
    """The run's status.json (status.RunRecord) as a dict; {} if it is missing, damaged or foreign."""
    try:
        record = json.loads((run / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return {}
    return record if isinstance(record, dict) else {}


def run_corpus(run: Path) -> str | None:
    """The corpus a run trained on: data.name in its .hydra/config.yaml, with data.path if it names a file ("text:FILE",
    so that two files do not compare); None if the file is missing, damaged or foreign."""
    try:  # as written, nothing resolved: the file may come from someone else
        data = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"), resolve=False)["data"]
        name, path = data["name"], data.get("path")
    except Exception:  # unreadable, not YAML, not a mapping, no data.name: whatever the error, the corpus is unknown
        return None
    if not isinstance(name, str) or "${" in name:
        return None
    return f"{name}:{path}" if isinstance(path, str) and path and "${" not in path else name


def on_corpus(run: Path, corpus: str) -> bool:
    """Whether run trained on corpus: a name (frost, or text: any file) or a run's own "text:FILE"."""
    found = run_corpus(run)
    return found is not None and (found == corpus or found.startswith(f"{corpus}:"))


def run_to_resume(resume: str, outputs_dir: str | Path) -> Path:
    """resume=latest|RUN_DIR: the run directory, which holds last.ckpt (RunDirectory makes it Hydra's run directory)."""
    if resume == "latest":
        run = newest_run(outputs_dir)
        if run is None:
            raise FrostyError(f"no run with {LAST} found under {outputs_dir}/: nothing to resume; "
                              "start one with `python train.py`")
    else:
        run = Path(resume)
    if run.is_file():
        in_run = run.name == "last.ckpt" and run.parent.name == "checkpoints"
        run_of = f" (here {command_arg('resume', run.parents[1])})" if in_run else ""
        raise FrostyError(f"resume={resume} is a file: resume= takes a run's directory, the one holding {LAST}"
                          f"{run_of}; to start a new run from a checkpoint file, give ckpt_path={resume}")
    if not (run / LAST).is_file():
        if (run / BEST).is_file():  # last.ckpt deleted: the run cannot go on, but a new one can start from its best
            raise FrostyError(f"cannot resume {run}: it has no {LAST}, only {BEST}: start a new run from that, "
                              f"python train.py {command_arg('ckpt_path', run / BEST)} (with the run's overrides)")
        raise FrostyError(f"cannot resume {run}: it has no {LAST} (not a run of train.py, or one stopped before its "
                          f"first checkpoint: start it again with {command_arg('hydra.run.dir', run)}); or use "
                          "resume=latest")
    return run


class RunDirectory(Callback):
    """Hydra callback: Hydra writes the config into the run directory before train.py's code runs, so this refuses
    first, in one line, what would end in Hydra's report or touch another run; makes resume='s run Hydra's run
    directory; and makes the run's (or the sweep's) directory."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # as Hydra's run_job does next: ${hydra:...} in hydra.run.dir
        resume = config.get("resume")
        try:
            if resume:
                resumed = run_to_resume(resume, config.paths.outputs_dir)
                refuse_links(resumed)
                given = {o.lstrip("+~").split("=", 1)[0] for o in config.hydra.overrides.hydra}
                # (Lightning's ddp gives the other ranks the run's own directory and an output_subdir of theirs)
                if "hydra.run.dir" in given and Path(str(config.hydra.run.dir)).resolve() != resumed.resolve():
                    raise FrostyError(f"resume={resume} continues that run in its own directory: leave out "
                                      f"hydra.run.dir={config.hydra.run.dir}")
                with read_write(config.hydra):  # the run's own directory; its new config beside the first one
                    config.hydra.run.dir = str(resumed)
                    if "hydra.output_subdir" not in given:
                        config.hydra.output_subdir = f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
            run = str(config.hydra.run.dir)
            if not resume and any((Path(run) / "checkpoints").glob("*.ckpt")):  # (killed before one: reusable)
                raise FrostyError(f"{run} already holds a run: choose another hydra.run.dir, or continue that run "
                                  f"with {command_arg('resume', run)}")
            make_dir(run, "paths.outputs_dir=DIR (or hydra.run.dir=DIR)")
        except FrostyError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            make_dir(str(config.hydra.sweep.dir), "paths.outputs_dir=DIR (or hydra.sweep.dir=DIR)")
        except FrostyError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)


def refuse_links(run: Path) -> None:
    """A run directory to resume may come from someone else: a symbolic link in it could send writes elsewhere."""
    for below, dirs, files in os.walk(run):
        link = next((Path(below) / name for name in [*dirs, *files] if (Path(below) / name).is_symlink()), None)
        if link is not None:
            raise FrostyError(f"cannot resume {run}: {link} is a symbolic link, which could make the run write "
                              "outside its directory; replace it with the file itself")


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
