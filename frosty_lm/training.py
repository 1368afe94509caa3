"""One training run from a composed config: check, build, fit, summarise."""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import shlex
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from frosty_lm.callbacks import StopOnInterrupt
from frosty_lm.checkpoint import AtomicCheckpointIO, load_checkpoint, model_from_checkpoint
from frosty_lm.cli import in_sweep
from frosty_lm.data import CharDataModule
from frosty_lm.errors import FrostyError
from frosty_lm.lit_module import FrostyLM
from frosty_lm.model import GPTConfig
from frosty_lm.runs import LAST, RunRecord, resumed_config
from frosty_lm.sampling import default_prompt, sample_text

log = logging.getLogger("frosty")
# Lightning's advertisements and warnings about its own internals are noise in a Frosty run
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "Tip:" not in r.getMessage())
warnings.filterwarnings("ignore", message=r".*(IterableDataset.*__len__|treespec).*")
# Frosty's training stream resumes exactly without loader state (batch i is a function of seed and i), a
# resumed run reuses its checkpoint directory, and an "epoch" is nominal: these warnings do not apply.
warnings.filterwarnings("ignore", message=r".*(dataloader is not resumable|Checkpoint directory .* exists and is not empty"
                                          r"|smaller than the logging interval).*")


def make(node: DictConfig, **kwargs):
    """Hydra's instantiate; a user error raised by the constructor (ours, or Lightning's
    MisconfigurationException, e.g. trainer=gpu without a GPU) comes out as a FrostyError, not a report."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, FrostyError):
            raise cause from None
        if isinstance(cause, MisconfigurationException):
            raise FrostyError(" ".join(str(cause).split())) from None
        raise


def check_config(cfg: DictConfig) -> None:
    """Fail in seconds, before the corpus is read, on what the config alone shows to be wrong."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        missing = re.search(r"Missing mandatory value: (\S+)", str(err))
        if missing:  # the message names the key in full when an interpolation led to it
            key = missing.group(1) if "." in missing.group(1) else err.full_key
            raise FrostyError(f"{key} has no value: give it on the command line, e.g. {key}=...") from None
        raise FrostyError(str(err).splitlines()[0]) from None
    try:
        GPTConfig(vocab_size=1, **OmegaConf.to_container(cfg.model, resolve=True))
    except (TypeError, ValueError) as err:
        raise FrostyError(str(err)) from None
    for key in ("max_steps", "val_check_interval"):
        value = cfg.trainer.get(key)
        if not isinstance(value, int) or value <= 0:
            raise FrostyError(f"trainer.{key}={value!r} must be a positive integer")


