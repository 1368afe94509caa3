"""Checks of a composed run config that need no corpus: fail in seconds, with the key and the fix, before
anything is read or written."""
from __future__ import annotations

import math
import re

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from frosty_lm.errors import FrostyError
from frosty_lm.model import GPTConfig


def check_config(cfg: DictConfig) -> None:
    """Fail in seconds, before the corpus is read, on what the config alone shows to be wrong."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        missing = re.search(r"Missing mandatory value: (\S+)", str(err))
        if missing:  # the message names the key in full when an interpolation led to it
            key = missing.group(1) if "." in missing.group(1) else err.full_key
            raise FrostyError(f"{key} has no value: give it on the command line, e.g. {key}=...") from None
        raise FrostyError(str(err).splitlines()[0]) from None
    try:
        GPTConfig(vocab_size=1, **OmegaConf.to_container(cfg.model, resolve=True))
    except (TypeError, ValueError) as err:
        raise FrostyError(str(err)) from None
    for key in ("max_steps", "val_check_interval"):
        value = cfg.trainer.get(key)
        if not isinstance(value, int) or value <= 0:
            raise FrostyError(f"trainer.{key}={value!r} must be a positive integer")
    seed, threads, optim, every = cfg.seed, cfg.get("threads"), cfg.optim, cfg.trainer.get("log_every_n_steps", 1)
    betas = list(optim.betas) if OmegaConf.is_list(optim.betas) else optim.betas
    must(is_int(seed) and 0 <= seed < 2**32, "seed", seed, "an integer in [0, 2**32)")
    must(threads is None or is_int(threads) and threads > 0, "threads", threads,
         "a positive integer, or null for all cores")
    must(is_number(optim.lr) and optim.lr > 0, "optim.lr", optim.lr, "a positive number, e.g. 1e-3")
    must(is_number(optim.weight_decay) and optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay,
         "a number >= 0")
    must(isinstance(betas, list) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
         "optim.betas", betas, "two numbers in [0, 1), e.g. optim.betas=[0.9,0.99]")
    must(is_int(cfg.summary_sample_chars) and cfg.summary_sample_chars >= 0, "summary_sample_chars",
         cfg.summary_sample_chars, "an integer >= 0")
    must(is_int(every) and every >= 0, "trainer.log_every_n_steps", every, "an integer >= 0")


def must(fine: bool, key: str, value, what: str) -> None:
    if not fine:
        raise FrostyError(f"{key}={value!r} must be {what}")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
