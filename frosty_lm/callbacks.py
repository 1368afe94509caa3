"""Lightning callbacks: a progress bar over the run, training throughput, a text sample at every validation, Ctrl-C."""
from __future__ import annotations

import logging
import signal
import sys
import threading

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, ThroughputMonitor
from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_only

from frosty_lm.machine import matmul_peak
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


def _windows(batch) -> int:
    return batch[0].size(0)


def _characters(batch) -> int:
    return batch[0].numel()


class CharThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor over batches of character windows. On the steps whose logs Lightning writes
    (every trainer.log_every_n_steps, and the last), it logs train/device/items_per_sec (characters trained per
    second), train/device/flops_per_sec (the module's flops_per_batch, nanoGPT's estimate, per second) and
    train/device/mfu (that over available_flops), each over the last window_size steps (default: the logging
    interval); validation time is left out of training's, and not logged. Lightning knows the peak of some
    GPUs, not of CPUs: available_flops, unless given, is then this machine's matmul peak in the training's
    compute dtype, measured in setup."""

    def __init__(self, available_flops: float | None = None, window_size: int | None = None, **kwargs) -> None:
        super().__init__(batch_size_fn=_windows, length_fn=_characters, **kwargs)  # functions: ddp_spawn pickles
        self.given_flops, self.window_size, self.peak = available_flops, window_size, None

    def setup(self, trainer, pl_module, stage: str) -> None:
        every = trainer.log_every_n_steps or 10  # 0: nothing is logged; the summary's speed is of the last 10 steps
        every = min(every, trainer.max_steps) if trainer.max_steps > 0 else every
        self.kwargs["window_size"] = self.window_size or max(2, every)
        super().setup(trainer, pl_module, stage)  # available_flops: Lightning's peak for the device and dtype, or None
        if self.peak is None:  # measured by the process that logs only: others measuring at once would slow it
            measure = trainer.is_global_zero and not self.given_flops and not self.available_flops
            self.peak = self.given_flops or self.available_flops or (self.measure_peak(trainer) if measure else None)
        self.available_flops = self.peak
        for throughput in self._throughputs.values():
            throughput.available_flops = self.peak

    @staticmethod
    def measure_peak(trainer) -> float:
        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        peak = matmul_peak(dtype, trainer.strategy.root_device)
        log.info("matmul peak of this machine: %.0f GFLOP/s in %s", peak / 1e9, str(dtype).removeprefix("torch."))
        return peak

    @rank_zero_only
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:  # timed, so that on_validation_end leaves it out of training's time
            self._update(trainer, pl_module, batch, batch_idx)

    def training_speed(self) -> tuple[float, float | None] | None:
        """Characters per second and the fraction of available_flops over the last window of training steps,
        or None if too few steps ran."""
        throughput = self._throughputs.get(RunningStage.TRAINING)
        try:
            metrics = throughput.compute() if throughput is not None else {}
        except IndexError:  # no step timed
            return None
        if "device/items_per_sec" not in metrics:
            return None
        return metrics["device/items_per_sec"], metrics.get("device/mfu")


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
