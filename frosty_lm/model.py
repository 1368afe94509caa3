"""The GPT: a character-level transformer in the style of nanoGPT, with a key/value cache.

Read top to bottom: the key/value cache, the math (norms, rotary position embeddings, attention, feed-forward, a
block: functions of their weights), then the model, whose modules hold the weights and whose forward runs the math.
Its settings are a GPTConfig (frosty_lm/config.py, no torch).
Shapes: B batch, T time (characters), C channels (n_embd), nh heads, hs head size, V vocabulary.

The math takes its weights as arguments, so that one code path serves both training and generation:
forward looks the weights up in the modules; generation looks them up once per sample (GPT.weights())
and passes them to forward for every character: at one position, the lookups would cost as much as the math.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn import functional as F

from frosty_lm.config import GPTConfig


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
    """One block's tensors; each linear or norm layer as the (weight, bias) pair that F.linear/F.layer_norm take
    (bias None without model.bias, and always for RMSNorm)."""

    ln1: tuple
    qkv: tuple  # q, k and v of all heads in one matrix (3C, C)
    proj: tuple
    ln2: tuple
    fc: tuple  # (4C, C)
    fc2: tuple  # (C, 4C)
    q_norm: tuple | None = None  # (hs,) with qk_norm: one norm for the queries of every head
    k_norm: tuple | None = None


class Weights(NamedTuple):
    tok_emb: torch.Tensor  # (V, C)
    pos_emb: torch.Tensor | None  # (block_size, C); None with rotary position embeddings
    blocks: list[BlockWeights]
    ln_f: tuple
    head: torch.Tensor  # (V, C); tok_emb itself with tie_weights
    rope: tuple | None = None  # (cos, sin) of every position, each (block_size, hs / 2), with position=rope


def norm(x: torch.Tensor, weights: tuple, kind: str) -> torch.Tensor:
    """x normalised over its last dimension: kind layernorm or rmsnorm; weights (weight, bias or None)."""
    if kind == "rmsnorm":
        # (autocast leaves rms_norm's dtypes as they are: bf16 q and k meet the fp32 weight, which must follow them)
        return F.rms_norm(x, x.shape[-1:], weights[0].to(x.dtype), eps=1e-5)
    return F.layer_norm(x, x.shape[-1:], *weights, eps=1e-5)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p) if p else x  # p is 0 in eval mode


def rope_tables(block_size: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (block_size, hs / 2) of the rotary angles: position t turns channel pair i by t * base^(-2i/hs)."""
    frequencies = base ** -(torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs / 2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), frequencies)  # (block_size, hs / 2)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x (B, nh, T, hs): each pair (x1[i], x2[i]) of its two halves turned by its
    position's angle; cos, sin (T, hs / 2) of x's positions."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def queries_and_keys(w: BlockWeights, q: torch.Tensor, k: torch.Tensor, cfg: GPTConfig, rope: tuple | None):
    """q, k (B, nh, T, hs) as attention takes them: normalised per head (qk_norm), then turned to their positions
    (rope), in their own dtype (a norm under autocast, or the fp32 angles, would give fp32)."""
    if not cfg.qk_norm and rope is None:  # the seed's architecture: as they are
        return q, k
    dtype = q.dtype
    if cfg.qk_norm:
        q, k = norm(q, w.q_norm, cfg.norm), norm(k, w.k_norm, cfg.norm)
    if rope is not None:
        q, k = rotate(q, *rope), rotate(k, *rope)
    return q.to(dtype), k.to(dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, nh, T, hs) over k, v (B, nh, t, hs), where the T queries are the last T of t."""
    T, t = q.size(2), k.size(2)
    if T == 1:  # one new position after a cache: it sees everything
        return F.scaled_dot_product_attention(q, k, v)
    if t != T:  # several new positions after a cache: explicit bottom-right causal mask
        mask = torch.ones(T, t, dtype=torch.bool, device=q.device).tril(diagonal=t - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention(w: BlockWeights, x: torch.Tensor, cfg: GPTConfig, p: float, cache: KVCache | None, layer: int,
              rope: tuple | None):
    """Causal self-attention of x (B, T, C), after the cache's positions if there is a cache; rope: the (cos, sin)
    of x's positions (T, hs / 2), with rotary position embeddings."""
    B, T, C = x.shape
    qkv = F.linear(x, *w.qkv).view(B, T, 3, cfg.n_head, C // cfg.n_head)
    q, k, v = qkv.transpose(1, 3).unbind(2)  # each (B, nh, T, hs)
    q, k = queries_and_keys(w, q, k, cfg, rope)
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


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    return F.gelu(x) if kind == "gelu" else F.relu(x).square()  # gelu | relu2


def feed_forward(w: BlockWeights, x: torch.Tensor, activation: str, p: float) -> torch.Tensor:
    return dropout(F.linear(activate(F.linear(x, *w.fc), activation), *w.fc2), p)


def block(w: BlockWeights, x: torch.Tensor, cfg: GPTConfig, p: float, cache: KVCache | None, layer: int,
          rope: tuple | None):
    """One transformer block (pre-norm, residual): x (B, T, C) -> (B, T, C)."""
    x = x + attention(w, norm(x, w.ln1, cfg.norm), cfg, p, cache, layer, rope)
    return x + feed_forward(w, norm(x, w.ln2, cfg.norm), cfg.activation, p)


def softcap(logits: torch.Tensor, c: float) -> torch.Tensor:
    """Logits squashed smoothly into (-c, c)."""
    return c * torch.tanh(logits / c)


# ---- the model --------------------------------------------------------------------------------------------


def make_norm(cfg: GPTConfig, size: int) -> nn.Module:
    """One norm's weights: LayerNorm (with a bias if model.bias) or RMSNorm (a weight only)."""
    return nn.RMSNorm(size, eps=1e-5) if cfg.norm == "rmsnorm" else nn.LayerNorm(size, bias=cfg.bias)


def pair(module: nn.Module) -> tuple:
    """A linear or norm layer's (weight, bias or None)."""
    return module.weight, getattr(module, "bias", None)


class Block(nn.Module):
    """One block's weights (block() above is its math)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        C = cfg.n_embd
        self.ln1 = make_norm(cfg, C)
        self.qkv = nn.Linear(C, 3 * C, bias=cfg.bias)
        self.q_norm = make_norm(cfg, C // cfg.n_head) if cfg.qk_norm else None
        self.k_norm = make_norm(cfg, C // cfg.n_head) if cfg.qk_norm else None
        self.proj = nn.Linear(C, C, bias=cfg.bias)
        self.ln2 = make_norm(cfg, C)
        self.fc = nn.Linear(C, 4 * C, bias=cfg.bias)
        self.fc2 = nn.Linear(4 * C, C, bias=cfg.bias)

    def weights(self) -> BlockWeights:
        layers = (self.ln1, self.qkv, self.proj, self.ln2, self.fc, self.fc2, self.q_norm, self.k_norm)
        return BlockWeights(*(None if m is None else pair(m) for m in layers))


# checkpoints written before the math became functions name some weights by the modules that held them
OLD_NAMES = {".attn.qkv.": ".qkv.", ".attn.proj.": ".proj.", ".ffwd.net.0.": ".fc.", ".ffwd.net.2.": ".fc2."}


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.position == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg, cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:  # one tensor: a parameter of tok_emb, which the head reads too
            self.head.weight = self.tok_emb.weight
        if cfg.position == "rope":  # computed from the config, so not kept in checkpoints
            cos, sin = rope_tables(cfg.block_size, cfg.n_embd // cfg.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("proj.weight", "fc2.weight")):
                if cfg.zero_init_proj:  # each block starts as the identity
                    nn.init.zeros_(p)
                else:
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
        return sum(p.numel() for p in self.parameters())  # a tied weight once

    def flops_per_char(self) -> int:
        """Training FLOPs per character, nanoGPT's estimate: 6 per weight-matrix parameter (forward and
        backward; embeddings are lookups, not matmuls), plus 12 L C T for attention over the full context. The
        head is a matmul even when it shares the embedding's weight; norms, rotary embeddings, ReLU squared and the
        logit cap are elementwise, a few FLOPs per channel: not counted (as nanoGPT leaves out LayerNorm and GELU)."""
        matrices = sum(p.numel() for p in self.blocks.parameters() if p.dim() == 2) + self.head.weight.numel()
        return 6 * matrices + 12 * self.cfg.n_layer * self.cfg.n_embd * self.cfg.block_size

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layer, self.cfg.block_size)

    def weights(self) -> Weights:
        """Every tensor that forward reads, looked up once."""
        return Weights(self.tok_emb.weight, None if self.pos_emb is None else self.pos_emb.weight,
                       [b.weights() for b in self.blocks], pair(self.ln_f), self.head.weight,
                       (self.rope_cos, self.rope_sin) if self.cfg.position == "rope" else None)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                weights: Weights | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) character ids -> logits (B, T, V), loss (mean over targets != -1, or None).

        With a cache (self.new_cache()), idx holds only the new positions, which follow the cached ones, and
        the cache then holds them too. weights: self.weights(), when the caller has looked them up already.
        """
        w = weights if weights is not None else self.weights()
        B, T = idx.shape
        start = cache.length if cache is not None else 0  # the new positions are start, ..., start + T - 1
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} characters is longer than block_size={self.cfg.block_size}")
        p = self.cfg.dropout if self.training else 0.0
        x = F.embedding(idx, w.tok_emb)  # (B, T, C)
        if w.pos_emb is not None:  # learned positions; else rotary, in attention
            x = x + w.pos_emb[start : start + T]
        x = dropout(x, p)
        rope = None if w.rope is None else (w.rope[0][start : start + T], w.rope[1][start : start + T])
        for layer, block_weights in enumerate(w.blocks):
            x = block(block_weights, x, self.cfg, p, cache, layer, rope)
        if cache is not None:
            cache.advance(T)
        logits = F.linear(norm(x, w.ln_f, self.cfg.norm), w.head)  # (B, T, V)
        if self.cfg.logit_softcap is not None:
            logits = softcap(logits, self.cfg.logit_softcap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss


class Bigram(nn.Module):
    """The seed's starting point, as a baseline beside the GPT: the logits of the next character are a row of a
    V x V table, chosen by the current character alone. The same interface as GPT (forward, weights, new_cache),
    so that it trains, validates, checkpoints and generates through the same code; cfg's sizes but vocab_size
    and block_size (the context the data and sampling use) are not used."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.vocab_size)  # row i: the logits after character i
        nn.init.zeros_(self.tok_emb.weight)  # uniform predictions to start with

    def num_params(self) -> int:
        return self.tok_emb.weight.numel()

    def flops_per_char(self) -> int:
        return 0  # a lookup, no matmul

    def new_cache(self) -> KVCache:
        return KVCache(0, self.cfg.block_size)  # nothing to keep but the position

    def weights(self) -> torch.Tensor:
        return self.tok_emb.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, V), loss: as GPT.forward."""
        logits = F.embedding(idx, weights if weights is not None else self.tok_emb.weight)  # (B, T, V)
        if cache is not None:
            cache.advance(idx.size(1))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss


def build(cfg: GPTConfig) -> GPT | Bigram:
    """The model that cfg.kind names."""
    return Bigram(cfg) if cfg.kind == "bigram" else GPT(cfg)

