"""The GPT, a character-level transformer in nanoGPT's style. Top to bottom: the key/value cache, rotary embeddings,
CausalSelfAttention, MLP, Block, GPT and the Bigram baseline, each with one forward for training and cached
generation. Settings: GPTConfig (config.py). Shapes: B batch, T length, C n_embd, nh heads, hs head size, V vocab"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from frosty_lm.config import GPTConfig


class KVCache:
    """One layer's keys and values of one context, in buffers of block_size positions. The caller says which
    positions it feeds (input_pos); the cache stores what it is given there and keeps no position of its own."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.k: torch.Tensor | None = None  # (B, nh, block_size, hs), allocated at a context's position 0
        self.v: torch.Tensor | None = None

    def store(self, input_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at input_pos .. input_pos + T - 1 -> the keys and values of 0 .. that end."""
        if input_pos == 0:  # a new context: (re)allocate for its batch, dtype and device
            B, nh, _, hs = k.shape
            self.k = k.new_empty(B, nh, self.block_size, hs)
            self.v = v.new_empty(B, nh, self.block_size, hs)
        elif self.k is None:
            raise ValueError(f"input_pos={input_pos}, but the cache holds no context: start one at input_pos=0")
        end = input_pos + k.size(2)
        self.k.narrow(2, input_pos, k.size(2)).copy_(k)
        self.v.narrow(2, input_pos, v.size(2)).copy_(v)
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)


def rope_tables(block_size: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (block_size, hs / 2) of the rotary angles: position t turns channel pair i by t * base^(-2i/hs)."""
    frequencies = base ** -(torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs / 2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), frequencies)  # (block_size, hs / 2)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (B, nh, T, hs): each pair of its halves turned by its position's angle (cos, sin)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class RMSNorm(nn.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # autocast leaves rms_norm's dtypes as they are: bf16 q and k meet the fp32 weight, which must follow them
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


def make_norm(cfg: GPTConfig, size: int) -> nn.Module:  # model.norm: LayerNorm (a bias with model.bias) or RMSNorm
    return RMSNorm(size, eps=1e-5) if cfg.norm == "rmsnorm" else nn.LayerNorm(size, bias=cfg.bias)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    return F.dropout(x, p) if training and p else x  # no call where nothing is dropped: generation makes many


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, nh, T, hs) over k, v (B, nh, t, hs), where the T queries are the last T of t."""
    T, t = q.size(2), k.size(2)
    if T == 1:  # one new position after a cache: it sees everything
        return F.scaled_dot_product_attention(q, k, v)
    if t != T:  # several new positions after a cache: explicit bottom-right causal mask
        mask = torch.ones(T, t, dtype=torch.bool, device=q.device).tril(diagonal=t - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class CausalSelfAttention(nn.Module):
    """All heads in one scaled_dot_product_attention; q and k optionally normalised per head and rotated (rope)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        C, self.n_head, self.dropout = cfg.n_embd, cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(C, 3 * C, bias=cfg.bias)  # q, k and v of all heads in one matrix
        self.q_norm = make_norm(cfg, C // cfg.n_head) if cfg.qk_norm else None  # one norm for every head's q
        self.k_norm = make_norm(cfg, C // cfg.n_head) if cfg.qk_norm else None
        self.proj = nn.Linear(C, C, bias=cfg.bias)

    def heads(self, x: torch.Tensor, rope: tuple | None = None) -> tuple[torch.Tensor, ...]:
        """q, k, v (B, nh, T, hs) of x (B, T, C); rope: the (cos, sin) of x's positions. q and k keep their dtype
        (a norm under autocast, or the fp32 angles, would give fp32)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).transpose(1, 3).unbind(2)
        if self.q_norm is None and rope is None:  # the seed's architecture: as they are
            return q, k, v
        dtype = q.dtype
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        return q.to(dtype), k.to(dtype), v

    def forward(self, x: torch.Tensor, rope: tuple | None = None, cache: KVCache | None = None,
                input_pos: int = 0) -> torch.Tensor:
        """x (B, T, C) at input_pos .. input_pos + T - 1 -> (B, T, C); a cache stores x's keys and values, and x
        attends to the earlier positions it holds too."""
        B, T, C = x.shape
        q, k, v = self.heads(x, rope)
        if cache is not None:
            k, v = cache.store(input_pos, k, v)
        if x.is_cpu and torch.is_autocast_enabled("cpu"):  # the CPU's bf16 attention backward is
            with torch.autocast("cpu", enabled=False):  # much slower than fp32's: attend in fp32
                y = attend(q.float(), k.float(), v.float())
        else:
            y = attend(q, k, v)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        # dropout here, not on the attention weights: those would force the CPU's slow unfused attention
        return dropout(self.proj(y), self.dropout, self.training)

    def attention_weights(self, x: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        """What forward's x (no cache) attends to: the causal softmax(q k^T / sqrt(hs)), (B, nh, T, T) in fp32."""
        q, k, _ = self.heads(x, rope)
        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.size(-1))
        causal = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    """The feed-forward: n_embd -> 4 n_embd, GELU or ReLU squared (model.activation), -> n_embd."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.activation, self.dropout = cfg.activation, cfg.dropout
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.fc2 = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        x = F.gelu(x) if self.activation == "gelu" else F.relu(x).square()
        return dropout(self.fc2(x), self.dropout, self.training)


class Block(nn.Module):
    """One transformer block, pre-norm with residuals: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = make_norm(cfg, cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg, cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple | None = None, cache: KVCache | None = None,
                input_pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, cache, input_pos)
        return x + self.mlp(self.ln2(x))


def loss_of(logits: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-entropy (in fp32) over the targets y that are not -1; None without targets."""
    return None if y is None else F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1)


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

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied weight once

    def flops_per_char(self) -> int:
        """Training FLOPs per character, nanoGPT's estimate: 6 per weight-matrix parameter (embeddings are lookups;
        the head is a matmul, tied or not), plus 12 L C T for attention; elementwise work is not counted."""
        matrices = sum(p.numel() for p in self.blocks.parameters() if p.dim() == 2) + self.head.weight.numel()
        return 6 * matrices + 12 * self.cfg.n_layer * self.cfg.n_embd * self.cfg.block_size

    def new_cache(self) -> list[KVCache]:
        return [KVCache(self.cfg.block_size) for _ in self.blocks]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: list[KVCache] | None = None,
                input_pos: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) character ids at input_pos .. -> logits (B, T, V), loss (mean over targets != -1, or None).
        A cache (self.new_cache()) stores idx's keys and values, and idx attends to the earlier positions it holds."""
        end = input_pos + idx.size(1)
        if end > self.cfg.block_size:
            raise ValueError(f"sequence of {end} characters is longer than block_size={self.cfg.block_size}")
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:  # learned positions; else rotary, in attention
            x = x + self.pos_emb.weight[input_pos:end]
        x = dropout(x, self.cfg.dropout, self.training)
        rope = (self.rope_cos[input_pos:end], self.rope_sin[input_pos:end]) if self.cfg.position == "rope" else None
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, None if cache is None else cache[layer], input_pos)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        if self.cfg.logit_softcap is not None:  # squashed smoothly into (-c, c)
            logits = self.cfg.logit_softcap * torch.tanh(logits / self.cfg.logit_softcap)
        return logits, loss_of(logits, targets)


class Bigram(nn.Module):
    """The seed's starting point, a baseline with GPT's interface: the current character picks the next's logits."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.vocab_size)  # row i: the logits after character i
        nn.init.zeros_(self.tok_emb.weight)  # uniform predictions to start with

    def num_params(self) -> int:
        return self.tok_emb.weight.numel()

    def flops_per_char(self) -> int:  # a lookup, no matmul
        return 0

    def new_cache(self) -> list[KVCache]:  # nothing to keep: the next character depends on the current one only
        return []

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: list[KVCache] | None = None,
                input_pos: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.tok_emb(idx)  # (B, T, V)
        return logits, loss_of(logits, targets)


def build(cfg: GPTConfig) -> GPT | Bigram:
    """The model that cfg.kind names."""
    return Bigram(cfg) if cfg.kind == "bigram" else GPT(cfg)
