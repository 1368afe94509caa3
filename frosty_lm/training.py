"""One training run from a composed config: data, model, trainer, fit, then a summary."""
from __future__ import annotations

import logging
import math
import shlex
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
from frosty_lm.data import CharDataModule
from frosty_lm.errors import FrostyError
from frosty_lm.lit_module import FrostyLM
from frosty_lm.model import GPTConfig
from frosty_lm.sampling import sample_text

log = logging.getLogger("frosty")


def build(cfg: DictConfig) -> tuple[CharDataModule, FrostyLM]:
    """The data module (set up, so its vocabulary is known) and the LightningModule of a run config."""
    for key in ("max_steps", "val_check_interval"):
        value = cfg.trainer.get(key)
        if isinstance(value, int) and value <= 0 and not (key == "max_steps" and value == -1):
            raise FrostyError(f"trainer.{key}={value} must be a positive integer")
    datamodule: CharDataModule = instantiate(cfg.data)
    module_kwargs = OmegaConf.to_container(cfg, resolve=True)  # plain containers: checkpoints load weights_only
    try:
        GPTConfig(vocab_size=1, **module_kwargs["model"])  # check the model config before reading the corpus
    except (TypeError, ValueError) as err:
        raise FrostyError(str(err)) from None
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = FrostyLM(
        vocab=datamodule.tokenizer.chars,
        model=module_kwargs["model"],
        optim=module_kwargs["optim"],
        scheduler=module_kwargs["scheduler"],
        run_config=module_kwargs,
    )
    return datamodule, model


def run_training(cfg: DictConfig) -> float:
    """Train, checkpoint, summarise; returns the best val loss (the value sweeps minimise)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = build(cfg)
    if cfg.ckpt_path:
        load_checkpoint(cfg.ckpt_path)  # a clear error now for a missing, foreign or unsafe file
    log.info("model: %s parameters, vocabulary of %d characters", f"{model.model.num_params():,}", len(model.hparams.vocab))
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path or None)
    best = float(model.best_val_loss)
    summarise(trainer, cfg)
    return best


@rank_zero_only
def summarise(trainer: L.Trainer, cfg: DictConfig) -> None:
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        log.info("no best checkpoint was written (no validation ran)")
        return
    path = Path(checkpoint.best_model_path).resolve()
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    loss = float(checkpoint.best_model_score)
    prompt = "\n" if "\n" in vocab else vocab[0]
    sample = sample_text(model, vocab, prompt, cfg.summary_sample_chars, temperature=0.8, seed=cfg.seed)
    command = f"python generate.py ckpt_path={shlex.quote(str(path))} prompt={shlex.quote(repr_prompt(vocab))}"
    log.info("best checkpoint: %s", path)
    log.info("best val loss %.4f nats/char, %.4f bits/char", loss, loss / math.log(2))
    log.info("sample:\n%s", sample.strip("\n"))
    log.info("continue from it with:\n  %s", command)


def repr_prompt(vocab: str) -> str:
    """A short prompt that the vocabulary can spell, for the printed generate.py command."""
    for candidate in ("Whose woods these are", "The ", "the "):
        if all(ch in vocab for ch in candidate):
            return candidate
    return vocab[-1]
