"""The throughput estimate in the training log: the machine's matmul peak, CharThroughput's speed and MFU with it,
and the summary line that never claims more than 100% of the peak."""
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import poem
from frosty_lm import callbacks
from frosty_lm.callbacks import CharThroughput
from frosty_lm.corpus import CharTokenizer
from frosty_lm.data import RandomWindows, fixed_windows
from frosty_lm.lit_module import FrostyLM
from frosty_lm.machine import matmul_peak
from frosty_lm.status import speed_line

TINY_MODEL = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0, "bias": True, "compile": False}


def test_matmul_peak_is_plausible_and_leaves_the_training_random_stream_alone():
    state = torch.get_rng_state()
    peak = matmul_peak(torch.float32, sizes=(128, 256), repeats=2)
    assert 1e8 < peak < 1e14  # FLOP/s: more than a tenth of a GFLOP/s, less than 100 TFLOP/s on a CPU
    assert torch.equal(torch.get_rng_state(), state)  # dropout's stream, and so resumed runs, are unchanged


def fit_tiny(throughput: CharThroughput, steps: int = 6) -> FrostyLM:
    text = poem(50)
    tokenizer = CharTokenizer.from_text(text)
    module = FrostyLM(tokenizer.chars, TINY_MODEL, {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
                      {"name": "constant"})
    windows = RandomWindows(tokenizer.encode_tensor(text), 16, 4, seed=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps, log_every_n_steps=3,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[throughput])
    trainer.fit(module, train_dataloaders=DataLoader(windows, batch_size=None))
    return module


def test_a_given_peak_is_used_and_mfu_is_the_model_flops_over_it(monkeypatch):
    monkeypatch.setattr(callbacks, "matmul_peak", lambda *a, **k: pytest.fail("the peak was given: nothing to measure"))
    throughput = CharThroughput(available_flops=1e12)
    module = fit_tiny(throughput)
    assert throughput.available_flops == 1e12
    chars_per_sec, mfu = throughput.training_speed()
    assert chars_per_sec > 0
    assert module.flops_per_batch == 4 * 16 * module.model.flops_per_char()  # batch x block_size x per character
    assert mfu == pytest.approx(chars_per_sec * module.model.flops_per_char() / 1e12)


def test_on_a_cpu_the_peak_is_measured_in_the_training_precision(monkeypatch):
    asked = []
    monkeypatch.setattr(callbacks, "matmul_peak", lambda dtype, device: asked.append((dtype, device.type)) or 5e11)
    throughput = CharThroughput()
    fit_tiny(throughput)
    assert asked == [(torch.float32, "cpu")] and throughput.available_flops == 5e11  # Lightning has no CPU table


def test_validation_is_left_out_of_the_training_time():
    """A validation (here with its checkpoint or sample, a second) between the window's steps adds nothing to
    training's time: the speed is that of the steps alone."""
    import time

    class SlowValidation(L.Callback):
        def on_validation_end(self, trainer, pl_module):
            time.sleep(1.0)

    text = poem(50)
    tokenizer = CharTokenizer.from_text(text)
    module = FrostyLM(tokenizer.chars, TINY_MODEL, {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
                      {"name": "constant"})
    data = tokenizer.encode_tensor(text)
    throughput = CharThroughput(available_flops=1e12, window_size=6)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=6, val_check_interval=3,
                        limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[throughput, SlowValidation()])
    trainer.fit(module, train_dataloaders=DataLoader(RandomWindows(data, 16, 4, seed=0), batch_size=None),
                val_dataloaders=DataLoader(fixed_windows(data, 16), batch_size=4))
    (start, *_), (end, chars, _) = throughput.points[0], throughput.points[-1]
    assert len(throughput.points) == 6 and chars == 6 * 4 * 16
    assert end - start < 1.0  # steps 2 to 6, with the validation at step 3 between them
    chars_per_sec, mfu = throughput.training_speed()
    assert chars_per_sec == pytest.approx(5 * 4 * 16 / (end - start))


def test_too_few_steps_give_no_speed():
    assert CharThroughput().training_speed() is None


@pytest.mark.parametrize("fraction, shown", [(0.253, True), (1.0, True), (1.105, False), (None, False),
                                             (0.00044, True)])
def test_the_summary_never_prints_a_fraction_above_the_peak(fraction, shown):
    line = speed_line(12345.6, fraction, "bf16-mixed")
    assert line.startswith("12,346 characters/s")
    assert ("of this machine's matmul peak (bf16-mixed)" in line) == shown
    assert "110.5%" not in line
    if fraction == 0.253:
        assert line == "12,346 characters/s, 25.3% of this machine's matmul peak (bf16-mixed)"
    if fraction == 0.00044:  # a tiny model on a large GPU: two digits, not "0.0%"
        assert line == "12,346 characters/s, 0.044% of this machine's matmul peak (bf16-mixed)"


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
