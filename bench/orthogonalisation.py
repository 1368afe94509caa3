"""Muon's orthogonalisation (Newton-Schulz, 5 steps) of one step's updates: torch.optim.Muon's own, in bf16, against
Frosty's newton_schulz_fp32, in the same run. On a CPU without native bf16, torch emulates bf16 matmuls; Frosty then
uses the fp32 one (frosty_lm/optim.py).

    python bench/orthogonalisation.py                      # 2 layers of 128
    python bench/orthogonalisation.py --layers 4 --width 128
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/orthogonalisation.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.optim._muon import _zeropower_via_newtonschulz  # noqa: E402

from bench.common import machine  # noqa: E402
from frosty_lm.machine import cpu_precision  # noqa: E402
from frosty_lm.optim import newton_schulz_fp32  # noqa: E402

COEFFICIENTS = (3.4445, -4.775, 2.0315)  # torch.optim.Muon's defaults


def milliseconds(orthogonalise, updates: list[torch.Tensor], rounds: int) -> float:
    """Median time of orthogonalising every update once."""
    times = []
    for _ in range(rounds + 1):  # the first is a warm-up
        start = time.perf_counter()
        for update in updates:
            orthogonalise(update, COEFFICIENTS, 5, 1e-7)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    C = args.width
    shapes = ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))  # a block's qkv, proj, fc, fc2
    updates = [torch.randn(*shape) for _ in range(args.layers) for shape in shapes]
    print(f"{machine()}; trainer=cpu's precision here: {cpu_precision()}")
    bf16 = milliseconds(_zeropower_via_newtonschulz, updates, args.rounds)
    fp32 = milliseconds(newton_schulz_fp32, updates, args.rounds)
    print(f"{args.layers} layers of {C}, one step's updates: torch's (bf16) {bf16:.1f} ms, fp32 {fp32:.1f} ms; "
          f"bf16 / fp32 = {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
