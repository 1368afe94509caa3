"""Sample from a trained checkpoint: `python generate.py prompt="Whose woods these are"` (see conf/generate.yaml)."""
from pathlib import Path

import hydra
from omegaconf import DictConfig

from frosty_lm.cli import exit_on_user_error, run_entry_point
from frosty_lm.generation import run_generation


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="generate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run_generation(cfg)


if __name__ == "__main__":
    run_entry_point(main)
