"""Ctrl-C at random moments of train.py's first seconds: every run must end with one line and exit status 130,
"interrupted by SIGINT before training started: nothing was saved" or, once training has begun, the command that
continues it; never a traceback, another status, or a signal lost (the run training to its end).

    python bench/signal_moments.py                        # 100 runs, SIGINT 0.15-5 s after launch
    python bench/signal_moments.py --runs 40 --latest 1.6 # only while Hydra, torch and Lightning load

Each run is the tiny model on a small corpus of its own, in a temporary directory; the moments are random with
a fixed seed (--seed). Prints each odd run's output tail, then the tally.
"""
from __future__ import annotations

import argparse
import collections
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def outcome(code: int, output: str) -> str:
    last = output.rstrip().splitlines()[-1] if output.strip() else ""
    if code != 130 or "Traceback" in output:
        return "odd"
    if last.endswith("interrupted by SIGINT before training started: nothing was saved"):
        return "before training"
    return "during training" if "continue with" in last else "odd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--earliest", type=float, default=0.15, help="seconds after launch")
    parser.add_argument("--latest", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    moments = random.Random(args.seed)
    tally = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("Whose woods these are I think I know.\nHis house is in the village though;\n" * 200)
        for i in range(args.runs):
            delay = moments.uniform(args.earliest, args.latest)
            proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "model=tiny", "dataset=text",
                                     f"data.path={corpus}", "trainer.max_steps=3000", f"hydra.run.dir={tmp}/r{i}"],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            output = proc.communicate(timeout=300)[0]
            kind = outcome(proc.returncode, output)
            tally[kind] += 1
            if kind == "odd":
                print(f"odd: SIGINT after {delay:.3f} s, exit status {proc.returncode}\n{output[-1500:]}\n", flush=True)
    print(f"{args.runs} runs, SIGINT {args.earliest}-{args.latest} s after launch: "
          + ", ".join(f"{n} {kind}" for kind, n in tally.most_common()))


if __name__ == "__main__":
    main()
