"""Sample from a trained checkpoint: `python generate.py prompt="Whose woods these are"` (see conf/generate.yaml)."""
from frosty_lm.interrupts import exit_when_interrupted, interrupt_on_signals

if __name__ == "__main__":  # first: Ctrl-C or SIGTERM while the rest loads is one line too (exit 130, 143)
    interrupt_on_signals("")

from pathlib import Path

import hydra
from omegaconf import DictConfig

from frosty_lm.cli import exit_on_user_error
from frosty_lm.generation import run_generation


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="generate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run_generation(cfg)


if __name__ == "__main__":
    exit_when_interrupted(main)
