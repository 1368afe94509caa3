"""Train a character GPT: `python train.py model=small dataset=frost` (see conf/train.yaml)."""
from pathlib import Path

import hydra
from omegaconf import DictConfig

from frosty_lm import corpus
from frosty_lm.cli import exit_on_user_error, in_sweep, quiet_lightning, run_entry_point
from frosty_lm.config import check_config


def check_early(cfg: DictConfig) -> None:
    """train.py's checks before torch and Lightning load: the config, and that the corpus file is there. A resume's
    config is checked once composed; with ckpt_path, training reads the checkpoint first, and reports that first."""
    if cfg.get("resume"):
        return
    check_config(cfg)
    if not cfg.get("ckpt_path"):
        data = cfg.data
        file = corpus.locate(data.name, data.data_dir, data.get("path"), data.get("url"))
        if file.exists():  # else it is downloaded when training starts
            corpus.check_regular_file(file)


@hydra.main(version_base="1.3", config_path=str(Path(__file__).parent / "conf"), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    if not in_sweep():  # a sweep's job: run_training checks the config, and records a failure in its status.json
        check_early(cfg)  # a bad config or a missing corpus: one line at once, before torch and Lightning load
    from frosty_lm.training import run_training  # seconds: torch and Lightning

    quiet_lightning()
    return run_training(cfg)


if __name__ == "__main__":
    run_entry_point(main)