def build(cfg: DictConfig) -> tuple[CharDataModule, FrostyLM]:
    """The data module (set up, so its vocabulary is known) and the LightningModule of a run config."""
    check_config(cfg)
    datamodule: CharDataModule = make(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    run_config = OmegaConf.to_container(cfg, resolve=True)  # plain containers: checkpoints load weights_only
    model = FrostyLM(
        vocab=datamodule.tokenizer.chars,
        model=run_config["model"],
        optim=run_config["optim"],
        scheduler=run_config["scheduler"],
        run_config=run_config,
        composed_config=OmegaConf.to_container(cfg, resolve=False),
    )
    return datamodule, model


def check_compatible(ckpt_path: str, hparams: dict, model: FrostyLM) -> None:
    """A checkpoint to start from (hparams: its hyper_parameters) must share this run's vocabulary and model shape."""
    if hparams["vocab"] != model.hparams.vocab:
        raise FrostyError(f"{ckpt_path} was trained on another vocabulary ({len(hparams['vocab'])} characters, this "
                          f"corpus has {len(model.hparams.vocab)}): start from a checkpoint of the same corpus")
    for key in ("block_size", "n_layer", "n_head", "n_embd", "bias"):
        if hparams["model"].get(key) != model.hparams.model.get(key):
            raise FrostyError(f"{ckpt_path} has model.{key}={hparams['model'].get(key)}, this run "
                              f"model.{key}={model.hparams.model.get(key)}: use the checkpoint's model settings")


def resume_if_asked(cfg: DictConfig) -> DictConfig:
    """resume=latest|RUN_DIR: Hydra has already put this job in that run's directory; continue it with
    the config it was started with (plus this command's key=value overrides) from its last checkpoint."""
    if not cfg.get("resume"):
        return cfg
    hydra = HydraConfig.get()
    last = Path(hydra.runtime.output_dir) / LAST
    ckpt = load_checkpoint(last)
    hparams = ckpt["hyper_parameters"]
    stored = hparams.get("composed_config") or hparams.get("run_config")  # with its interpolations, if kept
    if not stored:
        raise FrostyError(f"{last} holds no run config to resume with: use ckpt_path={last} and the run's overrides")
    cfg = resumed_config(stored, list(hydra.overrides.task), set(hydra.runtime.choices))
    cfg.ckpt_path = str(last)
    log.info("resuming %s from step %d", last.parents[1], ckpt["global_step"])
    return cfg


def run_training(cfg: DictConfig) -> float:
    """Train, checkpoint, summarise; returns the best val loss (the value sweeps minimise).
    The run's status.json follows it: running, then finished, interrupted or failed."""
    cfg = resume_if_asked(cfg)
    record = RunRecord(cfg.paths.output_dir)
    record.start(overrides=list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [])
    try:
        best, stopped_at = fit(cfg, record)
    except BaseException as err:
        record.write(status="failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise
    record.write(status="interrupted" if stopped_at is not None else "finished")
    if stopped_at is not None:
        log.info("interrupted at step %d; continue with: python train.py resume=%s",
                 stopped_at, shlex.quote(str(Path(cfg.paths.output_dir))))
        sys.exit(130)
    return best


def fit(cfg: DictConfig, record: RunRecord) -> tuple[float, int | None]:
    """The run itself; returns the best val loss, and the step if Ctrl-C stopped it."""
    set_threads(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # a clear error now, before the corpus is read, for a missing or unsafe file
    start = load_checkpoint(cfg.ckpt_path) if cfg.ckpt_path else None
    datamodule, model = build(cfg)
    if start is not None:
        check_compatible(cfg.ckpt_path, start["hyper_parameters"], model)
    log.info("model: %s parameters, vocabulary of %d characters", f"{model.model.num_params():,}", len(model.hparams.vocab))
    record.write(num_params=model.model.num_params())
    spawn_ranks_inside_sweep(cfg)
    interrupt = StopOnInterrupt()
    callbacks = [make(c) for c in cfg.get("callbacks", {}).values() if c is not None] + [interrupt]
    bars = parallel_jobs() == 1  # jobs running side by side would garble each other's progress bars
    callbacks = [c for c in callbacks if bars or not isinstance(c, ProgressBar)]
    loggers = [make(c) for c in cfg.get("logger", {}).values() if c is not None]
    trainer: L.Trainer = make(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
                              enable_progress_bar=bars)
    per_step = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    log.info("effective batch: %d windows of %d characters per step (data.batch_size %d x %d processes x %d "
             "accumulated); lr %g (not scaled with the batch)", per_step, cfg.model.block_size, cfg.data.batch_size,
             trainer.world_size, trainer.accumulate_grad_batches, cfg.optim.lr)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path or None, weights_only=True)
    best = float(model.best_val_loss)
    record.write(best_val_loss=best, **({"steps": trainer.global_step} if trainer.global_step else {}))
    summarise(trainer, cfg, best)
    return best, trainer.global_step if interrupt.interrupted else None


def spawn_ranks_inside_sweep(cfg: DictConfig) -> None:
    """Plain ddp starts the other ranks by re-running the command line: inside a sweep, each would re-run the
    whole sweep. There, unless SLURM or torchrun already started one process per rank, use ddp_spawn, which
    starts them from this job."""
    externally_started = SLURMEnvironment.detect() or TorchElasticEnvironment.detect()
    if not in_sweep() or cfg.trainer.get("strategy") != "ddp" or externally_started:
        return
    log.info("inside a sweep: trainer.strategy=ddp_spawn instead of ddp")
    cfg.trainer.strategy = "ddp_spawn"
    if multiprocessing.get_start_method(allow_none=True) not in (None, "spawn", "fork", "forkserver"):
        multiprocessing.set_start_method("spawn", force=True)  # a joblib (loky) worker's own method spawns nothing


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (the joblib launcher's n_jobs), else 1."""
    if not in_sweep():
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs") or 1
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def set_threads(cfg: DictConfig) -> None:
    """torch's CPU threads: cfg.threads if set; else, in a parallel sweep, this job's share of the cores."""
    threads = cfg.get("threads")
    if threads is None and parallel_jobs() > 1:
        threads = max(1, (os.cpu_count() or 1) // parallel_jobs())
    if threads:
        torch.set_num_threads(int(threads))
    log.info("torch threads: %d", torch.get_num_threads())


@rank_zero_only
def summarise(trainer: L.Trainer, cfg: DictConfig, loss: float) -> None:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        log.info("no best checkpoint was written (no validation ran)")
        return
    path = Path(checkpoint.best_model_path).resolve()
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    sample = sample_text(model, vocab, default_prompt(vocab), cfg.summary_sample_chars, temperature=0.8, seed=cfg.seed)
    command = f"python generate.py ckpt_path={shlex.quote(str(path))} prompt={shlex.quote(short_prompt(vocab))}"
    log.info("best checkpoint: %s", path)
    log.info("best val loss %.4f nats/char, %.4f bits/char", loss, loss / math.log(2))
    metrics = trainer.callback_metrics  # the last values the Throughput callback logged, if it ran
    if "train/chars_per_sec" in metrics and "train/peak_fraction" in metrics:
        log.info("training speed: %s characters/s, %.1f%% of this machine's matmul peak (%s)",
                 f"{float(metrics['train/chars_per_sec']):,.0f}", 100 * float(metrics["train/peak_fraction"]),
                 trainer.precision)
    log.info("sample:\n%s", sample.strip("\n"))
    log.info("continue from it with:\n  %s", command)


def short_prompt(vocab: str) -> str:
    """A short prompt that the vocabulary can spell, for the printed generate.py command."""
    for candidate in ("Whose woods these are", "The ", "the "):
        if all(ch in vocab for ch in candidate):
            return candidate
    return vocab[-1]
