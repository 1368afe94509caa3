"""sample/copied's index on a large corpus: the time to index every 32-character window of a training split of
N MB (frost.txt repeated, with every copy's characters shifted so that copies differ), its peak memory, and the
time of one validation's query (1,000 sampled characters), against the baseline of reading the split once
(a pass of np.unique over it) measured in the same run.

    python bench/memorisation.py                 # 100 MB
    python bench/memorisation.py --mb 10 --window 64
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import corpus_text, machine  # noqa: E402
from frosty_lm.corpus import WindowIndex  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--window", type=int, default=32)
    args = parser.parse_args()
    frost = np.frombuffer(corpus_text().encode("latin-1", errors="replace"), dtype=np.uint8) % 97
    copies = int(args.mb * 1e6 / len(frost)) + 1
    text = np.concatenate([(frost + i) % 97 for i in range(copies)])[: int(args.mb * 1e6)].astype(np.uint8)
    print(machine())
    start = time.perf_counter()
    np.unique(text)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    index = WindowIndex(text, args.window)
    build = time.perf_counter() - start
    sample = text[len(text) // 2 : len(text) // 2 + 1000].copy()
    sample[500:] = np.random.default_rng(0).integers(0, 97, size=500)
    start = time.perf_counter()
    share = index.copied_share(sample)
    query = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{len(text) / 1e6:.0f} MB, windows of {args.window}: index built in {build:.1f} s "
          f"({build / baseline:.1f}x one np.unique pass, {baseline:.2f} s); query of 1,000 characters "
          f"{1000 * query:.1f} ms (copied share {share:.3f}, expected about 0.48); peak memory {peak:.1f} GB")


if __name__ == "__main__":
    main()
