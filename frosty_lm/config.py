"""The model's settings (GPTConfig) and their checks. No torch: config_checks checks a run's model.* keys with
this class before torch loads, and model.py builds the GPT from it. The options (position, norm, qk_norm,
activation, zero_init_proj, logit_softcap, tie_weights) default to the seed's architecture: learned positions,
LayerNorm, GELU, an untied head."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class GPTConfig:
    vocab_size: int
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
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{key}={value!r} must be a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}: choose n_embd as a "
                f"multiple of n_head (e.g. model.n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))})"
            )
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout!r} must be a number in [0, 1), e.g. model.dropout=0.2")
        # (the choices live here, not in model.py: config_checks checks them before torch loads)
        choices = {"position": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"), "activation": ("gelu", "relu2"),
                   "kind": ("gpt", "bigram")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.{key}={getattr(self, key)!r} must be one of: {', '.join(allowed)}")
        for key in ("bias", "compile", "qk_norm", "zero_init_proj", "tie_weights"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"model.{key}={getattr(self, key)!r} must be one of: false, true")
        head_size = self.n_embd // self.n_head
        if self.position == "rope" and head_size % 2:
            raise ValueError(f"model.position=rope needs an even head size, model.n_embd / model.n_head = {head_size}: "
                             f"choose n_embd and n_head so that it is even (e.g. model.n_embd={2 * self.n_embd})")
        cap = self.logit_softcap
        if cap is not None and not (isinstance(cap, (int, float)) and not isinstance(cap, bool)
                                    and math.isfinite(cap) and cap > 0):
            raise ValueError(f"model.logit_softcap={cap!r} must be a positive number (e.g. 30), or null for no cap")
