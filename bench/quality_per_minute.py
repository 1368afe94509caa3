"""Quality per minute: the val loss that the default `python train.py`, the speedrun preset (+experiment=speedrun)
and nanoGPT's CPU recipe (bench/time_to_quality.py's reference) reach in 1, 2 and 5 minutes on frost, one run at a
time on all cores. The default and the preset get each budget as trainer.max_time (their schedule laid over the
time, or over their steps if those run out first); the
reference trains its 2,000 steps once, and its column is its val loss at its last validation by the time (from
launch) of the other two's last one in each budget. The runs are kept, for the plot of val loss against wall time:

    python bench/quality_per_minute.py --out outputs/quality_per_minute
    python -m frosty_lm.report outputs/quality_per_minute/*_5min outputs/quality_per_minute/reference --x time \
        --out outputs/quality_per_minute
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import NANOGPT_CPU_RECIPE, machine, timed_run  # noqa: E402

RECIPES = {"default": [], "speedrun": ["+experiment=speedrun"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the runs")
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 2, 5])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    print(machine())
    reference = timed_run(NANOGPT_CPU_RECIPE, args.out.resolve(), "reference")
    print(f"reference: {reference.wall:.0f} s from launch to exit, final val loss {reference.curve[-1][1]:.4f}",
          flush=True)
    rows = {}
    for minutes in args.minutes:
        for name, overrides in RECIPES.items():
            run = timed_run([*overrides, f"trainer.max_time=00:00:{minutes:02d}:00"], args.out.resolve(),
                            f"{name}_{minutes}min")
            rows[minutes, name] = run
            print(f"{name}, {minutes} min: best val loss {run.status['best_val_loss']:.4f} after "
                  f"{run.status['steps']} steps, {run.wall:.0f} s from launch to exit", flush=True)
    print("\n| budget | default `python train.py` | `+experiment=speedrun` | nanoGPT's CPU recipe (reference) |")
    print("| --- | --- | --- | --- |")
    for minutes in args.minutes:
        cutoff = max(rows[minutes, name].curve[-1][0] for name in RECIPES)  # their last validation, from launch
        within = [loss for seconds, loss in reference.curve if seconds <= cutoff]
        ref = f"{within[-1]:.3f}" if within else "(no validation yet)"
        cells = [f"{rows[minutes, name].status['best_val_loss']:.3f} ({rows[minutes, name].status['steps']:,} steps)"
                 for name in RECIPES]
        print(f"| {minutes} min | {' | '.join(cells)} | {ref} |")


if __name__ == "__main__":
    main()
