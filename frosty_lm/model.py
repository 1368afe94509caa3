"""The GPT: a character-level transformer in the style of nanoGPT, with a key/value cache.

Read top to bottom: config, key/value cache, attention, feed-forward, block, the model (forward, the
one-position decoder, generation), then sampling.
Shapes: B batch, T time (characters), C channels (n_embd), nh heads, hs head size.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

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
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}: "
                f"choose n_embd as a multiple of n_head (e.g. model.n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1), e.g. model.dropout=0.2")


class KVCache:
    """The keys and values of the positions seen so far, for every layer: buffers for block_size positions,
    filled in place, rather than tensors concatenated anew for every character."""

    def __init__(self, n_layer: int, block_size: int) -> None:
        self.block_size = block_size
        self.k: list[torch.Tensor | None] = [None] * n_layer  # per layer (B, nh, block_size, hs), allocated on use
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.length = 0  # positions held

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) of the new positions -> this layer's keys and values so far (B, nh, length+T, hs)."""
        if self.length == 0:  # a new context: (re)allocate for its batch, dtype and device
            B, nh, _, hs = k.shape
            self.k[layer] = k.new_empty(B, nh, self.block_size, hs)
            self.v[layer] = v.new_empty(B, nh, self.block_size, hs)
        T = k.size(2)
        self.k[layer].narrow(2, self.length, T).copy_(k)
        self.v[layer].narrow(2, self.length, T).copy_(v)
        return self.k[layer].narrow(2, 0, self.length + T), self.v[layer].narrow(2, 0, self.length + T)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.n_head, self.layer = cfg.n_head, layer  # layer: which of the cache's layers is this one's
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # all heads, q k v at once
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)  # dropout after attention (not on the attention weights,
        # which would force the slow unfused attention path on the CPU)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:  # earlier positions' keys and values: attend over them too
            k, v = cache.extend(self.layer, k, v)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):  # the CPU's bf16 attention backward is
            with torch.autocast("cpu", enabled=False):  # 2.5x slower than fp32's (torch 2.13): attend in fp32
                y = attend(q.float(), k.float(), v.float())
        else:
            y = attend(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(y))


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
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.ffwd = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.ffwd(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.n_layer))
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

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layer, self.cfg.block_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx (B, T) character ids -> logits (B, T, vocab), loss (mean over targets != -1, or None).

        With a cache (self.new_cache()), idx holds only the new positions, which follow the cached ones,
        and the cache then holds them too.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} characters is longer than block_size={self.cfg.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb.weight[start : start + T])  # (B, T, C)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def decoder(self) -> Callable[[torch.Tensor, KVCache], torch.Tensor]:
        """A function (idx (B,), cache) -> logits (B, vocab): the character idx follows the cache's positions,
        and the logits are for the one after it.

        It is forward's math for one position, with every weight looked up once, here: at one position,
        forward's ~90 nn.Module attribute lookups and ~40 module calls cost as much as the arithmetic (on the
        2-core CPU of README: Performance); without them a cached character is ~1.7x cheaper. For generation
        only (no dropout); tests/test_model.py checks it against forward.
        """

        def linear(m: nn.Linear) -> tuple:  # what F.linear takes after x
            return m.weight, m.bias

        def norm(m: nn.LayerNorm) -> tuple:  # what F.layer_norm takes after x
            return m.normalized_shape, m.weight, m.bias, m.eps

        layers = []
        for b in self.blocks:
            fc, act, fc2 = list(b.ffwd.net)[:3]  # Linear, GELU, Linear (then dropout)
            layers.append((b.attn.layer, norm(b.ln1), linear(b.attn.qkv), linear(b.attn.proj), norm(b.ln2),
                           linear(fc), act, linear(fc2)))
        tok_emb, pos_emb, ln_f, head = self.tok_emb.weight, self.pos_emb.weight, norm(self.ln_f), linear(self.head)
        nh, hs = self.cfg.n_head, self.cfg.n_embd // self.cfg.n_head
        block_size = self.cfg.block_size

        def step(idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
            B, pos = idx.size(0), cache.length
            if pos >= block_size:
                raise ValueError(f"sequence of {pos + 1} characters is longer than block_size={block_size}")
            x = F.embedding(idx[:, None], tok_emb) + pos_emb[pos]  # (B, 1, C)
            for layer, ln1, qkv, proj, ln2, fc, act, fc2 in layers:
                qkv_x = F.linear(F.layer_norm(x, *ln1), *qkv)  # (B, 1, 3C)
                q, k, v = qkv_x.view(B, 1, 3, nh, hs).transpose(1, 3).unbind(2)  # each (B, nh, 1, hs)
                y = attend(q, *cache.extend(layer, k, v))  # (B, nh, 1, hs)
                x = x + F.linear(y.reshape(B, 1, -1), *proj)
                x = x + F.linear(act(F.linear(F.layer_norm(x, *ln2), *fc)), *fc2)
            cache.length += 1
            return F.linear(F.layer_norm(x, *ln_f), *head)[:, 0]

        return step

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
        cache, decode = (self.new_cache(), self.decoder()) if use_cache else (None, None)
        for _ in range(max_new_tokens):
            with without_onednn():
                if cache is not None and cache.length:  # only the newest character is new to the model
                    logits = decode(context[:, -1], cache)
                else:
                    logits = self(context, cache=cache)[0][:, -1]
            next_id = sample_next(logits.float(), temperature, top_k, top_p, generator)
            yield next_id
            context = torch.cat((context, next_id[:, None]), dim=1)
            if context.size(1) > self.cfg.block_size:  # crop, and rebuild the cache from the kept half
                context = context[:, -max(1, self.cfg.block_size // 2) :]
                if cache is not None:
                    cache.length = 0


@contextmanager
def without_onednn() -> Iterator[None]:
    """Run tensor ops on the CPU without oneDNN: its set-up per call (~10 us for a GELU over one position)
    costs more than a generation step's small ops themselves. No effect on a GPU."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


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
    # torch.multinomial's own method for one sample (argmax of p / Exp(1) noise; same draws for the same
    # generator), without its input checks, which cost two host syncs per character
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1)
