"""Run directories: where a run goes (never over another run), which run resume= continues, the config it
continues with (conf/ composed again with the run's recorded overrides), and the newest run."""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from frosty_lm.cli import command_arg, in_sweep, make_dir, user_message
from frosty_lm.config import FrostyError
from frosty_lm.status import RunLock

LAST, BEST = Path("checkpoints") / "last.ckpt", Path("checkpoints") / "best.ckpt"


def all_runs(outputs_dir: str | Path, holding: Path = LAST) -> list[Path]:
    """The runs under outputs_dir (runs and sweeps alike) that hold `holding`, by their last checkpoint's time."""
    found = [p.parents[1] for p in Path(outputs_dir).rglob(str(holding)) if p.is_file()]
    return sorted(found, key=lambda run: (run / (LAST if (run / LAST).is_file() else holding)).stat().st_mtime)


def newest_run(outputs_dir: str | Path, holding: Path = LAST) -> Path | None:  # resume=latest's; generate.py's: BEST
    return (all_runs(outputs_dir, holding) or [None])[-1]


def run_to_resume(resume: str, outputs_dir: str | Path) -> Path:
    """resume=latest|RUN_DIR: the run directory, which holds last.ckpt."""
    if resume == "":  # (as if not given, a new run would start)
        raise FrostyError("resume= is empty: give resume=RUN_DIR or resume=latest")
    run = newest_run(outputs_dir) if resume == "latest" else Path(str(resume)).expanduser()
    if run is None:
        raise FrostyError(f"no run with {LAST} found under {outputs_dir}/: nothing to resume; start one with "
                          "`python train.py`")
    if run.is_file():
        in_run = run.name == "last.ckpt" and run.parent.name == "checkpoints"
        run_of = f" (here {command_arg('resume', run.parents[1])})" if in_run else ""
        raise FrostyError(f"resume={resume} is a file: resume= takes a run's directory, the one holding {LAST}"
                          f"{run_of}; to start a new run from a checkpoint file, give ckpt_path={resume}")
    if not (run / LAST).is_file():
        if (run / "multirun.yaml").is_file():  # Hydra's record of a sweep, at its top
            raise FrostyError(f"{run} is a sweep's directory: resume one of its jobs, resume={run}/JOB")
        if (run / LAST.name).is_file():  # the run's checkpoints/ directory
            raise FrostyError(f"resume={resume} takes the run's directory: {command_arg('resume', run.parent)}")
        if (run / BEST).is_file():  # last.ckpt deleted: the run cannot go on, but a new one can start from its best
            raise FrostyError(f"cannot resume {run}: it has no {LAST}, only {BEST}: start a new run from that, "
                              f"python train.py {command_arg('ckpt_path', run / BEST)} (with the run's overrides)")
        raise FrostyError(f"cannot resume {run}: it has no {LAST} (not a run of train.py, or one stopped before its "
                          f"first checkpoint: start it again with {command_arg('hydra.run.dir', run)} and the "
                          "overrides in its .hydra/overrides.yaml); or use resume=latest")
    return run


