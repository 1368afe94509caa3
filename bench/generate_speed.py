"""Generation speed: Frosty's key/value cache against re-running the context for every character, and a
check that both give the same text for one seed.

    python bench/generate_speed.py                       # small and large models (as train.py builds them on this
                                                         # machine), 500 characters
    python bench/generate_speed.py --models large --chars 1000 --rounds 5

Cached and uncached runs alternate (C U C U ...), so that both see the same machine; the speed-up is the
median of the rounds' ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import machine, model_preset  # noqa: E402
from frosty_lm.config import GPTConfig  # noqa: E402
from frosty_lm.generation import stream_text  # noqa: E402
from frosty_lm.model import GPT  # noqa: E402

VOCAB = "".join(sorted(set("\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")))


def timed(model: GPT, chars: int, use_cache: bool) -> tuple[str, float]:
    start = time.perf_counter()
    text = "".join(
        stream_text(model, VOCAB, "Whose woods these are", chars, temperature=1.0, seed=7, use_cache=use_cache)
    )
    return text, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small", "large"])
    parser.add_argument("--chars", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="cached/uncached pairs per model")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.chars} characters per sample, random weights (speed does not depend on them)\n")
    print(f"{'model':8} {'layers':>6} {'context':>7} {'cached chars/s':>15} {'uncached chars/s':>17} "
          f"{'speed-up':>9}  same text")
    for name in args.models:
        cfg = model_preset(name)
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=len(VOCAB), **cfg)).eval()
        timed(model, 20, True)  # warm-up
        texts, cached, uncached = set(), [], []
        for _ in range(args.rounds):
            for use_cache, times in ((True, cached), (False, uncached)):
                text, seconds = timed(model, args.chars, use_cache)
                texts.add(text)
                times.append(seconds)
        ratio = statistics.median(u / c for u, c in zip(uncached, cached))
        print(f"{name:8} {cfg['n_layer']:6} {cfg['block_size']:7} {args.chars / statistics.median(cached):15,.0f} "
              f"{args.chars / statistics.median(uncached):17,.0f} {ratio:8.1f}x  {'yes' if len(texts) == 1 else 'NO'}")


if __name__ == "__main__":
    main()
