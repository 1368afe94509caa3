"""Resume: continue a run from its last checkpoint with the config it was started with, and check that a checkpoint
to start from fits this run (run_dirs.run_to_resume has chosen the run)."""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from frosty_lm.checkpoint import load_checkpoint
from frosty_lm.config import FrostyError, GPTConfig, is_int, max_time_seconds
from frosty_lm.optim import optim_name
from frosty_lm.run_dirs import LAST

CONF = Path(__file__).resolve().parents[1] / "conf"
WRITE_KEYS = ("dirpath", "save_dir", "default_root_dir", "name", "version", "sub_dir", "filename")
FOLLOWS_CONF = ("callbacks", "logger")  # what a resumed run takes from today's conf/: they watch training only
ABSENT = object()


def resume_if_asked(cfg: DictConfig) -> tuple[DictConfig, dict | None]:
    """resume=: compose conf/ again with the overrides the run recorded and this command's (Hydra has already put
    this job in the run's directory), to go on from its last.ckpt; nothing in the checkpoint is composed or
    instantiated. Returns the config and the checkpoint read (None without resume=)."""
    if not cfg.get("resume"):
        return cfg, None
    if cfg.get("ckpt_path"):
        raise FrostyError(f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} conflict: resume= continues a run in its "
                          "own directory, ckpt_path= starts a new run from a checkpoint; give one")
    hydra = HydraConfig.get()
    run = Path(hydra.runtime.output_dir)
    last = run / LAST
    ckpt = load_checkpoint(last)
    stored = ckpt["hyper_parameters"].get("config")
    if not isinstance(stored, dict):
        raise FrostyError(f"{last} records no run config (an older Frosty's checkpoint): start a new run from it with "
                          f"ckpt_path={last} and the run's overrides")
    parser = OverridesParser.create()
    recorded = [o for o in recorded_overrides(run, hydra.output_subdir) if not o.startswith("resume=")]
    try:
        parsed = parser.parse_overrides(recorded)
    except HydraException as err:
        raise FrostyError(f"cannot resume {run}: its recorded overrides do not parse ({' '.join(str(err).split())}): "
                          "the run's .hydra/ was edited or damaged") from None
    check_recorded(parsed, run)
    new = [o for o in parser.parse_overrides(list(hydra.overrides.task)) if o.key_or_group != "resume"]
    for override in new:
        if override.key_or_group in hydra.runtime.choices:
            raise FrostyError(f"{override.input_line}: a resumed run keeps the config groups it was started with "
                              f"(leave {override.key_or_group}= out); override single keys instead (e.g. "
                              "trainer.max_steps=5000)")
    given = [f"+{o.input_line}" if o.input_line.startswith("+") and not o.input_line.startswith("++")
             else o.input_line for o in new]  # +key=: a key of the run's own groups (Muon's), set or added
    try:
        cfg, resume = compose(hydra.job.config_name, [*recorded, *given]), cfg.resume
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
    cfg.resume, cfg.ckpt_path = resume, str(last)
    check_more_to_train(ckpt, cfg, run)
    return cfg, ckpt  # (training.fit checks the config, as for a new run)


def recorded_overrides(run: Path, this_subdir: str | None) -> list[str]:
    """The overrides a run was started with, then those of each of its resumes but this one, oldest first."""
    first = run / ".hydra" / "overrides.yaml"
    if not first.is_file():
        raise FrostyError(f"cannot resume {run}: it has no .hydra/overrides.yaml (not a run of train.py): start a new "
                          f"run from it with ckpt_path={run / LAST} and the run's overrides")
    overrides = []
    for file in [first, *sorted((run / ".hydra").glob("resumed-*/overrides.yaml"))]:
        if this_subdir and file.parent == run / this_subdir:
            continue
        try:
            listed = OmegaConf.to_container(OmegaConf.load(file))
        except Exception:  # not YAML, not UTF-8, unreadable: the same answer
            listed = None
        if not (isinstance(listed, list) and all(isinstance(o, str) for o in listed)):
            raise FrostyError(f"{file} is not a list of overrides (damaged or edited): resume only runs of train.py")
        overrides += listed
    return overrides


def check_recorded(overrides: list, run: Path) -> None:
    """A run directory may come from someone else: its recorded overrides may not run code (Hydra's keys, a
    `_target_`), call a resolver, download from a URL that conf/ does not name, or write outside the run."""
    urls = set(re.findall(r"^url:\s*(\S+)", "\n".join(f.read_text() for f in (CONF / "dataset").glob("*.yaml")),
                          flags=re.MULTILINE))
    for override in overrides:
        key, value = override.key_or_group, override.value()
        why = None
        if key.startswith("hydra") or any(part.startswith("_") for part in re.split(r"[./]", key)):
            why = f"sets {key}"
        elif re.search(r"\$\{[^}]*:", override.input_line):
            why = "calls a resolver"
        elif key == "paths.output_dir" or (key.startswith(("callbacks.", "logger.", "trainer.", "paths."))
                                           and key.endswith(WRITE_KEYS) and isinstance(value, str)
                                           and (value.startswith("/") or ".." in Path(value).parts)):
            why = "writes outside the run's directory"
        elif key == "data.url" and value not in urls:
            why = "downloads from a URL that conf/ does not name"
        if why:
            raise FrostyError(f"cannot resume {run}: its recorded override {override.input_line} {why}; resume only "
                              f"runs you trust (or start a new run from its weights with ckpt_path={run / LAST})")


def differences(old, new, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain configs (a key on one side only differs)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [found for key in sorted(set(old) | set(new), key=str)
                for found in differences(old.get(key, ABSENT), new.get(key, ABSENT), f"{prefix}{key}.")]
    return [] if old == new else [prefix.removesuffix(".")]


def check_more_to_train(ckpt: dict, cfg: DictConfig, run: Path) -> None:
    """A run already at its step or time limit is refused with the key to raise, rather than ending without a step."""
    step, max_steps = ckpt.get("global_step"), cfg.trainer.max_steps
    if not (is_int(step) and step >= 0):
        raise FrostyError(f"{run} holds a damaged step count (global_step={step!r}): give a checkpoint written by "
                          "train.py")
    if isinstance(max_steps, int) and step >= max_steps:
        raise FrostyError(f"{run} is at step {step} and trainer.max_steps={max_steps}: nothing to train; give a larger "
                          f"trainer.max_steps (e.g. trainer.max_steps={2 * max_steps})")
    max_time = cfg.trainer.get("max_time")
    elapsed = ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train")
    if max_time and elapsed is not None and elapsed >= max_time_seconds(max_time):
        raise FrostyError(f"{run} has trained {elapsed:.0f} s and trainer.max_time={max_time}: nothing to train; "
                          "give a longer trainer.max_time (DD:HH:MM:SS), or trainer.max_time=null")


def check_compatible(ckpt_path: str, hparams: dict, vocab: str, model: dict, optim: dict) -> None:
    """A checkpoint to start from (hparams: its hyper_parameters) must share this run's vocabulary, model shape and
    optimizer. A setting it does not record (written before the setting existed) was GPTConfig's default."""
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
    """A checkpoint to start from, before Lightning restores it: its weights fit this run's LightningModule (loaded
    into it, as Lightning would) and are finite, and its optimizer and random states are well formed."""
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
    """A resume refused before training leaves its run as it found it: the config Hydra saved for it goes too."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    subdir = hydra.output_subdir
    if subdir and Path(subdir).parent.name == ".hydra" and Path(subdir).name.startswith("resumed-"):
        shutil.rmtree(Path(hydra.runtime.output_dir) / subdir, ignore_errors=True)
