"""Checks of a composed run config that need no corpus: fail in seconds, with the key and the fix, before
anything is read or written. None of them needs torch: train.py runs them before torch and Lightning load."""
from __future__ import annotations

import dataclasses
import re

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from frosty_lm import corpus
from frosty_lm.config import GPTConfig
from frosty_lm.errors import FrostyError
from frosty_lm.schedule import check_scheduler
from frosty_lm.value_checks import check_data, is_int, is_number, must

FLOAT32_MAX = float.fromhex("0x1.fffffep+127")  # torch.finfo(torch.float32).max: optimizer settings are float32 tensors
# the callbacks whose work a validation does at a cadence of their own (callbacks.EveryNValidations)
EVERY_N_VALIDATIONS = ("sample_text", "attention_image", "copied")


def check_early(cfg: DictConfig) -> None:
    """train.py's checks before it loads torch and Lightning (seconds): the config, and that the corpus file is
    there (not read: training checks the rest). Skipped for a resumed run (its config is the one in its
    checkpoint, checked once read); train.py does not call it in a sweep's job (run_training checks it, and
    records a failure in the job's status.json). With ckpt_path, training reads the checkpoint before it looks
    for the corpus: so does the error it reports first, here too."""
    if cfg.get("resume"):
        return
    check_config(cfg)
    if not cfg.get("ckpt_path"):
        data = cfg.data
        file = corpus.locate(data.name, data.data_dir, data.get("path"), data.get("url"))
        if file.exists():  # else it is downloaded when training starts
            corpus.check_regular_file(file)


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
    model = OmegaConf.to_container(cfg.model, resolve=True)
    settings = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"]  # vocab: the corpus's
    for key in model:
        if key not in settings:  # added with +model.KEY=...
            raise FrostyError(f"model.{key} is not a setting of model ({', '.join(sorted(settings))})")
    try:
        GPTConfig(vocab_size=1, **model)
    except (TypeError, ValueError) as err:
        raise FrostyError(str(err)) from None
    for key in ("max_steps", "val_check_interval"):
        value = cfg.trainer.get(key)
        if not isinstance(value, int) or value <= 0:
            raise FrostyError(f"trainer.{key}={value!r} must be a positive integer")
    seed, threads, every = cfg.seed, cfg.get("threads"), cfg.trainer.get("log_every_n_steps", 1)
    must(is_int(seed) and 0 <= seed < 2**32, "seed", seed, "an integer in [0, 2**32)")
    must(threads is None or is_int(threads) and threads > 0, "threads", threads,
         "a positive integer, or null for all cores")
    check_optim(cfg.optim)
    data = cfg.get("data") or {}
    check_data(data.get("batch_size"), data.get("val_fraction", 0.1), data.get("decode_errors", "strict"))
    must(is_int(cfg.summary_sample_chars) and cfg.summary_sample_chars >= 0, "summary_sample_chars",
         cfg.summary_sample_chars, "an integer >= 0")
    must(is_int(every) and every >= 0, "trainer.log_every_n_steps", every, "an integer >= 0")
    clip = cfg.trainer.get("gradient_clip_val")
    must(clip is None or is_number(clip) and clip >= 0, "trainer.gradient_clip_val", clip,
         "a number >= 0 (0 or null: no clipping), e.g. 1.0")
    check_trainer_counts(cfg.trainer)
    max_time_seconds(cfg.trainer.get("max_time"))
    if cfg.get("scheduler") is not None:
        check_scheduler(cfg.scheduler)
    callbacks = cfg.get("callbacks") or {}  # (their constructors check the same, for code that builds them)
    if callbacks.get("sample_text") is not None:
        check_sampling(callbacks.sample_text, prefix="callbacks.sample_text.")
    if callbacks.get("attention_image") is not None:
        check_text(callbacks.attention_image.get("prompt"), "callbacks.attention_image.prompt")
    if callbacks.get("progress_lines") is not None:
        check_progress_lines(callbacks.progress_lines)
    for name in EVERY_N_VALIDATIONS:
        if callbacks.get(name) is not None and "every_n_validations" in callbacks[name]:
            check_every_n_validations(callbacks[name].every_n_validations, name)


def check_progress_lines(settings) -> None:
    """callbacks.progress_lines.* (progress.ProgressLines): a line every N seconds and/or steps, and the steps the
    time estimate waits for."""
    key = "callbacks.progress_lines."
    every_seconds, every_n_steps = settings.get("every_seconds"), settings.get("every_n_steps")
    estimate_after = settings.get("estimate_after", 10)
    must(every_seconds is None or is_number(every_seconds) and every_seconds > 0, key + "every_seconds",
         every_seconds, "a positive number of seconds, or null")
    must(every_n_steps is None or is_int(every_n_steps) and every_n_steps > 0, key + "every_n_steps",
         every_n_steps, "a positive integer, or null")
    must(is_int(estimate_after) and estimate_after > 0, key + "estimate_after", estimate_after, "a positive integer")


def check_every_n_validations(value, name: str) -> None:
    """callbacks.NAME.every_n_validations, of the callbacks that a validation adds to its val loss and checkpoints
    every few validations (EVERY_N_VALIDATIONS)."""
    must(is_int(value) and value >= 1, f"callbacks.{name}.every_n_validations", value,
         "a positive integer N: at every Nth validation and at the last (1: at every validation)")


