"""Peak resident memory (RSS) of a short training run and of generation, each in its own process.

    python bench/memory.py [--model small] [--steps 50]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb(command: list[str]) -> float:
    """Run command to completion; the peak RSS of that child process, in MB (Linux reports kB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:
        raise SystemExit("error: this child's peak did not exceed an earlier one's: run the cases in separate calls")
    return after / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--case", choices=["python", "train", "generate"], default=None, help="measure one case")
    parser.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "run"
        cases = {
            "python": [sys.executable, "-c", "import torch, lightning, hydra"],
            "train": [sys.executable, str(ROOT / "train.py"), f"model={args.model}", f"trainer.max_steps={args.steps}",
                      f"trainer.val_check_interval={args.steps}", f"hydra.run.dir={run_dir}"],
            "generate": [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={run_dir}/checkpoints/last.ckpt",
                         "max_new_tokens=500"],
        }
        if args.case:
            print(f"{args.case}: peak RSS {peak_rss_mb(cases[args.case]):,.0f} MB")
            return
        # ru_maxrss of children is a maximum over all of them: measure each case in a fresh interpreter
        for case in cases:
            extra = ["--model", args.model, "--steps", str(args.steps), "--case", case, "--run-dir", str(run_dir)]
            out = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr.strip())


if __name__ == "__main__":
    main()
