"""Text in, text out: sampling a GPT from a prompt, as a whole string or character by character."""
from __future__ import annotations

from typing import Iterator

import torch

from frosty_lm.model import GPT
from frosty_lm.tokenizer import CharTokenizer


def default_prompt(vocab: str) -> str:
    """Where a sample starts without a prompt: a line break, or the vocabulary's first character."""
    return "\n" if "\n" in vocab else vocab[0]


def stream_text(model: GPT, vocab: str, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                use_cache: bool = True) -> Iterator[str]:
    """Yield the characters that follow prompt, one at a time, as they are sampled."""
    tokenizer = CharTokenizer(vocab)
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for next_id in model.generate(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache):
            yield tokenizer.chars[next_id.item()]
    finally:
        model.train(was_training)


def sample_text(model: GPT, vocab: str, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
    """prompt followed by max_new_tokens sampled characters."""
    return prompt + "".join(stream_text(model, vocab, prompt, max_new_tokens, temperature, top_k, top_p, seed))
