"""The main job, timed from launch to exit, in each precision: `python train.py` as a user runs it
(the default config: model=small on frost, trainer.max_steps=2000), once with bf16 (where the CPU has native
bf16) and once in fp32 (trainer.precision=32-true, a CPU without it trains that way, though with model=small's 2
layers where this run keeps the machine's 4), one after the other on the same machine. Prints the wall time, the
training time per step, the best val loss and the ratio fp32/bf16.

    python bench/main_job.py                          # the whole main job, both precisions (long: docs/performance.md)
    python bench/main_job.py trainer.max_steps=300    # any train.py overrides, for a quicker look
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine  # noqa: E402
from frosty_lm.machine import cpu_precision  # noqa: E402


def timed_run(precision: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as outputs:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), f"paths.outputs_dir={outputs}",
                        f"trainer.precision={precision}", *overrides], check=True, capture_output=True)
        wall = time.perf_counter() - start
        run_dir = next(Path(outputs).rglob("status.json")).parent
        status = json.loads((run_dir / "status.json").read_text())
        log = (run_dir / "train.log").read_text()
    per_step = re.search(r"\((\d+) ms/step over the", log)
    return {"wall": wall, "steps": status.get("steps"), "best": status.get("best_val_loss"),
            "first_ms": int(per_step.group(1)) if per_step else None}


def main() -> None:
    overrides = sys.argv[1:]
    print(machine())
    native = cpu_precision() == "bf16-mixed"  # also fp32 only where ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA caps
    # the CPU below native bf16: how an AVX2-only CPU is approximated on this one (docs/performance.md)
    results = {}
    for precision in (["bf16-mixed"] if native else []) + ["32-true"]:
        results[precision] = r = timed_run(precision, overrides)
        print(f"{precision:>10}: {r['wall']:.0f} s from launch to exit, {r['steps']} steps "
              f"({r['first_ms']} ms/step over the 10 steps after the first), best val loss {r['best']:.4f}", flush=True)
    if len(results) == 2:
        print(f"fp32 / bf16 wall time: {results['32-true']['wall'] / results['bf16-mixed']['wall']:.2f}x")


if __name__ == "__main__":
    main()
