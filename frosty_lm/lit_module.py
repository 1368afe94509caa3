"""The GPT (or the bigram baseline) as a LightningModule: loss, exact validation, optimizer, scalars, HPARAMS tab."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.nn import functional as F

from frosty_lm.config import FrostyError, GPTConfig
from frosty_lm.model import build
from frosty_lm.optim import group_settings, lr_lambda, make_optimizer, timed

LN2 = math.log(2)


class NonFiniteLoss(FrostyError):
    """The training loss became NaN or infinite: training stopped before that step's update."""


class FrostyLM(L.LightningModule):
    """Hyperparameters are plain containers (str, numbers, dicts), so checkpoints load with weights_only=True.
    vocab: the characters, in id order. model: GPTConfig's fields but vocab_size. optim, scheduler: optim.* and
    scheduler.*. config: the whole config as composed, before interpolation, and overrides: the command-line
    overrides that composed it, with which `resume=` composes conf/ again and compares. logged_config: the config
    resolved, for TensorBoard's HPARAMS tab only. corpus_sha256: the corpus's text (CharDataModule.text_sha256), which
    a resume must find unchanged."""

    def __init__(self, vocab: str, model: dict, optim: dict, scheduler: dict, config: dict | None = None,
                 overrides: list[str] | None = None, logged_config: dict | None = None,
                 corpus_sha256: str | None = None) -> None:
        super().__init__()
        # the logger gets hparams with their metrics, below; the resolved config once, in the logger only
        self.save_hyperparameters(ignore=["logged_config"], logger=False)
        self.logged_config = logged_config
        self.model = build(GPTConfig(vocab_size=len(vocab), **model))  # the GPT, or model=bigram's table
        self.flops_per_char = self.model.flops_per_char()
        self.chars_per_batch = 0  # of the last training batch
        self.step_sum = self.step_loss = torch.zeros(())  # the loss of the step's batches so far: sum, mean
        self.register_buffer("best_val_loss", torch.tensor(float("inf")))  # saved in checkpoints, so resume keeps it
        self.compiled = None  # with model.compile: the model's forward, compiled (configure_model)
        self._hparams_logged = False

    def configure_model(self) -> None:
        """With model.compile, torch.compile the model's forward for training and validation: a function, not a
        module, so checkpoints keep the weights once, and sampling and the attention maps run the plain model."""
        if self.model.cfg.compile and self.compiled is None:  # (Lightning calls this hook at every fit)
            self.compiled = torch.compile(self.model.forward)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):  # GPT.forward: logits, loss
        return (self.model if self.compiled is None else self.compiled)(idx, targets)

    @property
    def flops_per_batch(self) -> int:  # training FLOPs of the last batch, for Lightning's ThroughputMonitor
        return self.chars_per_batch * self.flops_per_char

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.chars_per_batch = x.numel()
        _, loss = self(x, y)
        if not torch.isfinite(loss):  # stop rather than train on garbage; the checkpoints so far are kept
            raise NonFiniteLoss(f"the training loss is {loss.item()} at step {self.global_step + 1}: training stopped")
        micro = batch_idx % self.trainer.accumulate_grad_batches  # (an epoch's last step may have fewer batches)
        self.step_sum = loss.detach() if micro == 0 else self.step_sum + loss.detach()
        self.step_loss = self.step_sum / (micro + 1)  # the mean of the step's batches so far: at its last, the step's
        if logs_written_at(self.trainer, self.global_step + 1):
            self.log("train/loss", self.step_loss, prog_bar=True)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("step", float(self.global_step + 1))  # logged at the steps done, as validation below
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.trainer.max_steps > 0 and self.trainer.global_step + 1 >= self.trainer.max_steps:
            # the last step: Lightning then validates once more, so the last step is evaluated. Set here, before
            # the step's logs are written, so that Lightning writes the last step's (as logs_written_at says)
            self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        self._val_totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # summed loss, target count

    def validation_step(self, batch, batch_idx) -> None:
        x, y = batch
        logits, _ = self(x)
        loss_sum = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="sum")
        self._val_totals += torch.stack((loss_sum.double(), (y != -1).sum().double()))

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._val_totals, reduce_op="sum")  # exact across processes
        val_loss = (totals[0] / totals[1]).float()
        self.log_dict({"val/loss": val_loss, "val/bpc": val_loss / LN2}, prog_bar=True)
        # one step numbering (console, scalars, samples): the steps done; Lightning's default is one less
        self.log("step", float(self.global_step))
        if self.trainer.sanity_checking:
            return
        self.best_val_loss = torch.fmin(self.best_val_loss, val_loss.to(self.best_val_loss))  # NaN: not a best
        best = {"best/val_loss": self.best_val_loss.item(), "best/val_bpc": self.best_val_loss.item() / LN2}
        if not self._hparams_logged and self.logger is not None:  # HPARAMS tab, with best's first points: below
            log_hparams(self.loggers, self.logged_config or {}, best, self.global_step)
            self._hparams_logged = True
        else:
            self.log_dict(best)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # dropout's random stream, for exact resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def on_train_start(self) -> None:
        """A resumed run restores its optimizer and schedule with the settings they were started with: apply this
        run's optim.* (e.g. resume=... optim.lr=5e-4), so that what the checkpoint records is what trains."""
        self.best_val_loss = self.best_val_loss.float()  # trainer.precision=bf16-true made every buffer bf16
        optimizer = self.trainer.optimizers[0]
        schedule = self.lr_schedulers()
        settings = group_settings(self.hparams.optim)  # one per param group, in order
        schedule.base_lrs = [s["lr"] for s in settings]
        for group, s, factor in zip(optimizer.param_groups, settings, schedule.lr_lambdas):
            group.update({**s, "initial_lr": s["lr"], "lr": s["lr"] * factor(schedule.last_epoch)})

    def configure_optimizers(self):
        optimizer = make_optimizer(self.model, self.hparams.optim)  # optim=adamw | muon: frosty_lm/optim.py
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def lr_factor(self) -> Callable[[int], float]:
        """The lr multiplier by step; in a run limited by time, a cosine's by the share of the budget spent too, as
        Lightning's Timer counts it (kept in checkpoints: a resume goes on from it). Rank 0's time: every process, one
        lr."""
        factor = lr_lambda(**self.hparams.scheduler)
        if self.hparams.scheduler.get("name") != "cosine":  # constant: the steps alone
            return factor
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (a plain training loop's)
            return factor
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None), None)
        if timer is None:
            return factor
        return timed(factor, trainer.max_steps, timer.time_elapsed() + timer.time_remaining(),  # max_time's seconds
                     lambda: trainer.strategy.broadcast(timer.time_elapsed("train")))


