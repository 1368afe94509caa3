"""Time to quality: how many seconds from launch a Frosty command needs to reach the val loss that nanoGPT's CPU
recipe reaches at its end, against the reference's own time, one after the other on this machine.

The reference is nanoGPT's CPU recipe from its README (config/train_shakespeare_char.py with --device=cpu
--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0: AdamW lr 1e-3, betas 0.9/0.99, weight decay 0.1, 100 warm-up steps, cosine to 1e-4, gradient
clipping at 1.0, fp32 on a CPU, evaluation every 250 steps), run as a train.py command, on frost. Its target is
its last val loss. A run's time to the target is read from its TensorBoard events (the wall time of the first
validation at or below it, counted from the launch), so it is measured at validations: an upper bound.

    python bench/time_to_quality.py                                  # the default python train.py
    python bench/time_to_quality.py optim=muon                       # any train.py overrides for Frosty's side
    python bench/time_to_quality.py -- +experiment=speedrun -- optim.lr=3e-3   # several commands after one
                                       # reference, in turn, "--" between them (here: the default first)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import NANOGPT_CPU_RECIPE, machine, time_to, timed_run  # noqa: E402


def main() -> None:
    commands = [[]]  # train.py's overrides for each command: "--" separates them
    for arg in sys.argv[1:]:
        if arg == "--":
            commands.append([])
        else:
            commands[-1].append(arg)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        reference = timed_run(NANOGPT_CPU_RECIPE, outputs)
        target = reference.curve[-1][1]
        ref_time = time_to(reference.curve, target)
        print(f"reference (nanoGPT's CPU recipe): {reference.wall:.0f} s from launch to exit, final val loss "
              f"{target:.4f} (the target), first reached after {ref_time:.0f} s", flush=True)
        for overrides in commands:
            run = timed_run(overrides, outputs)
            frosty_time = time_to(run.curve, target)
            reached = f"reached the target after {frosty_time:.0f} s" if frosty_time is not None else "never reached it"
            print(f"python train.py {' '.join(overrides)}: {run.wall:.0f} s from launch to exit, best val loss "
                  f"{min(v for _, v in run.curve):.4f}; {reached}", flush=True)
            if frosty_time is not None:
                print(f"time to the reference's quality, Frosty / reference: {frosty_time / ref_time:.2f}", flush=True)


if __name__ == "__main__":
    main()
