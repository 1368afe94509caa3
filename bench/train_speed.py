"""Training throughput on this machine, three ways, interleaved in one process (A B C A B C ...) after warm-up:

  A  Frosty: the LightningModule under Lightning's Trainer, as train.py runs it (logger and throughput
     callback on; no validation or checkpoints inside the timed steps)
  B  the same GPT, optimizer and batches in a plain PyTorch loop
  C  a seed-style reference: one module per head, explicit tril mask, ReLU, plain fp32 AdamW, the seed's
     batch sampling (one slice per window)

Prints characters per second, ms per step, achieved GFLOP/s, the fraction of this machine's measured
matmul peak, and the ratios A/B (Lightning's overhead) and A/C (Frosty against the seed).

    python bench/train_speed.py                                   # small model, trainer=cpu's precision
    python bench/train_speed.py --precision 32-true               # Frosty in fp32
    python bench/train_speed.py --reference-dropout 0.2           # the seed as it trained
    python bench/train_speed.py --model large --block-size 256 --compile
    python bench/train_speed.py --model large --device cuda --batch-size 64   # on a GPU (trainer=gpu: bf16)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ThroughputMonitor  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from bench.common import ROOT, SeedGPT, corpus_text, machine, matmul_peak, model_preset, seed_batch  # noqa: E402
from frosty_lm.corpus import CharTokenizer  # noqa: E402
from frosty_lm.data import RandomWindows, characters, windows  # noqa: E402
from frosty_lm.lit_module import FrostyLM  # noqa: E402
from frosty_lm.machine import cpu_precision  # noqa: E402


def now(device: torch.device) -> float:
    """The time, once the device has finished the work queued so far (a GPU runs ahead of Python)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class StepTimer(L.Callback):
    """Times the training steps after the first `warmup` of a fit, counted by the trainer's global step (the
    batch index restarts with every pass over the corpus, which a short corpus and a large batch make often)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.steps = warmup, device, 0
        self.start = self.start_step = self.seconds = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.start is None:
            self.start, self.start_step = now(self.device), trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = now(self.device) - self.start
        self.steps = trainer.global_step - self.start_step  # the steps timed, whatever started the clock


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype that --precision (32-true or bf16-mixed) computes its matmuls in."""
    return torch.bfloat16 if "bf16" in precision else torch.float32


