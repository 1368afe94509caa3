"""Train a character GPT: `python train.py model=small dataset=frost` (see conf/train.yaml)."""
from frosty_lm.interrupts import LIBRARY_PATIENCE_S, exit_when_interrupted, interrupt_on_signals

if __name__ == "__main__":  # first: Ctrl-C or SIGTERM while the rest loads is one line too (exit 130, 143)
    interrupt_on_signals("before training started: nothing was saved", LIBRARY_PATIENCE_S)

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from frosty_lm import run_dirs  # noqa: F401  (importing it registers the resolvers that conf/train.yaml uses)
from frosty_lm.arguments import read_command_line, skip_hydra_mode_probe
from frosty_lm.cli import exit_on_user_error, in_sweep, quiet_lightning, stop_sweep_on_signals
from frosty_lm.config_checks import check_early

# Frosty's sweeper is a Hydra plugin in this directory (hydra_plugins/), found on sys.path as the script's own:
# processes that launchers start elsewhere (submitit's workers) find it there too. Not installed as a package: Hydra
# finds plugins by listing the hydra_plugins namespace, which an editable install (pip install -e) hides behind
# import hooks.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                         os.environ.get("PYTHONPATH")]))


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    if in_sweep():  # first: a signal while torch loads stops the sweep (cli.SweepStop), and ends no worker
        stop_sweep_on_signals()
    check_early(cfg)  # a bad config or a missing corpus: one line at once, before torch and Lightning load
    from frosty_lm.training import run_training  # seconds: torch and Lightning

    quiet_lightning()
    return run_training(cfg)


def start() -> None:
    given = exit_on_user_error(read_command_line)(sys.argv[1:], "train")  # a bad argument: one line
    exit_on_user_error(run_dirs.make_given_run_dir)(given)  # hydra.run.dir=DIR: one line if it cannot be made
    skip_hydra_mode_probe()  # the check above composed the config: Hydra composes it once more, not twice
    main()


if __name__ == "__main__":
    exit_when_interrupted(start)
