"""Frosty's sweeper: Hydra's basic sweeper (a grid over comma-separated values), except that a job whose config
cannot be composed (an option that does not exist: `-m model=tiny,nosuch`) is refused alone, with one line, and
the other jobs run. Hydra's own composes every job before running any, and one bad value stops the whole sweep.
Once Ctrl-C or SIGTERM has stopped the sweep (frosty_lm.cli.SweepStop), no more jobs are launched, and workers
that the signal ended or interrupted as they started (before their handlers) end the sweep with its summary, not
a traceback.
Hydra finds it here (its plugins live in the hydra_plugins package) and registers it after its own basic sweeper,
under that name (`hydra/sweeper: basic`, Hydra's default), so that a search preset's `override /hydra/sweeper:
optuna` still replaces it.

Frosty's search, FrostySearch below, is Optuna's sweeper with the same care for failed and stopped jobs; the search
presets (conf/search/) name it."""

import logging
import math
import sys
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

from frosty_lm.arguments import composition_error
from frosty_lm.cli import SweepStop
from frosty_lm.interrupts import Interrupted
from frosty_lm.run_dirs import run_record
from frosty_lm.status import JOBS, REFUSED  # for the sweep's summary (SweepSummary)

log = logging.getLogger(__name__)

WORKER_STOPPED = (BrokenProcessPool, KeyboardInterrupt)  # joblib's, for a worker that a signal ended or interrupted


def ended_by_the_stop(err: BaseException) -> bool:
    """Whether err (WORKER_STOPPED) is a worker that the sweep's stop ended or interrupted as it started (a job installs
    its handlers first: it had not begun training), and not this process's own second signal (Interrupted)."""
    return SweepStop.signum is not None and not isinstance(err, Interrupted)


def composes(sweeper, overrides: Sequence[str]) -> bool:
    """Whether a job's config composes; if not, the job is refused with one line, which the sweep's summary repeats."""
    try:
        sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, list(overrides))
    except ConfigCompositionException as err:
        REFUSED.append(f"{composition_error(err, sweeper.config, 'train.py')} (the job: {' '.join(overrides)})")
        print(f"error: a job refused: {REFUSED[-1]}", file=sys.stderr, flush=True)
        return False
    return True


def save_manifest(config) -> None:
    """multirun.yaml in the sweep's directory, as Hydra's basic sweeper writes it: the sweep's config, which names
    what it varies (its jobs' names, the report, and the check that a directory holds no sweep yet read it)."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")


class FrostySweeper(BasicSweeper):
    def setup(self, **kwargs) -> None:
        super().setup(**kwargs)
        self.launcher = GoingOnPastAnEndedWorker(self.launcher)

    def is_done(self) -> bool:
        if not JOBS:  # (first called once the sweep's jobs are known)
            JOBS.append(sum(len(batch) for batch in self.overrides))
        return SweepStop.signum is not None or super().is_done()

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        """The next batch of jobs, less those whose config cannot be composed (each refused with one line); none
        once the sweep is stopped."""
        batch = []
        while not batch and not self.is_done():
            batch = [overrides for overrides in super().get_job_batch() if composes(self, overrides)]
        return batch if SweepStop.signum is None else []

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing left to check: get_job_batch has composed each job of the batch already."""


