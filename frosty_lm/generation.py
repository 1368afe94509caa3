"""generate.py's work: load a checkpoint, check the request, stream samples to stdout."""
from __future__ import annotations

import os
import sys

import torch
from omegaconf import DictConfig

from frosty_lm.checkpoint import latest_checkpoint, load_checkpoint, model_from_checkpoint
from frosty_lm.config_checks import is_int, is_number, must
from frosty_lm.errors import FrostyError
from frosty_lm.sampling import default_prompt, stream_text
from frosty_lm.tokenizer import CharTokenizer


def check_request(cfg: DictConfig, vocab: str) -> tuple[str, int | None]:
    """The prompt to use and the top_k to use (clamped to the vocabulary), or a FrostyError."""
    for key in ("max_new_tokens", "num_samples", "seed", "top_k"):  # top_k and top_p may be null
        must(cfg[key] is None and key == "top_k" or is_int(cfg[key]), key, cfg[key], "an integer")
    for key in ("temperature", "top_p"):
        must(cfg[key] is None or is_number(cfg[key]), key, cfg[key], "a finite number")
    if cfg.temperature is None:
        raise FrostyError("temperature=null must be a number >= 0 (0 means greedy decoding)")
    if cfg.max_new_tokens < 0:
        raise FrostyError(f"max_new_tokens={cfg.max_new_tokens} must be >= 0")
    if cfg.num_samples < 1:
        raise FrostyError(f"num_samples={cfg.num_samples} must be >= 1")
    if cfg.temperature < 0:
        raise FrostyError(f"temperature={cfg.temperature} must be >= 0 (0 means greedy decoding)")
    if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
        raise FrostyError(f"top_p={cfg.top_p} must be in (0, 1], e.g. top_p=0.9, or top_p=null for no nucleus cut")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise FrostyError(f"top_k={cfg.top_k} must be >= 1, or top_k=null for no cut")
    top_k = None if cfg.top_k is None else min(cfg.top_k, len(vocab))
    prompt = str(cfg.prompt) if cfg.prompt is not None else ""
    if not prompt:  # documented: an empty prompt starts from a line break (or the first character)
        prompt = default_prompt(vocab)
    unknown = CharTokenizer(vocab).unknown(prompt)
    if unknown:
        raise FrostyError(f"prompt characters not in the checkpoint's vocabulary: {', '.join(map(repr, unknown))}; "
                          "remove or replace them")
    return prompt, top_k


def run_generation(cfg: DictConfig) -> None:
    path = cfg.ckpt_path
    if not path:
        path = latest_checkpoint(cfg.paths.outputs_dir)
        print(f"using the newest run's best checkpoint: {path}", file=sys.stderr)
    model, vocab = model_from_checkpoint(load_checkpoint(path), path)
    prompt, top_k = check_request(cfg, vocab)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model.to(device)
    except (RuntimeError, ValueError, AssertionError) as err:
        raise FrostyError(f"device={device!r} cannot be used here ({' '.join(str(err).split())[:120]}): "
                          "use device=cpu, or device=cuda on a machine with a GPU") from None
    with torch.inference_mode():
        idx = torch.tensor([CharTokenizer(vocab).encode(prompt)[-model.cfg.block_size:]], device=device)
        if not torch.isfinite(model(idx)[0]).all():
            raise FrostyError(f"{path} gives non-finite predictions (its weights hold NaN or inf): use another "
                              "checkpoint, e.g. the run's best.ckpt")
    try:
        for i in range(cfg.num_samples):
            if i:
                print(f"--- sample {i + 1} ---", file=sys.stderr, flush=True)
            sys.stdout.write(prompt)
            chars = stream_text(model, vocab, prompt, cfg.max_new_tokens, cfg.temperature, top_k, cfg.top_p,
                                cfg.seed + i)
            for ch in chars:
                sys.stdout.write(ch)
                sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (generate.py | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
