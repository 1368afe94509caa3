"""Training throughput in TensorBoard: conf/callbacks/'s throughput node is Lightning's ThroughputMonitor, fed
the batch's windows and characters and the model's FLOPs; and the training benchmark's step timer."""
import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from conftest import CONF, poem
from frosty_lm.corpus import CharTokenizer
from frosty_lm.data import RandomWindows, fixed_windows
from frosty_lm.lit_module import FrostyLM

TINY_MODEL = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0, "bias": True, "compile": False}


class Rows(Logger):
    """Test-only: keeps what is logged."""

    name, version = "rows", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows = []

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass


def test_the_configured_throughput_logs_characters_and_model_flops_per_second():
    text = poem(50)
    tokenizer = CharTokenizer.from_text(text)
    data = tokenizer.encode_tensor(text)
    module = FrostyLM(tokenizer.chars, TINY_MODEL, {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
                      {"name": "constant"})
    rows = Rows()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=30, val_check_interval=15,
                        limit_val_batches=2, num_sanity_val_steps=0, logger=rows, log_every_n_steps=10,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[instantiate(OmegaConf.load(CONF / "callbacks" / "default.yaml").throughput)])
    trainer.fit(module, train_dataloaders=DataLoader(RandomWindows(data, 16, 4, seed=0), batch_size=None),
                val_dataloaders=DataLoader(fixed_windows(data, 16), batch_size=4))
    speeds = [m for _, m in rows.rows if "train/device/items_per_sec" in m]
    assert len(speeds) == 3  # every log_every_n_steps (10) of 30, once its window (10 steps) is full
    for m in speeds:  # characters: windows x 16; FLOPs: nanoGPT's estimate per character
        assert m["train/device/items_per_sec"] == pytest.approx(16 * m["train/device/samples_per_sec"])
        assert m["train/device/flops_per_sec"] == pytest.approx(
            module.model.flops_per_char() * m["train/device/items_per_sec"])
    assert speeds[-1]["train/lengths"] == 30 * 4 * 16  # every character trained on


def test_the_training_benchmark_times_the_steps_it_names_when_the_corpus_is_shorter_than_the_run():
    # With large batches (bench/train_speed.py on a GPU) a pass over frost.txt is shorter than the run: a timer
    # that restarts with the batch index of the second pass would report Lightning far faster than a plain loop.
    from bench.train_speed import StepTimer

    text = poem(30)[:300]
    tokenizer = CharTokenizer.from_text(text)
    windows = RandomWindows(tokenizer.encode_tensor(text), 16, 4, seed=0)
    assert len(windows) == 4  # passes of 4 batches: the batch index is 3 again at global step 7
    module = FrostyLM(tokenizer.chars, TINY_MODEL, {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
                      {"name": "constant"})
    timer = StepTimer(warmup=3, device=torch.device("cpu"))
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=3 + 7, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, train_dataloaders=DataLoader(windows, batch_size=None))
    assert (timer.start_step, timer.steps) == (3, 7) and timer.seconds > 0


def test_the_generation_benchmark_compares_with_a_commit_in_one_process(capsys):
    """--baseline COMMIT: that commit's code (here this one's) imported beside this checkout's, alternating."""
    from bench.generate_speed import against_baseline

    against_baseline("HEAD", chars=20, rounds=2)
    line = capsys.readouterr().out
    assert line.startswith("small model, cached: this checkout ") and "HEAD " in line
    assert 0.2 < float(line.rsplit(": ", 1)[1].removesuffix("x\n")) < 5  # the same code: near 1 on a quiet machine
