"""How long train.py takes to say that something is wrong (a bad config, a missing corpus), against the baseline
of importing torch and Lightning, which its checks come before; and how long generate.py
takes to print 20 characters from a tiny checkpoint (it reads checkpoints with torch alone, without Lightning).

    python bench/startup.py               # 5 rounds
    python bench/startup.py --rounds 10

Each round runs every case once, in a fresh interpreter, one after the other, so that all see the same machine;
the table gives the medians and each case's ratio to the baseline. Then one `python -X importtime` run of the bad
config tells whether torch or Lightning were imported at all.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, machine  # noqa: E402

HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric")


def cases(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
    """name -> (command, the exit status it must have, a fragment of its last line)."""
    train = [sys.executable, str(ROOT / "train.py")]
    generate = [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={tiny_checkpoint(tmp)}", "max_new_tokens=20"]
    return {
        "import torch, lightning": ([sys.executable, "-c", "import torch, lightning"], 0, ""),
        "bad config": ([*train, "model.n_layer=0", f"hydra.run.dir={tmp / 'config'}"], 1,
                       "error: model.n_layer=0 must be a positive integer"),
        "missing corpus": ([*train, "dataset=text", "data.path=/nonexistent", f"hydra.run.dir={tmp / 'corpus'}"], 1,
                           "error: corpus file /nonexistent does not exist"),
        "generate.py, 20 chars": (generate, 0, ""),
    }


def tiny_checkpoint(tmp: Path) -> Path:
    """An untrained model=tiny, saved as train.py saves its weights, vocabulary and model settings."""
    import torch
    from omegaconf import OmegaConf

    from frosty_lm.config import GPTConfig
    from frosty_lm.model import GPT

    settings = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(ROOT / "conf/model/_base.yaml"),
                                                      OmegaConf.load(ROOT / "conf/model/tiny.yaml")))
    settings.pop("defaults")
    vocab = "".join(sorted(set("Whose woods these are I think I know.\n")))
    model = GPT(GPTConfig(vocab_size=len(vocab), **settings))
    path = tmp / "tiny.ckpt"
    torch.save({"hyper_parameters": {"vocab": vocab, "model": settings},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def timed(command: list[str], code: int, last_line: str) -> float:
    """Seconds from start to exit of command, which must exit with code and end its stderr with last_line."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines() or [""]
    if result.returncode != code or last_line not in lines[-1]:
        raise SystemExit(f"error: {' '.join(command)} exited {result.returncode}: {lines[-1]}")
    return seconds


def heavy_imports(command: list[str]) -> list[str]:
    """The packages of torch and Lightning that command imports (python -X importtime)."""
    result = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0]
             for line in result.stderr.splitlines() if line.startswith("import time:")}
    return sorted(names & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.rounds} rounds, medians\n")
    with tempfile.TemporaryDirectory() as tmp:
        commands = cases(Path(tmp))
        times = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (command, code, last_line) in commands.items():
                times[name].append(timed(command, code, last_line))
        baseline = statistics.median(times["import torch, lightning"])
        print(f"{'case':24} {'seconds':>8} {'x baseline':>11}")
        for name, seconds in times.items():
            print(f"{name:24} {statistics.median(seconds):8.2f} {statistics.median(seconds) / baseline:11.2f}")
        imported = heavy_imports(commands["bad config"][0])
        print(f"\nbad config imports torch or Lightning: {', '.join(imported) if imported else 'no'}")
        imported = [name for name in heavy_imports(commands["generate.py, 20 chars"][0]) if name != "torch"]
        print(f"generate.py imports Lightning: {', '.join(imported) if imported else 'no'}")


if __name__ == "__main__":
    main()
