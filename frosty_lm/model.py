"""The GPT: a character-level transformer in the style of nanoGPT, with a key/value cache.

Read top to bottom: the config, the key/value cache, the math (attention, feed-forward, a block: functions of
their weights), then the model, whose modules hold the weights and whose forward runs the math.
Shapes: B batch, T time (characters), C channels (n_embd), nh heads, hs head size, V vocabulary.

The math takes its weights as arguments, so that one code path serves both training and generation:
forward looks the weights up in the modules; generation looks them up once per sample (GPT.weights())
and passes them to forward for every character: at one position, the lookups would cost as much as the math.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn import functional as F


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
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1), e.g. model.dropout=0.2")


class KVCache:
    """The keys and values of the positions seen so far, for every layer, in buffers of block_size positions
    filled in place. Each layer stores its new positions with extend(); the model then advance()s the cache
    past them once; reset() empties it for a new context."""

    def __init__(self, n_layer: int, block_size: int) -> None:
        self.block_size = block_size
        self.k: list[torch.Tensor | None] = [None] * n_layer  # per layer (B, nh, block_size, hs), allocated on use
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self._length = 0

    @property
    def length(self) -> int:
        """Positions held."""
        return self._length

    def reset(self) -> None:
        self._length = 0

    def advance(self, T: int) -> None:
        if self._length + T > self.block_size:
            raise ValueError(f"sequence of {self._length + T} characters is longer than block_size={self.block_size}")
        self._length += T

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) of the positions after the held ones -> this layer's keys and values so far
        (B, nh, length + T, hs)."""
        if self._length == 0:  # a new context: (re)allocate for its batch, dtype and device
            B, nh, _, hs = k.shape
            self.k[layer] = k.new_empty(B, nh, self.block_size, hs)
            self.v[layer] = v.new_empty(B, nh, self.block_size, hs)
        T = k.size(2)
        self.k[layer].narrow(2, self._length, T).copy_(k)
        self.v[layer].narrow(2, self._length, T).copy_(v)
        return self.k[layer].narrow(2, 0, self._length + T), self.v[layer].narrow(2, 0, self._length + T)


# ---- the math ---------------------------------------------------------------------------------------------


class BlockWeights(NamedTuple):
    """One block's tensors; each norm or linear layer as the (weight, bias) pair that F.layer_norm/F.linear take."""

    ln1: tuple
    qkv: tuple  # q, k and v of all heads in one matrix (3C, C)
    proj: tuple
    ln2: tuple
    fc: tuple  # (4C, C)
    fc2: tuple  # (C, 4C)


class Weights(NamedTuple):
    tok_emb: torch.Tensor  # (V, C)
    pos_emb: torch.Tensor  # (block_size, C)
    blocks: list[BlockWeights]
    ln_f: tuple
    head: torch.Tensor  # (V, C)


