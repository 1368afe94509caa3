"""Ablation: each model option and the optimizer alone against the default `python train.py`, by the best val loss
after the same wall time (trainer.max_time, the learning-rate schedule laid over it), over a few seeds, one run at a
time on all cores, the changes interleaved within each seed. Prints a markdown table: mean and spread (lowest to
highest) of the best val loss, the mean's change from the default's, and the steps each took.

    python bench/ablation.py                                # 60 s each, seeds 1 and 2, on frost
    python bench/ablation.py --seconds 120 --seeds 1 2 3 --only default position=rope
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, timed_run  # noqa: E402

CHANGES = {  # the row's name: its train.py overrides
    "default": [],
    "position=rope": ["model.position=rope"],
    "norm=rmsnorm": ["model.norm=rmsnorm"],
    "qk_norm=true": ["model.qk_norm=true"],
    "activation=relu2": ["model.activation=relu2"],
    "zero_init_proj=true": ["model.zero_init_proj=true"],
    "logit_softcap=30": ["model.logit_softcap=30"],
    "tie_weights=true": ["model.tie_weights=true"],
    "optim=muon": ["optim=muon"],
    "optim.lr=2e-3": ["optim.lr=2e-3"],
    "data.batch_size=16": ["data.batch_size=16"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="each run's trainer.max_time (default 60)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="+", choices=list(CHANGES), default=list(CHANGES), metavar="ROW",
                        help=f"rows to run (default: all): {', '.join(CHANGES)}")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for every run (e.g. dataset=yoda)")
    args = parser.parse_args()
    budget = [f"trainer.max_time=00:00:{args.seconds // 60:02d}:{args.seconds % 60:02d}"]  # trainer.max_steps (2000)
    # stays: the schedule follows whichever budget runs out first, which for a short --seconds is the time
    print(machine())
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name in args.only:
                run = timed_run([*args.overrides, *CHANGES[name], *budget, f"seed={seed}"], Path(tmp))
                results[name].append((run.status["best_val_loss"], run.status["steps"]))
                print(f"seed {seed} {name}: best val loss {results[name][-1][0]:.4f} after "
                      f"{results[name][-1][1]} steps", flush=True)
    base = statistics.mean(loss for loss, _ in results["default"]) if "default" in results else None
    print(f"\n{args.seconds} s each (trainer.max_time), seeds {', '.join(map(str, args.seeds))}"
          f"{', ' + ' '.join(args.overrides) if args.overrides else ''}\n")
    print("| change | best val loss, mean | spread | vs default | steps, mean |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        losses = [loss for loss, _ in runs]
        mean = statistics.mean(losses)
        delta = f"{mean - base:+.3f}" if base is not None and name != "default" else ""
        print(f"| {name} | {mean:.3f} | {min(losses):.3f} to {max(losses):.3f} | {delta} | "
              f"{statistics.mean(steps for _, steps in runs):,.0f} |")


if __name__ == "__main__":
    main()