def check_trainer_counts(trainer: DictConfig) -> None:
    """Lightning's Trainer arguments that count (conf/trainer/default.yaml, and +trainer.accumulate_grad_batches),
    which Lightning would only trip over mid-setup, with a traceback."""
    for key, low, what in (("max_epochs", -1, "an integer >= -1 (-1: no limit; training length is max_steps)"),
                           ("num_sanity_val_steps", -1, "an integer >= -1 (-1: the whole val split)"),
                           ("check_val_every_n_epoch", 1, "a positive integer, or null"),
                           ("accumulate_grad_batches", 1, "a positive integer")):
        value = trainer.get(key)
        must(value is None or is_int(value) and value >= low, f"trainer.{key}", value, what)


MAX_TIME = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")  # DD:HH:MM:SS, as Lightning's Timer reads it


def max_time_seconds(max_time) -> float | None:
    """trainer.max_time in seconds (None: no time limit), from the DD:HH:MM:SS that Lightning's Timer reads; a
    FrostyError for anything else, and for a budget of no time at all."""
    if max_time is None:
        return None
    example = "a time budget DD:HH:MM:SS, e.g. trainer.max_time=00:00:03:00 (3 minutes), or null for none"
    if not isinstance(max_time, str) or not MAX_TIME.fullmatch(max_time.strip()):
        raise FrostyError(f"trainer.max_time={max_time!r} must be {example}")
    days, hours, minutes, seconds = (int(part) for part in max_time.strip().split(":"))
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    must(total > 0, "trainer.max_time", max_time, f"longer than no time: {example}")
    return float(total)


def check_sampling(settings, prefix: str = "") -> None:
    """Sampling settings, where they are given (generate.py's, and the validation sample's, prefix
    callbacks.sample_text.): max_new_tokens and seed integers, max_new_tokens >= 0; temperature a number >= 0;
    top_k a positive integer and top_p in (0, 1], each or null for no cut; prompt text."""
    if "prompt" in settings:
        check_text(settings["prompt"], prefix + "prompt")
    for key in ("max_new_tokens", "seed"):
        if key in settings:
            must(is_int(settings[key]), prefix + key, settings[key], "an integer")
    if "max_new_tokens" in settings:
        must(settings["max_new_tokens"] >= 0, prefix + "max_new_tokens", settings["max_new_tokens"], ">= 0")
    if "temperature" in settings:
        value = settings["temperature"]
        must(is_number(value) and value >= 0, prefix + "temperature", value, "a number >= 0 (0 means greedy decoding)")
    if "top_k" in settings:
        value = settings["top_k"]
        must(value is None or is_int(value) and value >= 1, prefix + "top_k", value, "an integer >= 1, or null for no "
             "cut")
    if "top_p" in settings:
        value = settings["top_p"]
        must(value is None or is_number(value) and 0 < value <= 1, prefix + "top_p", value,
             "a number in (0, 1], e.g. top_p=0.9, or null for no nucleus cut")


def check_text(value, key: str) -> None:
    """A setting that is text (a prompt), or null: Hydra reads prompt=1e5, prompt=42 and prompt=true as a number or
    a boolean, whose text ("100000.0", "True") is not what was typed."""
    if value is None or isinstance(value, str):
        return
    what = "a boolean" if isinstance(value, bool) else "a number" if isinstance(value, (int, float)) else "a list"
    typed = typed_value(key) or str(value)
    raise FrostyError(f"{key}={typed} was read as {what}, not text: quote it, '{key}=\"{typed}\"'")


def typed_value(key: str) -> str | None:
    """The value of key=VALUE as typed on the command line (Hydra's overrides), if it was given there."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    for override in HydraConfig.get().overrides.task:
        name, sep, value = override.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def check_optim(optim: DictConfig) -> None:
    """optim.* (conf/optim/): a known optimizer (no name: adamw, as configs stored before optim=muon), positive
    learning rates, weight decays >= 0, AdamW's betas and Muon's momentum in [0, 1)."""
    name = optim.get("name") or "adamw"
    must(name in ("adamw", "muon"), "optim.name", name, "adamw or muon (optim=adamw | optim=muon)")
    muon = name == "muon"  # Muon's lr and weight decay, and AdamW's for the other weights
    for key in ("lr", "adamw_lr") if muon else ("lr",):
        value = optim.get(key)
        must(is_number(value) and 0 < value <= FLOAT32_MAX, f"optim.{key}", value,
             "a positive number (at most 3.4e38, float32's largest), e.g. 1e-3")
    for key in ("weight_decay", "adamw_weight_decay") if muon else ("weight_decay",):
        value = optim.get(key)
        must(is_number(value) and 0 <= value <= FLOAT32_MAX, f"optim.{key}", value, "a number >= 0 (at most 3.4e38)")
    betas = list(optim.betas) if OmegaConf.is_list(optim.get("betas")) else optim.get("betas")
    must(isinstance(betas, list) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
         "optim.betas", betas, "two numbers in [0, 1), e.g. optim.betas=[0.9,0.99]")
    if muon:
        momentum, adjust = optim.get("momentum"), optim.get("adjust_lr_fn")
        must(is_number(momentum) and 0 <= momentum < 1, "optim.momentum", momentum, "a number in [0, 1), e.g. 0.95")
        must(adjust in ("original", "match_rms_adamw"), "optim.adjust_lr_fn", adjust, "original or match_rms_adamw")