def layer_norm(x: torch.Tensor, weights: tuple) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], *weights, eps=1e-5)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p) if p else x  # p is 0 in eval mode


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, nh, T, hs) over k, v (B, nh, t, hs), where the T queries are the last T of t."""
    T, t = q.size(2), k.size(2)
    if T == 1:  # one new position after a cache: it sees everything
        return F.scaled_dot_product_attention(q, k, v)
    if t != T:  # several new positions after a cache: explicit bottom-right causal mask
        mask = torch.ones(T, t, dtype=torch.bool, device=q.device).tril(diagonal=t - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention(w: BlockWeights, x: torch.Tensor, n_head: int, p: float, cache: KVCache | None, layer: int):
    """Causal self-attention of x (B, T, C), after the cache's positions if there is a cache."""
    B, T, C = x.shape
    qkv = F.linear(x, *w.qkv).view(B, T, 3, n_head, C // n_head)
    q, k, v = qkv.transpose(1, 3).unbind(2)  # each (B, nh, T, hs)
    if cache is not None:  # earlier positions' keys and values: attend over them too
        k, v = cache.extend(layer, k, v)
    if x.is_cpu and torch.is_autocast_enabled("cpu"):  # the CPU's bf16 attention backward is
        with torch.autocast("cpu", enabled=False):  # much slower than fp32's: attend in fp32
            y = attend(q.float(), k.float(), v.float())
    else:
        y = attend(q, k, v)
    y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
    return dropout(F.linear(y, *w.proj), p)  # dropout after attention, not on the attention weights (which would
    # force the slow unfused attention path on the CPU)


def feed_forward(w: BlockWeights, x: torch.Tensor, p: float) -> torch.Tensor:
    return dropout(F.linear(F.gelu(F.linear(x, *w.fc)), *w.fc2), p)


def block(w: BlockWeights, x: torch.Tensor, n_head: int, p: float, cache: KVCache | None, layer: int):
    """One transformer block (pre-norm, residual): x (B, T, C) -> (B, T, C)."""
    x = x + attention(w, layer_norm(x, w.ln1), n_head, p, cache, layer)
    return x + feed_forward(w, layer_norm(x, w.ln2), p)


# ---- the model --------------------------------------------------------------------------------------------


class Block(nn.Module):
    """One block's weights (block() above is its math)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        C = cfg.n_embd
        self.ln1 = nn.LayerNorm(C, bias=cfg.bias)
        self.qkv = nn.Linear(C, 3 * C, bias=cfg.bias)
        self.proj = nn.Linear(C, C, bias=cfg.bias)
        self.ln2 = nn.LayerNorm(C, bias=cfg.bias)
        self.fc = nn.Linear(C, 4 * C, bias=cfg.bias)
        self.fc2 = nn.Linear(4 * C, C, bias=cfg.bias)

    def weights(self) -> BlockWeights:
        return BlockWeights(*((m.weight, m.bias) for m in (self.ln1, self.qkv, self.proj, self.ln2, self.fc, self.fc2)))


# checkpoints written before the math became functions name some weights by the modules that held them
OLD_NAMES = {".attn.qkv.": ".qkv.", ".attn.proj.": ".proj.", ".ffwd.net.0.": ".fc.", ".ffwd.net.2.": ".fc2."}


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("proj.weight", "fc2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        self._register_load_state_dict_pre_hook(self._rename_old_keys)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @staticmethod
    def _rename_old_keys(state_dict: dict, prefix: str, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = key
            for old, name in OLD_NAMES.items():
                new = new.replace(old, name)
            if new != key:
                state_dict[new] = state_dict.pop(key)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_char(self) -> int:
        """Training FLOPs per character, nanoGPT's estimate: 6 per weight-matrix parameter (forward and
        backward; embeddings are lookups, not matmuls), plus 12 L C T for attention over the full context."""
        matrices = sum(p.numel() for name, p in self.named_parameters() if p.dim() == 2 and "emb" not in name)
        return 6 * matrices + 12 * self.cfg.n_layer * self.cfg.n_embd * self.cfg.block_size

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layer, self.cfg.block_size)

    def weights(self) -> Weights:
        """Every tensor that forward reads, looked up once."""
        return Weights(self.tok_emb.weight, self.pos_emb.weight, [b.weights() for b in self.blocks],
                       (self.ln_f.weight, self.ln_f.bias), self.head.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                weights: Weights | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) character ids -> logits (B, T, V), loss (mean over targets != -1, or None).

        With a cache (self.new_cache()), idx holds only the new positions, which follow the cached ones, and
        the cache then holds them too. weights: self.weights(), when the caller has looked them up already.
        """
        w = weights if weights is not None else self.weights()
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} characters is longer than block_size={self.cfg.block_size}")
        p = self.cfg.dropout if self.training else 0.0
        x = dropout(F.embedding(idx, w.tok_emb) + w.pos_emb[start : start + T], p)  # (B, T, C)
        for layer, block_weights in enumerate(w.blocks):
            x = block(block_weights, x, self.cfg.n_head, p, cache, layer)
        if cache is not None:
            cache.advance(T)
        logits = F.linear(layer_norm(x, w.ln_f), w.head)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss
