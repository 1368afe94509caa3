"""The GPT: a character-level transformer in the style of nanoGPT, with a key/value cache.

Read top to bottom: config, attention, feed-forward, block, the model, then sampling.
Shapes: B batch, T time (characters), C channels (n_embd), nh heads, hs head size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn import functional as F

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # one (k, v) per layer, each (B, nh, t, hs)


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
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}: "
                f"choose n_embd as a multiple of n_head (e.g. model.n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1), e.g. model.dropout=0.2")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # all heads, q k v at once
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)  # dropout after attention (not on the attention weights,
        # which would force the slow unfused attention path on the CPU)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:  # earlier positions' keys and values: attend over them too
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):  # the CPU's bf16 attention backward is
            with torch.autocast("cpu", enabled=False):  # 2.5x slower than fp32's (torch 2.13): attend in fp32
                y = attend(q.float(), k.float(), v.float())
        else:
            y = attend(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(y)), (k, v)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, nh, T, hs) over k, v (B, nh, t, hs), where the T queries are the last T of t."""
    T, t = q.size(2), k.size(2)
    if T == 1:  # one new position after a cache: it sees everything
        return F.scaled_dot_product_attention(q, k, v)
    if t != T:  # several new positions after a cache: explicit bottom-right causal mask
        mask = torch.ones(T, t, dtype=torch.bool, device=q.device).tril(diagonal=t - T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias),
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.ffwd = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cache=None):
        a, kv = self.attn(self.ln1(x), cache)
        x = x + a
        x = x + self.ffwd(self.ln2(x))
        return x, kv


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "net.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_char(self) -> int:
        """Training FLOPs per character, nanoGPT's estimate: 6 per weight-matrix parameter (forward and
        backward; embeddings are lookups, not matmuls), plus 12 L C T for attention over the full context."""
        matrices = sum(p.numel() for name, p in self.named_parameters() if p.dim() == 2 and "emb" not in name)
        return 6 * matrices + 12 * self.cfg.n_layer * self.cfg.n_embd * self.cfg.block_size

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx (B, T) character ids -> logits (B, T, vocab), loss (mean over targets != -1, or None), new cache.

        With a cache, idx holds only the new positions, which follow the cached ones.
        """
        B, T = idx.shape
        start = cache[0][0].size(2) if cache else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} characters is longer than block_size={self.cfg.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb.weight[start : start + T])  # (B, T, C)
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache[i] if cache else None)
            new_cache.append(kv)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss, new_cache

    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens next characters (each (B,)) after the context idx (B, T).

        The model sees at most block_size characters. When the context fills the block, it is
        cropped to its last block_size // 2 characters and the cache is rebuilt from them, so each
        new character costs one position most of the time. use_cache=False re-runs the same
        context for every character (same output, slower: the reference for tests and benchmarks).
        temperature 0 means greedy decoding (always the most likely character).
        """
        context = idx[:, -self.cfg.block_size :]
        cache: KVCache | None = None
        for _ in range(max_new_tokens):
            if use_cache and cache is not None:
                logits, _, cache = self(context[:, -1:], cache=cache)
            else:
                logits, _, cache = self(context)
            next_id = sample_next(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            yield next_id
            context = torch.cat((context, next_id[:, None]), dim=1)
            if context.size(1) > self.cfg.block_size:  # crop, and rebuild the cache from the kept half
                context = context[:, -max(1, self.cfg.block_size // 2) :]
                cache = None


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one id per row of logits (B, vocab): greedy at temperature 0, else top-k / top-p sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):  # keep the k most likely
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:  # keep the smallest set whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # mass before this one already reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
