"""Generation speed: Frosty's key/value cache against re-running the context for every character, and a
check that both give the same text for one seed.

    python bench/generate_speed.py                       # small and large models, 500 characters
    python bench/generate_speed.py --models large --chars 1000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import machine, model_preset  # noqa: E402
from frosty_lm.model import GPT, GPTConfig  # noqa: E402
from frosty_lm.sampling import stream_text  # noqa: E402

VOCAB = "".join(sorted(set("\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")))


def timed(model: GPT, chars: int, use_cache: bool) -> tuple[str, float]:
    start = time.perf_counter()
    text = "".join(stream_text(model, VOCAB, "Whose woods these are", chars, temperature=1.0, seed=7, use_cache=use_cache))
    return text, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small", "large"])
    parser.add_argument("--chars", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.chars} characters per sample, random weights (speed does not depend on them)\n")
    print(f"{'model':8} {'context':>7} {'cached chars/s':>15} {'uncached chars/s':>17} {'speed-up':>9}  same text")
    for name in args.models:
        cfg = model_preset(name)
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=len(VOCAB), **cfg)).eval()
        timed(model, 20, True)  # warm-up
        cached, t_cached = timed(model, args.chars, True)
        uncached, t_uncached = timed(model, args.chars, False)
        print(f"{name:8} {cfg['block_size']:7} {args.chars / t_cached:15,.0f} {args.chars / t_uncached:17,.0f} "
              f"{t_uncached / t_cached:8.1f}x  {'yes' if cached == uncached else 'NO'}")


if __name__ == "__main__":
    main()