def autocast(precision: str, device: torch.device):
    dtype = compute_dtype(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", help="a conf/model preset (default small)")
    parser.add_argument("--block-size", type=int, default=None, help="override the preset's context")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dropout", type=float, default=None, help="override the preset's dropout (A, B and C)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default=None,
                        help="32-true or bf16-mixed (default: trainer=cpu's, bf16-mixed where "
                        "the CPU has native bf16; on cuda trainer=gpu's, bf16-mixed)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (A and B)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round and engine")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reference-dropout", type=float, default=None,
                        help="C's dropout (default: A and B's); 0.2 is the seed's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA GPU here: "
                         "run on a GPU machine, or drop --device")
    device = torch.device(args.device)
    precision = args.precision or (cpu_precision() if device.type == "cpu" else "bf16-mixed")
    cfg = model_preset(args.model, "gpu" if device.type == "cuda" else "cpu", block_size=args.block_size,
                       dropout=args.dropout, compile=args.compile or None)  # model.compile=true, as train.py takes it
    T, B = cfg["block_size"], args.batch_size
    optim = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/optim/adamw.yaml"))

    text = corpus_text()
    tok = CharTokenizer.from_text(text)
    data = tok.encode_tensor(text)
    torch.manual_seed(0)
    module = FrostyLM(vocab=tok.chars, model=cfg, optim=optim, scheduler={"name": "constant"})
    plain_model = FrostyLM(vocab=tok.chars, model=cfg, optim=optim, scheduler={"name": "constant"})
    reference_dropout = cfg["dropout"] if args.reference_dropout is None else args.reference_dropout
    seed = SeedGPT(vocab_size=len(tok), **{**cfg, "dropout": reference_dropout}).to(device)
    plain_model.to(device)
    plain_model.configure_model()  # as Lightning does for A: with model.compile, the compiled forward
    plain_opt = plain_model.configure_optimizers()["optimizer"]
    seed_opt = torch.optim.AdamW(seed.parameters(), lr=optim["lr"])
    flops = module.model.flops_per_char() * B * T  # per step: nanoGPT's estimate, as the training log's
    batches = RandomWindows(data, T, B, seed=0)
    dtype = compute_dtype(precision)  # what A and B compute in; C computes in fp32
    peak32 = matmul_peak(torch.float32, device) / 1e9  # the best over a few sizes
    peak = peak32 if dtype == torch.float32 else matmul_peak(dtype, device) / 1e9
    n = args.warmup + args.steps

    def run_lightning(round_: int) -> float:
        timer = StepTimer(args.warmup, device)
        with tempfile.TemporaryDirectory() as logs:
            trainer = L.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision, max_steps=n,
                limit_val_batches=0, gradient_clip_val=1.0, log_every_n_steps=10, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False,
                logger=L.pytorch.loggers.TensorBoardLogger(logs, name="", version=""),
                callbacks=[timer, ThroughputMonitor(windows, characters, window_size=10)],  # as conf/callbacks/
            )
            start = round_ * n
            stream = RandomWindows(data, T, B, seed=0, start_batch=lambda: start)
            trainer.fit(module, train_dataloaders=DataLoader(stream, batch_size=None))
        if timer.steps != args.steps:
            raise SystemExit(f"error: timed {timer.steps} Lightning steps, not {args.steps}: a bug in StepTimer")
        return timer.seconds

    seed_data = data.long()  # the seed kept the corpus on the CPU and moved each batch

    def run_loop(model, optimizer, frosty: bool, round_: int) -> float:
        model.train()
        for i in range(n):
            if i == args.warmup:
                start = now(device)
            x, y = batches.batch(round_ * n + i) if frosty else seed_batch(seed_data, T, B)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(precision, device) if frosty else nullcontext():
                loss = model(x, y)[1]
            loss.backward()
            if frosty:  # gradient clipping, as Frosty's trainer config
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return now(device) - start

    engines = {
        "A Frosty (Lightning)": lambda r: run_lightning(r),
        "B same model, plain loop": lambda r: run_loop(plain_model, plain_opt, True, r),
        "C seed-style reference": lambda r: run_loop(seed, seed_opt, False, r),
    }
    times = {name: [] for name in engines}
    for r in range(args.rounds):
        for name, engine in engines.items():
            times[name].append(engine(r))

    print(f"machine: {machine()}" + (f"; GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"model {args.model}: {cfg['n_layer']} layers, {cfg['n_head']} heads, {cfg['n_embd']} wide, context {T}, "
          f"batch {B}, dropout {cfg['dropout']} (C: {reference_dropout}), precision {precision} (C: fp32)"
          f"{', compiled' if args.compile else ''}; "
          f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up")
    print(f"measured matmul peak: fp32 {peak32:.0f} GFLOP/s"
          + (f", {str(dtype).removeprefix('torch.')} {peak:.0f} GFLOP/s" if dtype != torch.float32 else "") + "\n")
    print(f"{'engine':28} {'chars/s':>9} {'ms/step':>8} {'GFLOP/s':>8} {'of peak':>8}")
    speed = {}
    for name, seconds in times.items():
        per_step = statistics.median(seconds) / args.steps
        speed[name] = B * T / per_step
        fraction = flops / per_step / 1e9 / (peak32 if name.startswith("C") else peak)  # C: same shapes, fp32
        print(f"{name:28} {speed[name]:9,.0f} {per_step * 1e3:8.1f} {flops / per_step / 1e9:8.1f} {fraction:8.1%}")
    a, b, c = speed.values()
    print(f"\nA/B (Lightning vs plain loop): {a / b:.3f}x   A/C (Frosty vs seed-style): {a / c:.2f}x")


if __name__ == "__main__":
    main()
