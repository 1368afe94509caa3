"""Frosty's sweeper: Hydra's basic sweeper (a grid over comma-separated values), except that a job whose config
cannot be composed (an option that does not exist: `-m model=tiny,nosuch`) is refused alone, with one line, and
the other jobs run. Hydra's own composes every job before running any, and one bad value stops the whole sweep.
Once Ctrl-C or SIGTERM has stopped the sweep (frosty_lm.cli.SweepStop), no more jobs are launched, and workers
that the signal ended or interrupted as they started (before their handlers) end the sweep with its summary, not
a traceback.
Hydra finds it here (its plugins live in the hydra_plugins package) and registers it after its own basic sweeper,
under that name (`hydra/sweeper: basic`, Hydra's default), so that a search preset's `override /hydra/sweeper:
optuna` still replaces it."""

import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException

from frosty_lm.arguments import composition_error
from frosty_lm.cli import SweepStop
from frosty_lm.interrupts import Interrupted

REFUSED: list[str] = []  # why each refused job was, for the sweep's summary (frosty_lm.status.SweepSummary)
JOBS: list[int] = []  # how many jobs the sweep has, refused ones included (the summary's count of jobs not run)


class FrostySweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except (BrokenProcessPool, KeyboardInterrupt) as err:  # joblib's: a worker that the signal ended, or
            if SweepStop.signum is None or isinstance(err, Interrupted):  # interrupted, as it started (a job installs
                raise  # its handlers first: it had not begun training); Interrupted: this process's second signal
            return []

    def is_done(self) -> bool:
        if not JOBS:  # (first called once the sweep's jobs are known)
            JOBS.append(sum(len(batch) for batch in self.overrides))
        return SweepStop.signum is not None or super().is_done()

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        """The next batch of jobs, less those whose config cannot be composed (each refused with one line); none
        once the sweep is stopped."""
        batch = []
        while not batch and not self.is_done():
            for overrides in super().get_job_batch():
                try:
                    self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                except ConfigCompositionException as err:
                    why = composition_error(err, self.config, "train.py")
                    REFUSED.append(f"{why} (the job: {' '.join(overrides)})")
                    print(f"error: a job refused: {REFUSED[-1]}", file=sys.stderr, flush=True)
                    continue
                batch.append(overrides)
        return batch if SweepStop.signum is None else []

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing left to check: get_job_batch has composed each job of the batch already."""


@dataclass
class FrostySweeperConf:
    _target_: str = "hydra_plugins.frosty_sweeper.FrostySweeper"
    max_batch_size: int | None = None
    params: dict | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=FrostySweeperConf, provider="frosty")