class RunDirectory(Callback):
    """Hydra callback, before Hydra writes into the run directory: refuses in one line what would touch another run,
    makes resume='s run Hydra's run directory, and makes the run's (or the sweep's) directory."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with or_exit():
            HydraConfig.instance().set_config(config)  # as Hydra's run_job does next: ${hydra:...} in hydra.run.dir
            self.prepare(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep = str(config.hydra.sweep.dir)
        with or_exit():
            if any(Path(sweep).rglob("*.ckpt")) or (Path(sweep) / "multirun.yaml").is_file():  # (one given: its runs)
                raise FrostyError(f"{sweep} already holds a sweep's runs: choose another hydra.sweep.dir")
            if OmegaConf.select(config, "hydra.launcher.n_jobs") == 0:  # joblib's traceback says it has no meaning
                raise FrostyError("hydra.launcher.n_jobs=0 must be the number of jobs at a time (1, 2, ...), or -1 "
                                  "for one per core")
            make_dir(sweep, "paths.outputs_dir=DIR (or hydra.sweep.dir=DIR)")

    @staticmethod
    def prepare(config: DictConfig) -> None:
        resume = config.get("resume")
        if resume is not None:
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
        held = [p for glob in ("*.ckpt", "checkpoints/*.ckpt") for p in Path(run).glob(glob)]
        if not resume and held:  # (hydra.run.dir=RUN/checkpoints: RUN's)
            owner = held[0].parents[1] if held[0].parent.name == "checkpoints" else run
            raise FrostyError(f"{run} already holds a run: choose another hydra.run.dir, or continue that run "
                              f"with {command_arg('resume', owner)}")
        if not resume and (Path(run) / "multirun.yaml").is_file():  # Hydra's record of a sweep, at its top
            raise FrostyError(f"{run} holds a sweep: choose another hydra.run.dir")
        if not resume and RunLock(run).held():  # (a resume's config goes to a directory of its own)
            raise FrostyError(f"{run} is being trained by another process: choose another hydra.run.dir")
        if resume and not os.access(run, os.W_OK | os.X_OK):
            raise FrostyError(f"cannot write to {run}: make it writable to resume it, or start a new run from its "
                              f"weights with {command_arg('ckpt_path', Path(run) / LAST)}")
        make_dir(run, f"a new run from {command_arg('ckpt_path', Path(run) / LAST)} paths.outputs_dir=DIR" if resume
                 else "paths.outputs_dir=DIR (or hydra.run.dir=DIR)")


@contextmanager
def or_exit() -> Iterator[None]:  # a Hydra callback's error would be Hydra's report
    try:
        yield
    except Exception as err:  # (a FrostyError; an interpolation that cannot resolve, e.g. after ~paths)
        if user_message(err) is None:
            raise
        print(f"error: {user_message(err)}", file=sys.stderr, flush=True)
        sys.exit(1)


def refuse_links(run: Path) -> None:
    """A run directory to resume may come from someone else: a symbolic link in it could send writes elsewhere,
    a FIFO or a device make reading it hang."""
    paths = (Path(below) / name for below, dirs, files in os.walk(run) for name in [*dirs, *files])
    if (odd := next((p for p in paths if p.is_symlink() or not (p.is_dir() or p.is_file())), None)) is not None:
        why = ("is a symbolic link, which could make the run write outside its directory; replace it with the file "
               "itself") if odd.is_symlink() else "is no file or directory (a FIFO or a device would block); remove it"
        raise FrostyError(f"cannot resume {run}: {odd} {why}")


CONF = Path(__file__).resolve().parents[1] / "conf"
DIR_KEYS, NAME_KEYS = ("dirpath", "save_dir", "default_root_dir"), ("name", "version", "sub_dir", "filename")
FOLLOWS_CONF = ("callbacks", "logger")  # what a resumed run takes from today's conf/: they watch training only
ABSENT = object()


def resume_if_asked(cfg: DictConfig) -> tuple[DictConfig, dict | None, list[str]]:
    """resume=: conf/ composed again with the overrides that composed the run's last.ckpt and this command's, its
    last.ckpt as read (nothing in it is composed or instantiated), and those overrides, which the run's checkpoints
    record from then on; without resume=, (cfg, None, this command's overrides)."""
    if not cfg.get("resume"):
        return cfg, None, list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    if in_sweep():  # a sweep's jobs are new runs, each in a directory of its own
        raise FrostyError(f"resume={cfg.resume} continues one run: give it without -m")
    if cfg.get("ckpt_path"):
        raise FrostyError(f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} conflict: resume= continues a run in its "
                          "own directory, ckpt_path= starts a new run from a checkpoint; give one")
    from frosty_lm.checkpoint import check_more_to_train, load_checkpoint, recorded_overrides  # torch: seconds

    hydra = HydraConfig.get()
    run = Path(hydra.runtime.output_dir)
    ckpt = load_checkpoint(last := run / LAST)
    stored = ckpt["hyper_parameters"].get("config")
    if not isinstance(stored, dict):  # an older Frosty's checkpoint
        raise FrostyError(f"{last} records no run config (an older Frosty's checkpoint): start a new run from it "
                          f"with ckpt_path={last}")
    parser = OverridesParser.create()
    recorded = ckpt["hyper_parameters"].get("overrides")  # those of the last.ckpt, not of a try that saved none
    if recorded is None:  # an older Frosty's checkpoint: those Hydra recorded for the run and its resumes
        recorded = recorded_overrides(run, hydra.output_subdir)
    if not (isinstance(recorded, list) and all(isinstance(o, str) for o in recorded)):
        raise FrostyError(f"{last} records its overrides in a form other than a list: the file was edited or "
                          "damaged; start a new run from it with ckpt_path=")
    recorded = [o for o in recorded if not o.startswith("resume=")]
    try:
        parsed = parser.parse_overrides(recorded)
    except HydraException as err:
        raise FrostyError(f"cannot resume {run}: its recorded overrides do not parse ({' '.join(str(err).split())}): "
                          "the run's .hydra/ was edited or damaged") from None
    check_recorded(parsed, run)
    new = [o for o in parser.parse_overrides(list(hydra.overrides.task))  # (a group as the run chose it: as it was)
           if o.key_or_group != "resume" and not (o.key_or_group in hydra.runtime.choices and o.input_line in recorded)]
    for override in new:
        if override.key_or_group in hydra.runtime.choices:
            raise FrostyError(f"{override.input_line}: a resumed run keeps the config groups it was started with "
                              f"(leave {override.key_or_group}= out); override single keys instead (e.g. "
                              "trainer.max_steps=5000)")
    # +key= (not +group=) as ++key=: by then the key may be in the run's groups (Muon's), so it is set or added
    given = [f"+{o.input_line}" if o.is_add() and not (CONF / o.key_or_group).is_dir() else o.input_line
             for o in [*parsed, *new]]
    resume = cfg.resume
    try:
        cfg = compose(hydra.job.config_name, given)
    except HydraException as err:
        why = " ".join(str(err).split())
        raise FrostyError(f"{run}'s recorded overrides and this command's do not compose with conf/: {why}") from None
    changed = [key for key in differences(stored, OmegaConf.to_container(cfg, resolve=False))
               if not key.startswith(FOLLOWS_CONF) and key not in ("resume", "ckpt_path")
               and not any(key == o.key_or_group or key.startswith(o.key_or_group + ".") for o in new)]
    if changed:  # conf/ changed since the run started
        key = changed[0]
        was, now = OmegaConf.select(OmegaConf.create(stored), key), OmegaConf.select(cfg, key)
        more = f" (and {', '.join(changed[1:4])}{', ...' if len(changed) > 4 else ''})" if changed[1:] else ""
        raise FrostyError(f"cannot resume {run}: conf/ now gives {key}={now} where the run recorded {key}={was}{more}; "
                          f"add {key}={was} to the command to go on as it trained")
    was = stored.get("data", {}).get("val_fraction")  # the run's val split stays: its val losses compare only on it
    if (split := OmegaConf.select(cfg, "data.val_fraction")) != was:
        raise FrostyError(f"data.val_fraction={split}: a resumed run keeps its val split, data.val_fraction={was}")
    saving = OmegaConf.select(cfg, "callbacks.model_checkpoint")  # (its checkpoints elsewhere: status.json ahead)
    if not (saving and saving.get("save_last") and Path(str(saving.dirpath)).resolve() == last.parent.resolve()):
        raise FrostyError(f"cannot resume {run} without writing its {LAST} as it trains: leave out the overrides of "
                          "callbacks.model_checkpoint (dirpath, save_last) and callbacks")
    cfg.resume, cfg.ckpt_path = resume, str(last)
    check_more_to_train(ckpt, cfg, run)
    if hydra.output_subdir:  # its resumed-* record: the config the run goes on with, not this command's alone
        OmegaConf.save(cfg, run / hydra.output_subdir / "config.yaml")
    return cfg, ckpt, given  # (train.fit checks the config, as for a new run)


