"""What a run tells its user about itself: the precision it trains in and why, and its summary at the end."""
import logging
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from frosty_lm.callbacks import CharThroughput
from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
from frosty_lm.cli import command_arg
from frosty_lm.generation import default_prompt, sample_text
from frosty_lm.machine import isa_cap
from frosty_lm.progress import ProgressLines, duration, job_log_only

log = logging.getLogger("frosty")


@rank_zero_only
def summarise(trainer: L.Trainer, cfg: DictConfig, loss: float, text: str) -> None:
    """The best checkpoint, val loss, average training speed, a sample from a prompt out of the run's own corpus
    (text: the validation split's start), and the generate.py command that continues it. In a parallel sweep the
    sample and the command go to the job's train.log only."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        log.info("no best checkpoint was written (no validation ran)")
        return
    path = Path(checkpoint.best_model_path).resolve()
    model, vocab = model_from_checkpoint(load_checkpoint(path))
    prompt = corpus_prompt(text)
    if any(ch not in vocab for ch in prompt):  # e.g. "\n" for a one-line corpus without line breaks
        prompt = default_prompt(vocab)
    sample = sample_text(model, vocab, prompt, cfg.summary_sample_chars, temperature=0.8, seed=cfg.seed)
    log.info("best checkpoint: %s", path)
    log.info("best val loss %.4f nats/char, %.4f bits/char", loss, loss / math.log(2))
    lines = next((c for c in trainer.callbacks if isinstance(c, ProgressLines)), None)  # times training, validations
    if lines is not None and (speed := lines.average_speed()) is not None:  # characters/s, validation left out
        throughput = next((c for c in trainer.callbacks if isinstance(c, CharThroughput)), None)
        peak = getattr(throughput, "available_flops", None)  # one device's matmul peak: so is the fraction
        fraction = speed / trainer.world_size * trainer.lightning_module.flops_per_char / peak if peak else None
        log.info("training speed: %s", speed_line(speed, fraction, precision=str(trainer.precision)))
    if lines is not None and lines.validations:
        log.info("time: %s training, %s in %d validations (val loss, sample, checkpoints)",
                 duration(lines.train_seconds), duration(lines.val_seconds), lines.validations)
    log.info("sample:\n%s", sample.strip("\n"), extra=job_log_only())
    log.info("continue from it with:\n  %s", generate_command(path, prompt, cfg.seed), extra=job_log_only())


def corpus_prompt(text: str, words: int = 3) -> str:
    """The first words of text's first non-blank line after a line break (so it starts a line); "\n" if none."""
    lines = [line.split() for line in text.split("\n")[1:]]
    first = next((line for line in lines if line), None)
    return " ".join(first[:words]) if first else "\n"


def generate_command(path: Path, prompt: str, seed: int) -> str:
    """The shell command that samples from path as the summary did (the prompt Hydra-quoted: commas and quotes
    pass; a blank one is generate.py's default)."""
    command = f"python generate.py {command_arg('ckpt_path', path)}"
    if prompt.strip():
        command += " " + command_arg("prompt", prompt, quoted=True)
    return f"{command} seed={seed}"


def precision_line(cfg: DictConfig, precision: str) -> str:
    """The training precision and why: trainer=cpu picks bf16 where the CPU computes it natively."""
    chosen = OmegaConf.to_container(cfg.trainer, resolve=False).get("precision")
    if isinstance(chosen, str) and "frosty_cpu_precision" in chosen:
        if precision.startswith("bf16"):
            return f"{precision}: this CPU computes bf16 natively (AVX512-BF16 or AMX); weights stay fp32"
        if (cap := isa_cap()) is not None:
            return f"fp32 ({precision}): {cap} caps torch's CPU kernels below native bf16"
        return (f"fp32 ({precision}): this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 would be slower; "
                "expect several times the time per step of such a CPU")
    return f"{precision}: as trainer.precision sets it"


def speed_line(chars_per_sec: float, peak_fraction: float | None, precision: str) -> str:
    """"N characters/s, X% of this machine's matmul peak (precision)"; the speed alone if the fraction is
    unknown or above 1 (the peak was measured low, e.g. on a busy machine: a percentage would mislead)."""
    speed = f"{chars_per_sec:,.0f} characters/s"
    if peak_fraction is None or not 0 < peak_fraction <= 1:
        return speed
    percent = f"{100 * peak_fraction:.1f}" if peak_fraction >= 0.01 else f"{100 * peak_fraction:.2g}"  # not 0.0
    return f"{speed}, {percent}% of this machine's matmul peak ({precision})"
