"""Lightning callbacks: early stopping, the cadence of a validation's extras (its text sample, sample/copied,
the attention maps), Ctrl-C. (Best and last checkpoints: checkpoint_saving.py; progress: progress.py.)"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only

from frosty_lm.attention import MAX_PROMPT, attention_maps, rgb_pixels
from frosty_lm.config import is_int, is_number, must
from frosty_lm.corpus import CharTokenizer, WindowIndex
from frosty_lm.generation import check_sampling, check_text, prompt_in, sample_text
from frosty_lm.machine import check_fits
from frosty_lm.model import GPT

log = logging.getLogger("frosty")


class Stopped(Exception):
    """Training stopped at a step boundary on Ctrl-C (signum): Lightning's exception path (as for its SIGTERMException)
    runs every callback's on_exception, where BestAndLastCheckpoint saves last.ckpt, and then re-raises it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class EveryNValidations(L.Callback):
    """A validation's extras (a text sample, the attention maps, sample/copied), in at_validation at every
    `every_n_validations`-th validation and the last: sampling is character by character, and at every validation
    would take a large share of a short run. The count is checkpointed, so a resumed run keeps the cadence."""

    name = ""  # the callback's node in conf/callbacks/default.yaml, for its errors

    def __init__(self, every_n_validations: int = 4) -> None:
        must(is_int(every_n_validations) and every_n_validations >= 1, f"callbacks.{self.name}.every_n_validations",
             every_n_validations, "a positive integer N: at every Nth validation and at the last (1: at every "
             "validation)")
        self.every_n_validations = every_n_validations
        self.validations = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        last = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step
        if last or self.validations % self.every_n_validations == 0:
            self.at_validation(trainer, pl_module)

    def at_validation(self, trainer, pl_module) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.validations = state_dict.get("validations", 0)


class SampleText(EveryNValidations):
    """A sample from a fixed prompt and seed in TensorBoard, to compare across steps and runs."""

    name = "sample_text"

    def __init__(self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 every_n_validations: int = 4) -> None:
        check_sampling(dict(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, seed=seed), prefix="callbacks.sample_text.")
        super().__init__(every_n_validations)
        self.prompt, self.max_new_tokens, self.seed = prompt, max_new_tokens, seed
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def at_validation(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):  # only TensorBoard shows text; a code block keeps its line breaks
            vocab = pl_module.hparams.vocab
            sample = sample_text(pl_module.model, vocab, prompt_in(vocab, self.prompt), self.max_new_tokens,
                                 self.temperature, self.top_k, self.top_p, self.seed)
            experiment.add_text("sample", f"```\n{sample}\n```", global_step=trainer.global_step)


class CopiedShare(EveryNValidations):
    """Logs sample/copied every few validations, for a sample from `prompt` (left out of the windows)."""

    name = "copied"

    def __init__(self, window: int = 32, chars: int = 1000, prompt: str = "\n", temperature: float = 0.8,
                 seed: int = 0, every_n_validations: int = 4) -> None:
        check_sampling(dict(prompt=prompt, temperature=temperature, seed=seed), prefix="callbacks.copied.")
        for key, value in (("window", window), ("chars", chars)):
            must(is_int(value) and value >= 1, f"callbacks.copied.{key}", value, "a positive integer")
        super().__init__(every_n_validations)
        self.window, self.chars, self.prompt, self.temperature, self.seed = window, chars, prompt, temperature, seed
        self.index: WindowIndex | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and hasattr(trainer.datamodule, "train_data"):
            data = trainer.datamodule.train_data
            check_fits(24 * len(data), f"indexing the {len(data):,} training characters for sample/copied",
                       "turn sample/copied off with callbacks.copied=null, or train on a smaller file")  # (its peak)
            self.index = WindowIndex(data.numpy(), self.window)

    def at_validation(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or self.index is None or not trainer.loggers:
            return
        share = self.measure(pl_module.model, pl_module.hparams.vocab)
        if share is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"sample/copied": share}, step=trainer.global_step)

    def measure(self, model, vocab: str) -> float | None:
        prompt = prompt_in(vocab, self.prompt)
        text = sample_text(model, vocab, prompt, self.chars, self.temperature, seed=self.seed)[len(prompt):]
        return self.index.copied_share(np.asarray(CharTokenizer(vocab).encode(text), dtype=np.int64))


