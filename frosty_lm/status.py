"""Run status: each run's status.json, and the summary that ends a sweep."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig


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
