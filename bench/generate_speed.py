"""Generation speed: Frosty's key/value cache against re-running the context for every character, and a
check that both give the same text for one seed.

    python bench/generate_speed.py                       # small and large models (as train.py builds them on this
                                                         # machine), 500 characters
    python bench/generate_speed.py --models large --chars 1000 --rounds 5
    python bench/generate_speed.py --baseline 55e6b4b    # cached speed against an earlier commit's, in one process

Cached and uncached runs alternate (C U C U ...), so that both see the same machine; the speed-up is the
median of the rounds' ratios. With --baseline, this checkout's cached generation and the commit's alternate in one
process (its frosty_lm imported under another name), over many short rounds: a busy machine moves both alike.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import ROOT, machine, model_preset  # noqa: E402
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


def baseline_sampler(commit: str, cfg: dict, directory: Path):
    """stream_text of `commit`'s code with the small model built as that code builds it: its frosty_lm extracted
    into directory as the package frosty_baseline."""
    archive = subprocess.run(["git", "archive", commit, "frosty_lm"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    package = directory / "frosty_baseline"
    (directory / "frosty_lm").rename(package)
    for file in package.glob("*.py"):
        file.write_text(file.read_text().replace("frosty_lm", "frosty_baseline"))
    sys.path.insert(0, str(directory))
    config, model = (importlib.import_module(f"frosty_baseline.{name}") for name in ("config", "model"))
    names = [n for n in ("generation", "sampling") if (package / f"{n}.py").is_file()]
    decoding = next(m for m in map(importlib.import_module, (f"frosty_baseline.{n}" for n in names))
                    if hasattr(m, "stream_text"))
    torch.manual_seed(0)
    gpt = model.GPT(config.GPTConfig(vocab_size=len(VOCAB), **cfg)).eval()
    return lambda chars: "".join(decoding.stream_text(gpt, VOCAB, "Whose woods these are", chars, temperature=1.0,
                                                      seed=7))


def against_baseline(commit: str, chars: int, rounds: int) -> None:
    cfg = model_preset("small")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(VOCAB), **cfg)).eval()
    with tempfile.TemporaryDirectory() as directory:
        samplers = {"this checkout": lambda n: timed(model, n, True)[0],
                    commit: baseline_sampler(commit, cfg, Path(directory))}
        for sample in samplers.values():
            sample(50)  # warm-up
        seconds = {name: [] for name in samplers}
        for round_ in range(rounds):
            for name, sample in (samplers.items() if round_ % 2 else reversed(samplers.items())):
                start = time.perf_counter()
                sample(chars)
                seconds[name].append(time.perf_counter() - start)
        sys.path.remove(directory)
    ratio = statistics.median(b / a for a, b in zip(seconds["this checkout"], seconds[commit]))
    print(f"small model, cached: this checkout {chars / statistics.median(seconds['this checkout']):,.0f} chars/s, "
          f"{commit} {chars / statistics.median(seconds[commit]):,.0f} chars/s; ratio (median of {rounds} rounds' "
          f"ratios): {ratio:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small", "large"])
    parser.add_argument("--chars", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="cached/uncached pairs per model")
    parser.add_argument("--baseline", metavar="COMMIT", help="compare cached generation with COMMIT's instead")
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.chars} characters per sample, random weights (speed does not depend on them)\n")
    if args.baseline:
        against_baseline(args.baseline, min(args.chars, 300), max(args.rounds, 40))
        return
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
