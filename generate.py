"""Sample from a trained checkpoint: `python generate.py prompt="Whose woods these are"` (see conf/generate.yaml)."""
from frosty_lm.interrupts import exit_when_interrupted, interrupt_on_signals

if __name__ == "__main__":  # first: Ctrl-C or SIGTERM while the rest loads is one line too (exit 130, 143)
    interrupt_on_signals("")

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from frosty_lm.arguments import read_command_line, skip_hydra_mode_probe
from frosty_lm.cli import exit_on_user_error
from frosty_lm.generation import run_generation


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="generate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run_generation(cfg)


def start() -> None:
    exit_on_user_error(read_command_line)(sys.argv[1:], "generate")  # a bad argument: one line, not Hydra's report
    skip_hydra_mode_probe()  # the check above composed the config: Hydra composes it once more, not twice
    main()


if __name__ == "__main__":
    exit_when_interrupted(start)
