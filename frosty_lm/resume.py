"""Resume: continue a run from its last checkpoint with the config it was started with, and check that a
checkpoint to start from fits this run. (Which run `resume=latest|RUN_DIR` names is decided with the run
directory, by run_dirs.run_to_resume, before this code runs.)"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from frosty_lm.checkpoint import load_checkpoint
from frosty_lm.errors import FrostyError
from frosty_lm.run_dirs import LAST

log = logging.getLogger("frosty")


def stored_config(hparams: dict) -> dict | None:
    """The run config kept in a checkpoint's hyper_parameters, with its interpolations: `config`; checkpoints
    written before it kept `composed_config` (and a resolved `run_config`, which the oldest kept alone)."""
    return hparams.get("composed_config") or hparams.get("config") or hparams.get("run_config")


def resumed_config(stored: dict, overrides: list[str], groups: set[str]) -> DictConfig:
    """The config a run was started with (kept in its checkpoint), with the resuming command's key=value
    overrides applied (e.g. trainer.max_steps=5000 to train longer). Changing a config group is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = upgraded(OmegaConf.create(stored))
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if key in groups:
            raise FrostyError(f"{override.input_line}: a resumed run keeps its config groups; "
                              "override single keys instead (e.g. trainer.max_steps=5000)")
        OmegaConf.update(cfg, key, override.value(), force_add=True)
    return cfg


def upgraded(cfg: DictConfig) -> DictConfig:
    """A config stored by an earlier Frosty, in today's terms: its throughput callback was
    frosty_lm.callbacks.Throughput(peak_flops)."""
    throughput = OmegaConf.select(cfg, "callbacks.throughput")
    if throughput is not None and throughput.get("_target_") == "frosty_lm.callbacks.Throughput":
        cfg.callbacks.throughput = {"_target_": "frosty_lm.callbacks.CharThroughput",
                                    "available_flops": throughput.get("peak_flops")}
    return cfg


def resume_if_asked(cfg: DictConfig) -> tuple[DictConfig, dict | None]:
    """resume=latest|RUN_DIR: Hydra has already put this job in that run's directory; continue it with
    the config it was started with (plus this command's key=value overrides) from its last checkpoint.
    Returns the config to run and the checkpoint read (None without resume=), which training hands on
    rather than reading the file again."""
    if not cfg.get("resume"):
        return cfg, None
    hydra = HydraConfig.get()
    last = Path(hydra.runtime.output_dir) / LAST
    ckpt = load_checkpoint(last)
    stored = stored_config(ckpt["hyper_parameters"])
    if not stored:
        raise FrostyError(f"{last} holds no run config to resume with: use ckpt_path={last} and the run's overrides")
    cfg = resumed_config(stored, list(hydra.overrides.task), set(hydra.runtime.choices))
    cfg.ckpt_path = str(last)
    log.info("resuming %s from step %d", last.parents[1], ckpt["global_step"])
    return cfg, ckpt


def check_compatible(ckpt_path: str, hparams: dict, vocab: str, model: dict) -> None:
    """A checkpoint to start from (hparams: its hyper_parameters) must share this run's vocabulary and model
    shape (vocab, model: this run's)."""
    if hparams["vocab"] != vocab:
        raise FrostyError(f"{ckpt_path} was trained on another vocabulary ({len(hparams['vocab'])} characters, this "
                          f"corpus has {len(vocab)}): start from a checkpoint of the same corpus")
    for key in ("block_size", "n_layer", "n_head", "n_embd", "bias"):
        if hparams["model"].get(key) != model.get(key):
            raise FrostyError(f"{ckpt_path} has model.{key}={hparams['model'].get(key)}, this run "
                              f"model.{key}={model.get(key)}: use the checkpoint's model settings")