class AttentionImage(EveryNValidations):
    """Every few validations, the attention maps over a fixed prompt (less its characters outside the vocabulary,
    at most attention.MAX_PROMPT) in TensorBoard's IMAGES tab, tag "attention"."""

    name = "attention_image"

    def __init__(self, prompt: str = "Whose woods these are I think I know.", every_n_validations: int = 4) -> None:
        check_text(prompt, "callbacks.attention_image.prompt")
        super().__init__(every_n_validations)
        self.prompt = prompt

    def at_validation(self, trainer, pl_module) -> None:
        experiment = getattr(trainer.logger, "experiment", None) if trainer.is_global_zero else None
        vocab = pl_module.hparams.vocab
        prompt = "".join(ch for ch in self.prompt if ch in vocab)[-MAX_PROMPT:]
        # only TensorBoard shows images; the bigram has no attention
        if not hasattr(experiment, "add_image") or len(prompt) < 2 or not isinstance(pl_module.model, GPT):
            return
        image = rgb_pixels(attention_maps(pl_module.model, vocab, prompt), prompt)
        experiment.add_image("attention", image, global_step=trainer.global_step, dataformats="HWC")


class EarlyStop(EarlyStopping):
    """Lightning's EarlyStopping on val/loss, off unless patience is set; a run it stops counts as finished."""

    def __init__(self, patience: int | None = None, min_delta: float = 0.0) -> None:
        must(patience is None or is_int(patience) and patience > 0, "callbacks.early_stopping.patience", patience,
             "a positive integer (validations without improvement), or null for no early stopping")
        must(is_number(min_delta) and min_delta >= 0, "callbacks.early_stopping.min_delta", min_delta,
             "a number >= 0 (the least decrease of val/loss that counts as an improvement)")
        super().__init__(monitor="val/loss", mode="min", patience=patience or 1, min_delta=min_delta, verbose=False,
                         check_on_train_epoch_end=False)  # checked after every validation
        self.enabled = patience is not None

    def load_state_dict(self, state_dict: dict) -> None:
        """Keeps this run's patience, not the stored one; a changed one (e.g. early stopping was off) counts anew."""
        patience = self.patience
        super().load_state_dict(state_dict)
        if self.patience != patience:
            self.patience, self.wait_count = patience, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        stopping = trainer.should_stop
        super().on_validation_end(trainer, pl_module)
        if trainer.should_stop and not stopping and trainer.is_global_zero:
            log.info("early stop at step %d: val loss has not improved for %d validations (best %.4f)",
                     trainer.global_step, self.patience, float(self.best_score))


class StopOnInterrupt(L.Callback):
    """Ctrl-C during fit stops training before the next step (every process at the same step): the step, and its
    validation and checkpoints if one is due, are done, so a resumed run misses none; last.ckpt is saved on the way
    out, and a second Ctrl-C exits at once, status 130. So does SIGTERM in a run of several processes, in place of
    Lightning's handler, whose broadcast from inside the handler can meet another collective and hang the run. Set
    when training starts (after Lightning records the handlers it restores at fit's end); before, Ctrl-C is a
    KeyboardInterrupt."""

    def __init__(self) -> None:
        self.received = 0  # the signal that stops the run (SIGTERM over SIGINT), 0 for none
        self._seen: set[int] = set()
        self._previous = {signal.SIGTERM: signal.getsignal(signal.SIGTERM)}  # before fit's: Lightning sets its own
        self._set: tuple = ()

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():  # Python sets handlers from the main thread only
            self._set = (signal.SIGINT, signal.SIGTERM) if trainer.world_size > 1 else (signal.SIGINT,)
            self._previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
            for signum in self._set:
                signal.signal(signum, self._on_signal)

    @staticmethod
    def exit_now(signum=None, frame=None) -> None:  # also train.py's handler as a stopped run exits
        print("\ninterrupted again: exiting now; last.ckpt is the last one written", file=sys.stderr, flush=True)
        os._exit(130)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and signum in self._seen:
            self.exit_now()
        self._seen.add(signum)
        self.received = max(self._seen)
        if rank_zero_only.rank == 0:  # (a signal to the process group reaches every process: one line for the run)
            print(f"\n{'interrupted' if signum == signal.SIGINT else 'SIGTERM'}: stopping after this step and saving "
                  f"last.ckpt{' (Ctrl-C again to exit now)' * (signum == signal.SIGINT)}", file=sys.stderr, flush=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        received = self.received
        if trainer.world_size > 1:  # one collective per batch, as Lightning's own SIGTERM check
            received = int(trainer.strategy.reduce(torch.tensor(received, device=trainer.strategy.root_device),
                                                   reduce_op="max"))
        if received and batch_idx % trainer.accumulate_grad_batches == 0:  # a step's first batch: none accumulated
            progress = trainer.fit_loop.epoch_loop.batch_progress  # this batch is fetched, never trained: counted
            progress.total.reset_on_restart()  # as it is not, or a resumed run's validations come a batch early
            progress.current.reset_on_restart()
            raise Stopped(received)

    def teardown(self, trainer=None, pl_module=None, stage=None) -> None:
        """Puts the handlers from before fit back: Lightning calls it after a fit that ends, train.fit after one that
        stops (after on_exception, where last.ckpt is saved: a second Ctrl-C during that save exits at once)."""
        for signum in self._set:
            signal.signal(signum, self._previous[signum])
        self._set = ()