class FrostySearch(OptunaSweeper):
    """Optuna's sweeper (hydra-optuna-sweeper: its search space, study settings and launcher), with Frosty's own
    loop: Optuna asks for a batch of trials (n_jobs), the launcher runs them, and each trial is told its run's best
    val loss. A trial whose run did not finish (it failed, was interrupted, did not run) or whose config does not
    compose (refused, as in a grid) is told to Optuna as failed, and the search goes on: the plugin's loop ends the
    whole search with a traceback at the first such trial (NaN from a failed job, or any error). Once Ctrl-C or
    SIGTERM has stopped the sweep, no more trials are asked for, and the sweep ends with its summary. The best
    trial (optimization_results.yaml) is the study's: with a stored study (hydra.sweeper.storage), of every
    search that added to it. A search continuing a stored study draws new trials (its sampler's seed moves on by the
    study's trials), and one whose search space the stored study cannot take is refused before any trial."""

    def setup(self, **kwargs) -> None:
        super().setup(**kwargs)
        self.sweeper.launcher = GoingOnPastAnEndedWorker(self.sweeper.launcher)

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        search = self.sweeper
        study = self.open_study()
        search._process_searchspace_config()
        space, fixed = create_params_from_overrides(search._parse_sweeper_params_config() + list(arguments))
        for name in fixed:
            space.pop(name, None)
        check_space_matches_study(study, space, search.storage)
        earlier, seed = len(study.get_trials(deepcopy=False)), search.config.hydra.sweeper.sampler.get("seed")
        continued = ""
        if earlier and seed is not None:  # a stored study continued: its sampler's seed moves on by its trials, so that
            # the search draws new ones (with the seed it started with, its random first trials would be the stored
            # ones again), and the same stored study and seed still give the same draws
            study.sampler = instantiate(search.config.hydra.sweeper.sampler, seed=seed + earlier)
            continued = f", after the stored study's {earlier} (sampler seed {seed} + {earlier})"
        save_manifest(search.config)
        log.info(f"Study {study.study_name}: {search.n_trials} trials{continued}, {type(study.sampler).__name__}")
        JOBS.append(search.n_trials)
        left = search.n_trials
        while left > 0 and SweepStop.signum is None:
            asked = [study.ask() for _ in range(min(left, search.n_jobs))]
            scores: dict[int, float | None] = {}  # trial number -> its run's best val loss (none: the trial failed)
            try:
                jobs = {trial.number: overrides for trial, overrides
                        in zip(asked, search._configure_trials(asked, space, fixed), strict=True)
                        if composes(search, overrides)}
                if jobs and SweepStop.signum is None:
                    returns = search.launcher.launch(list(jobs.values()), search.job_idx)  # none if a worker ended
                    scores = dict(zip(jobs, map(best_val_loss, returns)))
                search.job_idx += len(jobs)
            finally:  # every trial asked is told, whatever ended its batch: a stored study keeps none "running"
                for trial in asked:
                    if scores.get(trial.number) is None:  # (TPE learns from finished trials only)
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    else:
                        study.tell(trial, scores[trial.number])
            left -= len(asked)
        # (a job run in this process, as joblib runs one at a time, leaves the logging set up for its own train.log)
        configure_log(search.config.hydra.hydra_logging, search.config.hydra.verbose)
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):  # as the plugin does
            best = study.best_trial
            log.info(f"Best parameters: {best.params}")
            log.info(f"Best value: {best.value}")
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            OmegaConf.save(OmegaConf.create(results), Path(search.config.hydra.sweep.dir) / "optimization_results.yaml")

    def open_study(self):
        """Optuna's study, new or stored; a setting it cannot work with is one line and exit status 1, before anything
        is written to the sweep's directory."""
        import optuna

        search = self.sweeper
        directions = search._get_directions()
        if not isinstance(search.n_jobs, int) or search.n_jobs < 1:
            refuse(f"hydra.sweeper.n_jobs={search.n_jobs} must be a positive integer, the trials launched together: "
                   "e.g. hydra.sweeper.n_jobs=2")
        if not isinstance(search.n_trials, int) or search.n_trials < 1:
            refuse(f"hydra.sweeper.n_trials={search.n_trials} must be a positive integer, the trials to run: "
                   "e.g. hydra.sweeper.n_trials=20")
        if len(directions) != 1:
            refuse(f"hydra.sweeper.direction={search.direction} must be one direction, as train.py returns one value "
                   "(the best val loss): hydra.sweeper.direction=minimize")
        try:
            return optuna.create_study(study_name=search.study_name, storage=search.storage, sampler=search.sampler,
                                       directions=directions, load_if_exists=True)
        except Exception as err:  # a storage that cannot be opened, a stored study with another direction, ...
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            refuse(f"cannot open Optuna's study {search.study_name} in {search.storage or 'memory'}: {why}: choose "
                   "another hydra.sweeper.storage or hydra.sweeper.study_name")


def check_space_matches_study(study, space: dict, storage: str | None) -> None:
    """Refuse, in one line and before any trial, a search space that a stored study cannot take: a parameter its
    earlier trials drew from another set of choices, or of another kind (Optuna would raise its ValueError
    with a traceback at the first trial). A numeric range may change: Optuna allows it, and so does this."""
    from optuna.distributions import check_distribution_compatibility

    trials = study.get_trials(deepcopy=False)  # (read once: a stored study's trials come from its database)
    for name, new in space.items():
        old = next((t.distributions[name] for t in trials if name in t.distributions), None)
        if old is None:
            continue
        try:
            check_distribution_compatibility(old, new)
        except ValueError:
            refuse(f"{name} is searched over {described(new)}, but the stored study {study.study_name} in {storage} "
                   f"drew it from {described(old)}: a stored study keeps each parameter's choices and kind; give the "
                   f"new search another hydra.sweeper.study_name")


def described(distribution) -> str:
    """An Optuna distribution in words: choice(2, 4, 6), integers 2 to 6 in steps of 2, 0.0001 to 0.003 on a log
    scale, ... (Optuna 2's classes: IntUniformDistribution, DiscreteUniformDistribution, LogUniformDistribution)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    name = type(distribution).__name__
    words = f"{'integers ' if name.startswith('Int') else ''}{distribution.low} to {distribution.high}"
    step = getattr(distribution, "step", None) or getattr(distribution, "q", None)
    if step is not None and step != 1:
        words += f" in steps of {step}"
    return words + (" on a log scale" if "Log" in name or getattr(distribution, "log", False) else "")


def refuse(why: str) -> NoReturn:
    print(f"error: {why}", file=sys.stderr, flush=True)
    sys.exit(1)


class GoingOnPastAnEndedWorker:
    """A sweep's launcher whose launch() returns no results for its batch, instead of raising, when a worker process
    ended: by the sweep's stop, or killed (SIGKILL, out of memory), which the sweep goes on from, that batch's jobs
    failed (their status.json: running, their process gone: the summary counts them as killed)."""

    def __init__(self, launcher) -> None:
        self.launcher = launcher

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            return self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        except WORKER_STOPPED as err:
            if not ended_by_the_stop(err):
                if not isinstance(err, BrokenProcessPool):
                    raise
                print(f"error: a worker process ended ({type(err).__name__}: killed, out of memory?), and with it its "
                      f"batch of {len(job_overrides)} job(s): the sweep goes on to its next batch or its summary",
                      file=sys.stderr, flush=True)
            return []


def best_val_loss(job: JobReturn) -> float | None:
    """A search trial's score: its run's best val loss, if the run finished (status.json) with one; else None."""
    if job.status != JobStatus.COMPLETED or not isinstance(job.return_value, float) or math.isnan(job.return_value):
        return None
    finished = run_record(Path(job.hydra_cfg.hydra.runtime.output_dir)).get("status") == "finished"
    return job.return_value if finished else None


@dataclass
class FrostySweeperConf:
    _target_: str = "hydra_plugins.frosty_sweeper.FrostySweeper"
    max_batch_size: int | None = None
    params: dict | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=FrostySweeperConf, provider="frosty")
