"""What the benchmarks share: the corpus, model presets, the machine, the seed-style reference."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]


def corpus_text() -> str:
    """frost.txt from FROSTY_DATA_DIR or data/ (the benchmarks never download)."""
    for directory in (os.environ.get("FROSTY_DATA_DIR"), ROOT / "data", ROOT.parent / "shared" / "data"):
        if directory and (Path(directory) / "frost.txt").is_file():
            return (Path(directory) / "frost.txt").read_text("utf-8")
    raise SystemExit("error: frost.txt not found: set FROSTY_DATA_DIR to its directory (or run train.py once)")


def model_preset(name: str, trainer: str = "cpu", **overrides) -> dict:
    """The model node of `python train.py model=NAME trainer=TRAINER` as a dict, with overrides (e.g.
    block_size=128)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    import frosty_lm.cli  # noqa: F401  (registers the resolver and the schemas that conf/ uses)

    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = OmegaConf.to_container(compose("train", overrides=[f"model={name}", f"trainer={trainer}"]).model,
                                         resolve=True)
    except MissingConfigException:
        choices = sorted(p.stem for p in (ROOT / "conf" / "model").glob("[!_]*.yaml"))
        raise SystemExit(f"error: no model preset {name}: choose one of {choices}") from None
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


NANOGPT_CPU_RECIPE = [  # nanoGPT's CPU recipe from its README, as train.py overrides (bench/time_to_quality.py)
    "model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=64", "model.dropout=0.0",
    "data.batch_size=12", "optim=adamw", "optim.lr=1e-3", "optim.betas=[0.9,0.99]", "optim.weight_decay=0.1",
    "scheduler=cosine", "scheduler.warmup_steps=100", "scheduler.min_lr_ratio=0.1", "trainer.max_steps=2000",
    "trainer.val_check_interval=250", "trainer.gradient_clip_val=1.0", "trainer.precision=32-true"]


@dataclass
class TimedRun:
    wall: float                       # seconds from launch to exit
    curve: list[tuple[float, float]]  # (seconds from launch, val loss) at each validation
    status: dict                      # the run's status.json (steps, best_val_loss, ...)


def timed_run(overrides: list[str], outputs: Path, name: str | None = None) -> TimedRun:
    """`python train.py *overrides` in a new run directory under outputs (named `name`, or runN), timed from launch;
    its validations are read from its TensorBoard events. A failed run ends the benchmark with its output."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = outputs / (name or f"run{len(list(outputs.iterdir()))}")
    launch = time.time()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=outputs)
    wall = time.time() - launch
    if done.returncode != 0:
        raise SystemExit(f"error: train.py {' '.join(overrides)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    curve = [(e.wall_time - launch, e.value) for e in events.Scalars("val/loss")]
    return TimedRun(wall, curve, json.loads((run_dir / "status.json").read_text()))


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds from launch to the first validation at or below target; None if none was."""
    return next((seconds for seconds, loss in curve if loss <= target), None)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


# ---- the seed-style reference: one module per head, explicit tril mask, ReLU, plain fp32 AdamW -------------

class Head(nn.Module):
    def __init__(self, n_embd: int, head_size: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        k, q = self.key(x), self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = self.dropout(F.softmax(wei, dim=-1))
        return wei @ self.value(x)


class MultiHead(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(n_embd, n_embd // n_head, block_size, dropout) for _ in range(n_head))
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(torch.cat([h(x) for h in self.heads], dim=-1)))


class SeedBlock(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout) -> None:
        super().__init__()
        self.sa = MultiHead(n_embd, n_head, block_size, dropout)
        self.ffwd = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


def seed_batch(data: torch.Tensor, block_size: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's get_batch: random offsets, one slice per window, stacked (data: the whole corpus as int64)."""
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + block_size + 1] for i in ix])
    return x, y


class SeedGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd, dropout, **_) -> None:
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[SeedBlock(n_embd, n_head, block_size, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T, device=idx.device))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        loss = None if targets is None else F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss


def matmul_peak(dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                sizes: tuple[int, ...] | None = None, repeats: int = 4) -> float:
    """Matmul FLOP/s for dtype (default float32) on device: the best of `repeats` timings after a warm-up (one, on a
    busy machine, is below what training reaches), over sizes (the fastest depends on the dtype: bf16 on AMX needs
    more than 1024), of one product on the CPU and ten on an accelerator (so that waiting for it costs little)."""
    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(device)
    sizes = sizes or ((1024, 1536) if device.type == "cpu" else (8192,))
    generator = torch.Generator(device=device).manual_seed(0)  # its own: training's random stream is untouched
    per_round = 1 if device.type == "cpu" else 10
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, dtype=dtype, device=device, generator=generator) for _ in range(2))
        for round_ in range(repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            for _ in range(per_round):
                c = a @ b
            c[0, 0].item()  # waits for an accelerator to finish
            if round_:
                best = max(best, 2 * n**3 * per_round / (time.perf_counter() - start))
    return best
