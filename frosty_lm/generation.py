"""Decoding: the sampling settings' checks, picking a character from logits (greedy, temperature, top-k, top-p), the
loop with a key/value cache, text from a prompt, whole or streamed, and the prompt of a run's closing sample. Torch
only: generate.py starts without Lightning."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from frosty_lm.config import FrostyError, is_int, is_number, must
from frosty_lm.corpus import CharTokenizer
from frosty_lm.model import GPT, Bigram

Model = GPT | Bigram  # what the loop samples from: anything with their forward and new_cache
GREEDY_BELOW = 1e-6  # a temperature this small picks the most likely character anyway


def check_sampling(settings, prefix: str = "") -> None:
    """Sampling settings, where given: generate.py's, and a callback's (prefix callbacks.sample_text., ...)."""
    rules = {"max_new_tokens": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
             "num_samples": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
             "seed": (lambda v: is_int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
             "temperature": (lambda v: is_number(v) and v >= 0, "a number >= 0 (0 means greedy decoding)"),
             "top_k": (lambda v: v is None or is_int(v) and v >= 1, "an integer >= 1, or null for no cut"),
             "top_p": (lambda v: v is None or is_number(v) and 0 < v <= 1,
                       "a number in (0, 1], e.g. top_p=0.9, or null for no nucleus cut")}
    if "prompt" in settings:
        check_text(settings["prompt"], prefix + "prompt")
    for key, (fine, what) in rules.items():
        if key in settings:
            must(fine(settings[key]), prefix + key, settings[key], what)


def check_text(value, key: str) -> None:
    """A setting that is text (a prompt), or null: Hydra reads prompt=1e5, prompt=42 and prompt=true as a number or
    a boolean, whose text ("100000.0", "True") is not what was typed."""
    if value is None or isinstance(value, str):
        return
    what = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, (int, float))
            else "a mapping" if hasattr(value, "keys") else "a list")
    typed = typed_value(key) or str(value)
    fix = "${...} names another setting" if "${" in typed else f"quote it, '{key}=\"{typed}\"'"
    raise FrostyError(f"{key}={typed} was read as {what}, not text: {fix}")


def typed_value(key: str) -> str | None:  # VALUE of key=VALUE as typed in Hydra's command-line overrides, if given
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    overrides = OmegaConf.to_container(HydraConfig.get().overrides.task)  # as typed: a ${...} in one stays text
    for override in reversed(overrides):  # the last given is the one Hydra applied
        name, sep, value = override.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def check_prompt(vocab: str, prompt: str) -> None:
    if unknown := CharTokenizer(vocab).unknown(prompt):
        raise FrostyError(f"prompt characters not in the checkpoint's vocabulary: {', '.join(map(repr, unknown))}; "
                          "remove or replace them")


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one id per row of logits (B, V): greedy at temperature 0 (and below GREEDY_BELOW, where dividing by it
    would overflow to inf and leave no probabilities), else top-k / top-p sampling."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):  # keep the k most likely
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:  # keep the smallest set whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the mass before this one already reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    # torch.multinomial's own method for one sample (argmax of p / Exp(1) noise; same draws for the same
    # generator), without its input checks, which cost two host syncs per character
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1)


@contextmanager
def without_onednn() -> Iterator[None]:
    """CPU ops without oneDNN, whose set-up per call outweighs a generation step's small ops (a process-wide flag)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


@contextmanager
def plain_attributes(model: torch.nn.Module) -> Iterator[None]:
    """Each module's children, parameters and buffers, also as plain attributes: Python then finds them without
    nn.Module.__getattr__, whose lookups are a large share of a small model's time per character. The same objects
    under the same names, in the instance dicts only, and only until the block ends: state and forward are as they
    were. Meanwhile the model must keep its tensors (a sample does): a parameter or module set anew drops its
    copy, but a buffer set anew, a deleted attribute or .to() would leave a copy of the old one until the end."""
    copied = []
    for module in model.modules():
        named = [*module.named_children(), *module.named_parameters(recurse=False),
                 *module.named_buffers(recurse=False)]
        copies = {name: value for name, value in named if name not in module.__dict__}
        module.__dict__.update(copies)
        copied.append((module, copies))
    try:
        yield
    finally:
        for module, copies in copied:
            for name in copies:
                module.__dict__.pop(name, None)


@torch.inference_mode()
def generate(model: Model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens next characters (each (B,)) after the context idx (B, T). The model sees at most
    block_size characters: a full context is cropped to its last block_size // 2 and the cache refilled from them
    (from position 0), so a new character costs one position most of the time. use_cache=False re-runs the whole
    context per character (the same output, slower: the reference for tests and benchmarks)."""
    block_size = model.cfg.block_size
    context = idx[:, -block_size:]
    cache = model.new_cache() if use_cache else None
    cached = 0  # the positions of context that the cache holds: 0 .. cached - 1
    for _ in range(max_new_tokens):
        with without_onednn():
            logits = model(context[:, cached:], cache=cache, input_pos=cached)[0][:, -1]
        if cache is not None:
            cached = context.size(1)
        next_id = sample_next(logits.float(), temperature, top_k, top_p, generator)
        yield next_id
        context = torch.cat((context, next_id[:, None]), dim=1)
        if context.size(1) > block_size:  # crop, and refill the cache from the kept half
            context = context[:, -max(1, block_size // 2):]
            cached = 0


def default_prompt(vocab: str) -> str:
    """Where a sample starts without a prompt: a line break, or the vocabulary's first character."""
    return "\n" if "\n" in vocab else vocab[0]


def prompt_in(vocab: str, prompt: str) -> str:
    """prompt less its characters outside vocab; default_prompt if none is left (a fixed prompt, any corpus)."""
    return "".join(ch for ch in prompt if ch in vocab) or default_prompt(vocab)


def sampled_ids(model: Model, vocab: str, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yield the ids (1,) of the characters that follow prompt, on the model's device, as they are sampled. Until
    the last (or until it is closed), between characters too, the model is in eval mode and its attributes are
    plain (plain_attributes)."""
    device = next(model.parameters()).device
    idx = torch.tensor([CharTokenizer(vocab).encode(prompt)], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with plain_attributes(model):
            yield from generate(model, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
    finally:
        model.train(was_training)


def stream_text(model: Model, vocab: str, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                use_cache: bool = True) -> Iterator[str]:
    """Yield the characters that follow prompt, one at a time, as they are sampled."""
    for next_id in sampled_ids(model, vocab, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache):
        yield vocab[next_id.item()]


def sample_text(model: Model, vocab: str, prompt: str, max_new_tokens: int, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
    """prompt and max_new_tokens sampled characters, read back once at the end (on a GPU the sampling then runs
    ahead of Python instead of waiting for each character)."""
    ids = list(sampled_ids(model, vocab, prompt, max_new_tokens, temperature, top_k, top_p, seed))
    return prompt + (CharTokenizer(vocab).decode(torch.cat(ids).tolist()) if ids else "")


def corpus_prompt(text: str, words: int = 3) -> str:
    """The first words of text's first non-blank line after a line break (so it starts a line); "\n" if none."""
    lines = [line.split() for line in text.split("\n")[1:]]
    first = next((line for line in lines if line), None)
    return " ".join(first[:words]) if first else "\n"
