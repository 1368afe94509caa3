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
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine  # noqa: E402

REFERENCE = ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=64", "model.dropout=0.0",
             "data.batch_size=12", "optim=adamw", "optim.lr=1e-3", "optim.betas=[0.9,0.99]", "optim.weight_decay=0.1",
             "scheduler=cosine", "scheduler.warmup_steps=100", "scheduler.min_lr_ratio=0.1", "trainer.max_steps=2000",
             "trainer.val_check_interval=250", "trainer.gradient_clip_val=1.0", "trainer.precision=32-true"]


def timed_run(overrides: list[str], outputs: Path) -> tuple[float, list[tuple[float, float]]]:
    """Seconds from launch to exit, and the run's (seconds from launch, val loss) at each validation."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = outputs / f"run{len(list(outputs.iterdir()))}"
    launch = time.time()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"], check=True,
                   capture_output=True, cwd=outputs)
    wall = time.time() - launch
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return wall, [(e.wall_time - launch, e.value) for e in events.Scalars("val/loss")]


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, loss in curve if loss <= target), None)


def main() -> None:
    frosty = sys.argv[1:]
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        ref_wall, ref_curve = timed_run(REFERENCE, outputs)
        target = ref_curve[-1][1]
        wall, curve = timed_run(frosty, outputs)
    ref_time, frosty_time = time_to(ref_curve, target), time_to(curve, target)
    print(f"reference (nanoGPT's CPU recipe): {ref_wall:.0f} s from launch to exit, final val loss {target:.4f} "
          f"(the target), first reached after {ref_time:.0f} s")
    reached = f"reached the target after {frosty_time:.0f} s" if frosty_time is not None else "never reached it"
    print(f"python train.py {' '.join(frosty)}: {wall:.0f} s from launch to exit, best val loss "
          f"{min(v for _, v in curve):.4f}; {reached}")
    if frosty_time is not None:
        print(f"time to the reference's quality, Frosty / reference: {frosty_time / ref_time:.2f}")


if __name__ == "__main__":
    main()