def check_recorded(overrides: list, run: Path) -> None:
    """A run directory may come from someone else: its recorded overrides may not run code (Hydra's keys, a
    `_target_`), call a resolver, download from a URL that conf/ does not name, or write outside the run."""
    urls = set(re.findall(r"^url:\s*(\S+)", "\n".join(f.read_text() for f in (CONF / "dataset").glob("*.yaml")),
                          flags=re.MULTILINE))
    for override, key, value in ((o, *leaf) for o in overrides for leaf in leaves(o.key_or_group, o.value())):
        why = None
        if key.startswith("hydra") or any(part.startswith("_") for part in re.split(r"[./]", key)):
            why = f"sets {key}"
        elif re.search(r"\$\{[^}]*:", override.input_line):
            why = "calls a resolver"
        elif key == "paths.output_dir" or key.startswith(("callbacks.", "logger.", "trainer.")) and (
                key.endswith(DIR_KEYS) or key.endswith(NAME_KEYS) and isinstance(value, str) and (  # a dir of its own,
                    "${" in value or value.startswith(("/", "~")) or ".." in Path(value).parts)):  # or a name out of it
            why = "writes outside the run's directory"
        elif key == "data.url" and value not in urls:
            why = "downloads from a URL that conf/ does not name"
        if why:
            raise FrostyError(f"cannot resume {run}: its recorded override {override.input_line} {why}; resume only "
                              f"runs you trust (or start a new run from its weights with ckpt_path={run / LAST})")


def leaves(key: str, value) -> list[tuple[str, object]]:  # a dict's or list's values by their dotted keys, down
    if isinstance(value, (dict, list)) and value:  # to the scalars: `callbacks.x={_target_:...}` sets its _target_
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return [leaf for k, v in items for leaf in leaves(f"{key}.{k}", v)]
    return [(key, value)]


def differences(old, new, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain configs (a key on one side only differs)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [found for key in sorted(set(old) | set(new), key=str)
                for found in differences(old.get(key, ABSENT), new.get(key, ABSENT), f"{prefix}{key}.")]
    return [] if old == new else [prefix.removesuffix(".")]
