"""Resume: continue a run from its last checkpoint with the config it was started with, and check that a
checkpoint to start from fits this run. (Which run `resume=latest|RUN_DIR` names is decided with the run
directory, by run_dirs.run_to_resume, before this code runs.)"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from frosty_lm.checkpoint import load_checkpoint
from frosty_lm.config_checks import max_time_seconds
from frosty_lm.errors import FrostyError
from frosty_lm.run_dirs import LAST
from frosty_lm.stored_config import check_stored_config, stored_config, upgraded

log = logging.getLogger("frosty")


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
            raise FrostyError(f"{override.input_line}: a resumed run keeps the config groups it was started with "
                              f"(leave {key}= out); override single keys instead (e.g. trainer.max_steps=5000)")
        OmegaConf.update(cfg, key, override.value(), force_add=True)
    return cfg


def resume_if_asked(cfg: DictConfig) -> tuple[DictConfig, dict | None]:
    """resume=latest|RUN_DIR: Hydra has already put this job in that run's directory; continue it with
    the config it was started with (plus this command's key=value overrides) from its last checkpoint.
    Returns the config to run and the checkpoint read (None without resume=), which training hands on
    rather than reading the file again."""
    if not cfg.get("resume"):
        return cfg, None
    if cfg.get("ckpt_path"):
        raise FrostyError(f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} conflict: resume= continues a run in its "
                          "own directory, ckpt_path= starts a new run from a checkpoint; give one")
    hydra = HydraConfig.get()
    last = Path(hydra.runtime.output_dir) / LAST
    ckpt = load_checkpoint(last)
    stored = stored_config(ckpt["hyper_parameters"])
    if not stored:
        raise FrostyError(f"{last} holds no run config to resume with: use ckpt_path={last} and the run's overrides")
    check_stored_config(stored, last)
    cfg = resumed_config(stored, list(hydra.overrides.task), set(hydra.runtime.choices))
    cfg.ckpt_path = str(last)
    check_more_to_train(ckpt, cfg, last.parents[1])
    return cfg, ckpt  # (training.fit checks the config, as for a new run)


def check_more_to_train(ckpt: dict, cfg: DictConfig, run: Path) -> None:
    """A resumed run that would stop at once (its step or its training time already at the limit) is refused
    with the key to raise, rather than finishing without a step; a step count that is not a count, as damaged."""
    step, max_steps = ckpt.get("global_step"), cfg.trainer.max_steps
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        raise FrostyError(f"{run} holds a damaged step count (global_step={step!r}): give a checkpoint written by "
                          "train.py")
    if isinstance(max_steps, int) and step >= max_steps:
        raise FrostyError(f"{run} is at step {step} and trainer.max_steps={max_steps}: nothing to train; give a larger "
                          f"trainer.max_steps (e.g. trainer.max_steps={2 * max_steps})")
    max_time = cfg.trainer.get("max_time")
    elapsed = ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train")
    if max_time and elapsed is not None:
        if elapsed >= max_time_seconds(max_time):
            raise FrostyError(f"{run} has trained {elapsed:.0f} s and trainer.max_time={max_time}: nothing to train; "
                              "give a longer trainer.max_time (DD:HH:MM:SS), or trainer.max_time=null")


def check_compatible(ckpt_path: str, hparams: dict, vocab: str, model: dict, optim: dict) -> None:
    """A checkpoint to start from (hparams: its hyper_parameters) must share this run's vocabulary, model shape
    and optimizer (vocab, model, optim: this run's). A setting a checkpoint does not record (written before it
    existed) is GPTConfig's default, which is what that checkpoint was trained with."""
    import dataclasses

    from frosty_lm.config import GPTConfig
    from frosty_lm.optim import optim_name

    if hparams["vocab"] != vocab:
        raise FrostyError(f"{ckpt_path} was trained on another vocabulary ({len(hparams['vocab'])} characters, this "
                          f"corpus has {len(vocab)}): start from a checkpoint of the same corpus")
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    stored, wanted = {**defaults, **hparams["model"]}, {**defaults, **model}
    for key in ("kind", "block_size", "n_layer", "n_head", "n_embd", "bias", "position", "norm", "qk_norm",
                "activation", "logit_softcap", "tie_weights"):
        if stored.get(key) != wanted.get(key):
            raise FrostyError(f"{ckpt_path} has model.{key}={stored.get(key)}, this run model.{key}={wanted.get(key)}: "
                              f"use the checkpoint's model settings (model.{key}={stored.get(key)})")
    trained, asked = optim_name(hparams.get("optim") or {}), optim_name(optim)
    if trained != asked:
        raise FrostyError(f"{ckpt_path} was trained with optim={trained}, this run asks for optim={asked}: start from "
                          f"it with optim={trained}")


def check_start_state(ckpt_path: str, ckpt: dict, module) -> None:
    """A checkpoint to start from, before Lightning restores it: its weights fit this run's model (module, the
    LightningModule: they are loaded into it, as Lightning would) and are finite, and the optimizer state and the
    random state are there and well formed. An edited or damaged file is refused in one line."""
    import torch

    state = ckpt["state_dict"]
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise FrostyError(f"{ckpt_path} holds weights that do not fit its model ({detail}): the file was edited or "
                          "damaged; start from another checkpoint") from None
    if missing or unexpected:
        what = f"lacks {', '.join(missing[:3])}" if missing else f"has unknown {', '.join(unexpected[:3])}"
        raise FrostyError(f"{ckpt_path} {what}: the file was edited or damaged; start from another checkpoint")
    weights = (t for name, t in state.items() if t.is_floating_point() and name != "best_val_loss")  # inf: none yet
    if not all(torch.isfinite(t).all() for t in weights):
        raise FrostyError(f"{ckpt_path} holds NaN or infinite weights: training cannot go on from them; start from "
                          "an earlier checkpoint (e.g. its run's best.ckpt), or anew")
    optimizers = ckpt.get("optimizer_states")
    if not (isinstance(optimizers, list) and len(optimizers) == 1 and isinstance(optimizers[0], dict)
            and {"state", "param_groups"} <= optimizers[0].keys()):
        raise FrostyError(f"{ckpt_path} holds no optimizer state to go on with: give a checkpoint written by train.py")
    rng = ckpt.get("torch_rng_state")
    if rng is not None and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
                                and rng.shape == torch.get_rng_state().shape):
        raise FrostyError(f"{ckpt_path} holds a damaged random state (torch_rng_state): give a checkpoint written "
                          "by train.py")


def forget_refused_resume() -> None:
    """A resume refused before training leaves its run as it found it: the copy of the resuming command's config
    that Hydra saved in the run (.hydra/resumed-DATE, run_dirs.output_subdir) goes too."""
    import shutil

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    subdir = hydra.output_subdir
    if subdir and Path(subdir).parent.name == ".hydra" and Path(subdir).name.startswith("resumed-"):
        shutil.rmtree(Path(hydra.runtime.output_dir) / subdir, ignore_errors=True)
