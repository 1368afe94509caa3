"""Lightning callbacks: a progress bar over the run, training throughput, a text sample at every validation, Ctrl-C."""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from frosty_lm.lit_module import logs_written_at
from frosty_lm.sampling import default_prompt, sample_text

log = logging.getLogger("frosty")


class StepProgressBar(RichProgressBar):
    """Rich progress bar over the whole run (global step out of max_steps) rather than per epoch:
    Frosty's runs are measured in steps, and an epoch is only a nominal pass over the corpus."""

    @property
    def total_train_batches(self):
        return self.trainer.max_steps if self.trainer.max_steps > 0 else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return "Training"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.train_progress_bar_id is None:  # one bar for the run, not reset every epoch
            super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)


def matmul_peak(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", n: int = 2048,
                repeats: int = 3) -> float:
    """This machine's matmul throughput in FLOP/s for dtype on device: the best of a few rounds of n x n
    products (one product a round on the CPU; ten on an accelerator, so that waiting for it costs little)."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)  # its own: training's random stream is untouched
    a, b = (torch.randn(n, n, dtype=dtype, device=device, generator=generator) for _ in range(2))
    per_round = 1 if device.type == "cpu" else 10
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        for _ in range(per_round):
            c = a @ b
        c[0, 0].item()  # waits for an accelerator to finish
        best = min(best, (time.perf_counter() - start) / per_round)
    return 2 * n**3 / best


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype that a Lightning precision setting ("32-true", "bf16-mixed", ...) does its matmuls in."""
    return torch.bfloat16 if "bf16" in precision else torch.float16 if precision.startswith("16") else torch.float32


class Throughput(L.Callback):
    """Logs train/chars_per_sec, characters (batch x context) trained per second over the last steps, and
    train/peak_fraction: the FLOP/s those characters took (nanoGPT's estimate, GPT.flops_per_char) as a
    fraction of this machine's matmul peak in the training precision (measured at the start unless given).
    Both on the steps whose logs Lightning writes (every trainer.log_every_n_steps, and the last)."""

    def __init__(self, peak_flops: float | None = None) -> None:
        self.peak_flops = peak_flops

    def on_train_start(self, trainer, pl_module) -> None:
        self.flops_per_char = pl_module.model.flops_per_char()
        if self.peak_flops is None:
            dtype = compute_dtype(str(trainer.precision))
            n = 1024 if pl_module.device.type == "cpu" else 8192  # a few ms a product either way
            self.peak_flops = matmul_peak(dtype, pl_module.device, n=n)
            log.info("matmul peak of this machine: %.0f GFLOP/s in %s", self.peak_flops / 1e9, str(dtype)[6:])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not hasattr(self, "_t0"):
            self._t0, self._chars = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._chars += batch[0].numel()
        if logs_written_at(trainer, trainer.global_step):  # global_step: the steps done, this one included
            now = time.perf_counter()
            chars_per_sec = self._chars / (now - self._t0)
            pl_module.log("train/chars_per_sec", chars_per_sec, prog_bar=True)
            flops = chars_per_sec * self.flops_per_char
            pl_module.log("train/peak_fraction", flops / self.peak_flops, prog_bar=True)
            self._t0, self._chars = now, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self._t0, self._chars = time.perf_counter(), 0  # validation time is not training time


class SampleText(L.Callback):
    """After each validation, samples from a fixed prompt and seed and logs the text to TensorBoard
    (as a code block, so its line breaks survive Markdown), so samples compare across steps and runs."""

    def __init__(self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> None:
        self.prompt, self.max_new_tokens, self.seed = prompt, max_new_tokens, seed
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.logger is None:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if not hasattr(experiment, "add_text"):
            return  # only TensorBoard shows text
        text = self.sample(pl_module)
        experiment.add_text("sample", f"```\n{text}\n```", global_step=trainer.global_step)

    def sample(self, pl_module) -> str:
        vocab = pl_module.hparams.vocab
        prompt = "".join(ch for ch in self.prompt if ch in vocab) or default_prompt(vocab)
        return sample_text(pl_module.model, vocab, prompt, self.max_new_tokens, self.temperature,
                           self.top_k, self.top_p, self.seed)


class StopOnInterrupt(L.Callback):
    """Ctrl-C (SIGINT) during training: finish the current step, validate, save the checkpoints, stop.
    A second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request_stop)

    def _request_stop(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\ninterrupted: stopping after this step and saving checkpoints (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.interrupted:
            trainer.should_stop = True  # Lightning validates, ModelCheckpoint saves best and last

    def on_train_end(self, trainer, pl_module) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)