def logs_written_at(trainer: L.Trainer, step: int) -> bool:
    """Whether Lightning writes the logs of training step `step` (from 1): every trainer.log_every_n_steps, and the
    last. self.log is costly next to a small model's step, so training_step logs only on these."""
    every = trainer.log_every_n_steps  # 0: none
    return bool(every) and (step % every == 0 or step == trainer.max_steps)


# TensorBoard's HPARAMS tab: the settings a user varies (data.block_size is model.block_size; the rest is plumbing)
HPARAMS = (
    "model", "optim", "scheduler", "seed",
    "data.name", "data.batch_size", "data.val_fraction",
    "trainer.max_steps", "trainer.precision", "trainer.accelerator", "trainer.devices", "trainer.val_check_interval",
    "trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.max_time",
)


def select(config: dict, prefix: str = "") -> dict:
    """The config's keys that HPARAMS lists, flattened (model.n_layer), less Hydra's (_target_), as TensorBoard shows
    them: None as "null", a boolean as "true"/"false" (torch would store 0.0/1.0), a list (optim.betas) as text."""
    params = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            params.update(select(value, f"{name}."))
        elif any(name == p or name.startswith(f"{p}.") for p in HPARAMS):
            shown = str(value).lower() if isinstance(value, bool) else value
            params[name] = "null" if value is None else shown if isinstance(shown, (int, float, str)) else str(value)
    return params


@rank_zero_only
def log_hparams(loggers: list[Logger], config: dict, metrics: dict, step: int) -> None:
    """The run's hyperparameters, once, via each logger's log_hyperparams, and `metrics`' first points at step:
    TensorBoard's log_hyperparams writes them itself, as its HPARAMS tab's columns (their values: those tags'
    scalars), then its hparams.yaml (which Lightning wrote empty); other loggers get them as metrics."""
    params = select(config)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics, step=step)
            save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, logger.hparams)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(metrics, step=step)
