"""Run directories: where a run goes, never over another run, and how `resume=...` finds one to continue.

Hydra decides the run directory and writes its config there before train.py's code runs, so these
checks are OmegaConf resolvers that conf/train.yaml calls from the hydra node.
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from frosty_lm.errors import FrostyError

LAST = Path("checkpoints") / "last.ckpt"


def latest_run(root: str | Path = "outputs") -> Path:
    """The run under root whose last checkpoint was written most recently."""
    found = [p for p in Path(root).rglob(str(LAST)) if p.is_file()]
    if not found:
        raise FrostyError(f"no run with {LAST} found under {root}/: nothing to resume; start one with `python train.py`")
    return max(found, key=lambda p: p.stat().st_mtime).parents[1]


def run_to_resume(resume: str) -> Path:
    """resume=latest or resume=RUN_DIR -> the run directory, which must hold checkpoints/last.ckpt."""
    run = latest_run() if resume == "latest" else Path(resume)
    if not (run / LAST).is_file():
        raise FrostyError(f"cannot resume {run}: it has no {LAST}; give a run directory of train.py, or resume=latest")
    return run


def _user_error_exits(resolver):
    """Hydra would wrap an exception raised here in a long report: print the one line and exit 1 instead."""
    def wrapped(*args):
        try:
            return resolver(*args)
        except FrostyError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)
    return wrapped


@_user_error_exits
def run_dir(resume: str | None, new_dir: str) -> str:
    """hydra.run.dir: the run to resume, or a new directory."""
    return str(run_to_resume(resume)) if resume else new_dir


@_user_error_exits
def output_subdir(output_dir: str, resume: str | None) -> str:
    """hydra.output_subdir, where Hydra saves the run's config. A new run refuses a directory that already
    holds a run (nothing of it is touched); a resumed run keeps its original config and saves the resuming
    command's beside it."""
    if resume:
        return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    if (Path(output_dir) / "checkpoints").exists():
        raise FrostyError(f"{output_dir} already holds a run: choose another hydra.run.dir, "
                          f"or continue that run with resume={output_dir}")
    return ".hydra"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("frosty_run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("frosty_output_subdir", output_subdir, replace=True)


def resumed_config(run_config: dict, overrides: list[str], groups: set[str]) -> DictConfig:
    """The config a run was started with (kept in its checkpoint), with the resuming command's key=value
    overrides applied (e.g. trainer.max_steps=5000 to train longer). Changing a config group is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.create(run_config)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if key in groups:
            raise FrostyError(f"{override.input_line}: a resumed run keeps its config groups; "
                              "override single keys instead (e.g. trainer.max_steps=5000)")
        OmegaConf.update(cfg, key, override.value(), force_add=True)
    return cfg
