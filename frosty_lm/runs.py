"""Run directories: where a run goes, never over another run, and how `resume=...` finds one to continue.

Hydra decides the run directory and writes its config there before train.py's code runs, so these
checks are OmegaConf resolvers that conf/train.yaml calls from the hydra node. (trainer=cpu's precision,
which depends on the machine, is one more resolver here.)
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
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


def sweep_subdir(sweep_dir: str, job_num: int, task_overrides, sweeper_params, sweeper: str = "") -> str:
    """hydra.sweep.subdir: a job is named by the values of what its sweep varies, e.g. `dropout=0.2,n_layer=4`
    (the keys of hydra.sweeper.params, and the command line's a=x,y sweeps, read from multirun.yaml).
    A search (any sweeper but the basic grid) may try the same values twice: its names end in #job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept = set(sweeper_params or {})
    manifest = Path(sweep_dir) / "multirun.yaml"
    if manifest.is_file():
        original = OmegaConf.load(manifest).hydra.overrides.task
        swept |= {o.key_or_group for o in parser.parse_overrides(list(original)) if o.is_sweep_override()}
    job = [o for o in parser.parse_overrides(list(task_overrides)) if o.key_or_group in swept]
    short = [o.key_or_group.split(".")[-1] for o in job]
    names = [s if short.count(s) == 1 else o.key_or_group for s, o in zip(short, job)]  # full key if ambiguous
    name = ",".join(f"{n}={short_value(o.get_value_element_as_str())}" for n, o in zip(names, job)).replace("/", "_")
    if not name:
        return f"job{job_num}"
    return name if sweeper.endswith("BasicSweeper") else f"{name}#{job_num}"


def short_value(value: str) -> str:
    """0.10480987000623268 -> 0.1048 (Optuna's samples), anything else unchanged."""
    try:
        return value if len(value) <= 8 or "." not in value else f"{float(value):.4g}"
    except ValueError:
        return value


def cpu_precision() -> str:
    """trainer=cpu's precision: bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX), which
    trains the small model about 1.4x faster to the same loss (README, Performance); fp32 elsewhere."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private to torch: absent means no
    native_bf16 = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return "bf16-mixed" if native_bf16 else "32-true"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("frosty_run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("frosty_output_subdir", output_subdir, replace=True)
    OmegaConf.register_new_resolver("frosty_sweep_subdir", sweep_subdir, replace=True)
    OmegaConf.register_new_resolver("frosty_cpu_precision", cpu_precision, replace=True)


# At import, not only in train.py: sweep launchers that run jobs in worker processes (joblib, submitit)
# resolve the hydra node there, after unpickling the task function, which imports this module.
register_resolvers()


class RunRecord:
    """status.json in a run directory: running (with pid and host), finished or failed, and the numbers
    the report needs. A run killed hard stays "running"; the report tells it from a live one by its pid."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "status.json"
        self.started = time.time()
        self.data: dict = {}

    def write(self, **fields) -> None:
        if rank_zero_only.rank != 0:  # in a multi-process run, the first process keeps the record
            return
        self.data.update(fields, wall_time_s=round(time.time() - self.started, 1))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)

    def start(self, **fields) -> None:
        self.write(status="running", pid=os.getpid(), host=socket.gethostname(),
                   started=datetime.now().isoformat(timespec="seconds"), **fields)


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


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, one line for the sweep and one per failed job; exit status 1
    if any job failed (the others have all run)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        records = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/status.json"))}
        failed = {name: r for name, r in records.items() if r.get("status") == "failed"}
        finished = sum(r.get("status") == "finished" for r in records.values())
        print(f"sweep {sweep}: {finished} of {len(records)} runs finished; "
              f"compare them with: python -m frosty_lm.report {sweep}", file=sys.stderr, flush=True)
        for name, record in failed.items():
            print(f"failed: {name}: {record.get('error')}", file=sys.stderr, flush=True)
        if failed:
            sys.exit(1)
