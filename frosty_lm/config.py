"""A run's settings and their checks, without torch: each node's schema (Hydra checks the types as the config
composes, its __post_init__ the ranges: check_config builds each before torch loads), and FrostyError."""
from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig


class FrostyError(Exception):
    """A problem with the user's input (config, corpus, checkpoint, prompt). Its message names the fix."""


def must(fine: bool, key: str, value, what: str) -> None:
    if not fine:
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
        raise FrostyError(f"{key}={shown} must be {what}")  # as Hydra spells it


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


FLOAT32_MAX = float.fromhex("0x1.fffffep+127")  # torch.finfo(torch.float32).max: for settings that become float32


@dataclass
class ModelConfig:
    """The model node (conf/model/) and Hydra's schema/model/gpt: types checked as the config composes, ranges here."""

    block_size: int = 256  # longest context the model attends over
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = True  # bias in Linear and LayerNorm layers
    compile: bool = False  # torch.compile the model for training (FrostyLM); no change to the model itself
    position: str = "learned"  # learned: a table of position embeddings; rope: rotary embeddings of q and k
    norm: str = "layernorm"  # layernorm | rmsnorm, everywhere a norm is
    qk_norm: bool = False  # normalise q and k per head (with `norm`) before attention
    activation: str = "gelu"  # gelu | relu2 (ReLU squared) in the feed-forward
    zero_init_proj: bool = False  # attention's and the feed-forward's output projections start at zero
    logit_softcap: float | None = None  # c: logits = c * tanh(logits / c); None: no cap
    tie_weights: bool = False  # the output head shares the token embedding's weight
    kind: str = "gpt"  # gpt | bigram: the next character from the current one only (a table; the seed's start)

    def __post_init__(self) -> None:
        sizes = ("block_size", "n_layer", "n_head", "n_embd", "vocab_size")  # (larger would overflow torch's)
        for key in (key for key in sizes if hasattr(self, key)):  # vocab_size: GPTConfig's
            if not is_int(getattr(self, key)) or not 0 < getattr(self, key) <= 2**24:
                raise ValueError(f"model.{key}={getattr(self, key)!r} must be a positive integer (at most 2**24)")
        if self.n_embd % self.n_head:  # (rope: a multiple of 2 * n_head, for an even head size)
            step = self.n_head * (2 if self.position == "rope" else 1)
            example = step * max(1, round(self.n_embd / step))
            raise ValueError(f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}: choose "
                             f"n_embd as a multiple of n_head (e.g. model.n_embd={example})")
        if not is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout!r} must be a number in [0, 1), e.g. model.dropout=0.2")
        choices = {"position": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"), "activation": ("gelu", "relu2"),
                   "kind": ("gpt", "bigram")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.{key}={getattr(self, key)!r} must be one of: {', '.join(allowed)}")
        for key in ("bias", "compile", "qk_norm", "zero_init_proj", "tie_weights"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"model.{key}={getattr(self, key)!r} must be one of: false, true")
        if self.position == "rope" and (head_size := self.n_embd // self.n_head) % 2:
            raise ValueError(f"model.position=rope needs an even head size, model.n_embd / model.n_head = {head_size}: "
                             f"choose n_embd and n_head so that it is even (e.g. model.n_embd={2 * self.n_embd})")
        if (cap := self.logit_softcap) is not None and not (is_number(cap) and 0 < cap <= FLOAT32_MAX):
            raise ValueError(f"model.logit_softcap={cap!r} must be a positive number (e.g. 30; at most 3.4e38), or "
                             "null for no cap")


@dataclass
class GPTConfig(ModelConfig):
    """The model's settings and the corpus's vocabulary size: what model.py builds a model from."""

    vocab_size: int = dataclasses.field(kw_only=True)  # checked with the other sizes


# The other nodes' schemas, registered by cli.py as the model's (trainer.* has none: it is Lightning's).
@dataclass
class AdamWConfig:
    name: str
    lr: float
    weight_decay: float
    betas: list[float]

    def __post_init__(self) -> None:
        for lr, decay in (("lr", "weight_decay"), ("adamw_lr", "adamw_weight_decay")):  # adamw_*: MuonConfig's
            if hasattr(self, lr):
                must(is_number(v := getattr(self, lr)) and 0 < v <= FLOAT32_MAX, f"optim.{lr}", v,
                     "a positive number (at most 3.4e38, float32's largest), e.g. 1e-3")
                must(is_number(v := getattr(self, decay)) and 0 <= v <= FLOAT32_MAX, f"optim.{decay}", v,
                     "a number >= 0 (at most 3.4e38)")
        betas = list(self.betas) if isinstance(self.betas, Sequence) and not isinstance(self.betas, str) else self.betas
        must(isinstance(betas, list) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
             "optim.betas", betas, "two numbers in [0, 1), e.g. optim.betas=[0.9,0.99]")


@dataclass
class MuonConfig(AdamWConfig):  # lr and weight_decay: Muon's; adamw_*: AdamW's, for the weights Muon leaves
    momentum: float
    adjust_lr_fn: str
    adamw_lr: float
    adamw_weight_decay: float

    def __post_init__(self) -> None:
        super().__post_init__()
        must(is_number(self.momentum) and 0 <= self.momentum < 1, "optim.momentum", self.momentum, "a number in [0, 1)")
        must(self.adjust_lr_fn in ("original", "match_rms_adamw"), "optim.adjust_lr_fn", self.adjust_lr_fn,
             "original or match_rms_adamw")


@dataclass
class ConstantSchedule:
    name: str
    warmup_steps: int

    def __post_init__(self) -> None:
        must(is_int(self.warmup_steps) and self.warmup_steps >= 0, "scheduler.warmup_steps", self.warmup_steps,
             "an integer >= 0, e.g. 100")


@dataclass
class CosineSchedule(ConstantSchedule):
    decay_steps: int
    min_lr_ratio: float  # below 0 the lr would turn negative, above 1 it would not decay

    def __post_init__(self) -> None:
        super().__post_init__()
        must(is_int(self.decay_steps) and self.decay_steps > 0, "scheduler.decay_steps", self.decay_steps,
             "a positive integer (it defaults to trainer.max_steps)")
        must(is_number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "scheduler.min_lr_ratio",
             self.min_lr_ratio, "a number in [0, 1]: the share of the lr that the decay ends at, e.g. 0.1")


@dataclass
class DataConfig:
    _target_: str
    name: str
    data_dir: str
    block_size: int
    batch_size: int
    val_fraction: float
    seed: int
    path: str | None  # dataset=text's file
    url: str | None
    sha256: str | None
    decode_errors: str

    def __post_init__(self) -> None:  # the settings that need no corpus
        must(is_int(self.batch_size) and self.batch_size > 0, "data.batch_size", self.batch_size, "a positive integer")
        must(is_number(self.val_fraction) and 0 < self.val_fraction < 1, "data.val_fraction", self.val_fraction,
             "between 0 and 1, e.g. 0.1")
        must(self.decode_errors in ("strict", "replace"), "data.decode_errors", self.decode_errors, "strict or replace")


SCHEMAS = {"model": {"gpt": ModelConfig}, "optim": {"adamw": AdamWConfig, "muon": MuonConfig},
           "scheduler": {"constant": ConstantSchedule, "cosine": CosineSchedule}, "data": {None: DataConfig}}
CHOICES = {"optim": "adamw or muon (optim=adamw | optim=muon)",
           "scheduler": "constant or cosine (scheduler=constant | cosine)"}


def check_config(cfg: DictConfig) -> None:
    """What the config alone shows to be wrong, in seconds (callbacks.*: where conf/callbacks/ builds them)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

    must(is_int(cfg.seed) and 0 <= cfg.seed < 2**32, "seed", cfg.seed, "an integer in [0, 2**32)")
    must(cfg.get("threads") is None or is_int(cfg.threads) and 0 < cfg.threads <= (os.cpu_count() or 1), "threads",
         cfg.get("threads"), f"a positive integer up to this machine's {os.cpu_count() or 1} cores, or null for all")
    must(is_int(chars := cfg.summary_sample_chars) and chars >= 0, "summary_sample_chars", chars, "an integer >= 0")
    for node in (node for node in (*SCHEMAS, "trainer") if cfg.get(node) is None):  # ~scheduler, scheduler=null
        raise FrostyError(f"{node} is not set: choose one of its options, {'dataset' if node == 'data' else node}=NAME "
                          "(python train.py --help)")
    try:  # (after seed: data.seed is ${seed}, typed by the data node's schema)
        check_trainer(cfg.trainer)  # first: scheduler.decay_steps follows trainer.max_steps
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        missing = re.search(r"Missing mandatory value: (\S+)", str(err))
        if missing:  # the message names the key in full when an interpolation led to it
            key = missing.group(1) if "." in missing.group(1) else err.full_key
            raise FrostyError(f"{key} has no value: give it on the command line, e.g. {key}=...") from None
        if isinstance(err, InterpolationResolutionError):
            raise  # its line, with the key and how to escape ${, is exit_on_user_error's
        raise FrostyError(str(err).splitlines()[0]) from None
    window = OmegaConf.select(cfg, "callbacks.throughput.window_size", default=None)  # Lightning asserts it
    must(window is None or is_int(window) and window > 1, "callbacks.throughput.window_size", window, "an integer >= 2")
    must(cfg.data.block_size == cfg.model.block_size, "data.block_size", cfg.data.block_size,
         f"model.block_size ({cfg.model.block_size}), which it follows: set model.block_size instead")
    for node, schemas in SCHEMAS.items():  # each node's schema, built from its values: __post_init__ checks them
        name = cfg[node].get("name") if node in CHOICES else next(iter(schemas))
        must(name in schemas, f"{node}.name", name, CHOICES.get(node, ""))
        settings = [f.name for f in dataclasses.fields(schemas[name])]
        switch = f"{node}=NAME switches {node} with its settings, {node}.name alone does not"
        for key in (key for key in cfg[node] if key not in settings):  # added with +NODE.KEY=..., beyond the schema
            other = any(key in s.__dataclass_fields__ for s in schemas.values())  # another option's: NODE.name=...
            raise FrostyError(f"{node}.{key} is not a setting of {node} ({', '.join(sorted(settings))})"
                              + f"; {switch}" * other)
        try:  # a TypeError: an option's settings missing (after optim.name=muon); model and data have every key
            schemas[name](**OmegaConf.to_container(cfg[node], resolve=True))
        except (TypeError, ValueError) as err:
            raise FrostyError(str(err) if isinstance(err, ValueError) else f"{node}.name={name}: {switch}") from None


def check_trainer(trainer: DictConfig) -> None:
    """trainer.*: the keys Frosty reads, and those Lightning would only trip over mid-setup, with a traceback."""
    for key, low, what in (("max_steps", 1, "a positive integer"), ("accumulate_grad_batches", 1, "a positive integer"),
                           ("val_check_interval", 1, "a positive integer"), ("log_every_n_steps", 0, "an integer >= 0"),
                           ("max_epochs", 1, "a positive integer, or -1 (no limit; training length is max_steps)"),
                           ("num_sanity_val_steps", -1, "an integer >= -1 (-1: the whole val split)"),
                           ("check_val_every_n_epoch", 1, "a positive integer, or null")):
        value = trainer.get(key, 1 if key == "log_every_n_steps" else None)
        optional = key not in ("max_steps", "val_check_interval")
        fine = is_int(value) and (value >= low or key == "max_epochs" and value == -1)
        must(optional and value is None or fine, f"trainer.{key}", value, what)
    must((n := trainer.get("accumulate_grad_batches") or 1) < 2**63, "trainer.accumulate_grad_batches", n, "< 2**63")
    must((clip := trainer.get("gradient_clip_val")) is None or is_number(clip) and clip >= 0,
         "trainer.gradient_clip_val", clip, "a number >= 0 (0 or null: no clipping), e.g. 1.0")
    max_time_seconds(trainer.get("max_time"))
    if str(trainer.get("precision")) == "16-true":  # AdamW's epsilon rounds to 0 in float16: NaN at the first update
        raise FrostyError("trainer.precision=16-true keeps the weights and AdamW's state in float16, where its first "
                          "update gives NaN: use 16-mixed (on a GPU), bf16-mixed or 32-true")


def max_time_seconds(max_time) -> float | None:
    """trainer.max_time in seconds (None: no time limit), from the DD:HH:MM:SS that Lightning's Timer reads."""
    if max_time is None:
        return None
    example = "a time budget DD:HH:MM:SS, e.g. trainer.max_time=00:00:03:00 (3 minutes), or null for none"
    if not isinstance(max_time, str) or not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", max_time.strip()):
        raise FrostyError(f"trainer.max_time={max_time!r} must be {example}")
    total = sum(int(part) * unit for part, unit in zip(max_time.strip().split(":"), (86400, 3600, 60, 1)))
    must(total > 0, "trainer.max_time", max_time, f"longer than no time: {example}")
    return float(total)
