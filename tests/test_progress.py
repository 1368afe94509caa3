"""Following a run: progress lines and their estimates, console-only and job-prefixed logging, the summary's
prompt, command and precision, the report's train/val gap."""
import io
import logging
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from frosty_lm.cli import generate_command
from frosty_lm.generation import corpus_prompt
from frosty_lm.machine import BELOW_BF16, precision_line
from frosty_lm.progress import FILE_ONLY, ProgressLines, duration, keep_off_console
from frosty_lm.report import Run


def fake_trainer(global_step: int, max_steps: int = 100, val_check_interval: int = 10,
                 accumulate_grad_batches: int = 1) -> SimpleNamespace:  # val_check_interval: in batches, as Lightning's
    return SimpleNamespace(global_step=global_step, max_steps=max_steps, val_check_interval=val_check_interval,
                           accumulate_grad_batches=accumulate_grad_batches, callbacks=[])


def lines_after(steps: int, train_seconds: float, validations: int = 0, val_seconds: float = 0.0,
                first_step: float | None = None) -> ProgressLines:
    """A ProgressLines that has trained `steps` steps in `train_seconds`, the first of them in `first_step`
    (default: the mean)."""
    lines = ProgressLines()
    lines.steps, lines.train_seconds = steps, train_seconds
    lines._first_step = train_seconds / max(steps, 1) if first_step is None else first_step
    lines.validations, lines.val_seconds = validations, val_seconds
    lines._phase = "val"  # no training time running on: the numbers above are all
    return lines


def test_eta_is_the_remaining_steps_at_the_mean_step_time_plus_the_remaining_validations():
    assert lines_after(0, 0.0).eta(fake_trainer(0), 0.0) is None  # nothing measured yet
    assert lines_after(20, 10.0).eta(fake_trainer(20), 0.0) == pytest.approx(80 * 0.5)  # no validation measured yet
    # 80 steps at 0.5 s, and validations at 30, 40, ... 100 (8 of them) at 2 s each
    assert lines_after(20, 10.0, 2, 4.0).eta(fake_trainer(20), 0.0) == pytest.approx(40 + 8 * 2)
    # max_steps not a multiple of the interval: one more validation after the last step (95)
    assert lines_after(20, 10.0, 2, 4.0).eta(fake_trainer(20, max_steps=95), 0.0) == pytest.approx(37.5 + 8 * 2)
    assert lines_after(20, 10.0, 2, 4.0).eta(fake_trainer(100), 0.0) == 0
    # 2 batches a step: Lightning's interval of 20 batches is train.py's 10 steps, the same validations
    assert lines_after(20, 10.0, 2, 4.0).eta(fake_trainer(20, val_check_interval=20, accumulate_grad_batches=2),
                                             0.0) == pytest.approx(40 + 8 * 2)


def test_eta_leaves_out_the_first_steps_warm_up():
    # on a GPU the first step takes far longer than the next ones: an estimate over all of them would be far too long
    assert lines_after(20, 5.0 + 19 * 0.5, first_step=5.0).eta(fake_trainer(20), 0.0) == pytest.approx(80 * 0.5)
    assert lines_after(1, 5.0, first_step=5.0).eta(fake_trainer(1), 0.0) == pytest.approx(99 * 5.0)  # all there is


def test_the_estimate_says_whether_it_includes_validations(caplog):
    with caplog.at_level(logging.INFO, logger="frosty"):
        lines_after(11, 1.0 + 10 * 0.1, first_step=1.0)._log_estimate(fake_trainer(11), 0.0)
        lines_after(11, 1.0 + 10 * 0.1, 1, 2.5, first_step=1.0)._log_estimate(fake_trainer(11), 0.0)
    first, second = (r.getMessage() for r in caplog.records)
    assert "for the remaining 89 steps (100 ms/step over the 10 after the first; validations not yet included)" in first
    # 89 steps at 0.1 s and the validations at 20, 30, ... 100 (9) at 2.5 s: 8.9 + 22.5 = 31 s
    assert second.startswith("time estimate: 00:31 ") and second.endswith("; validations at their 2.5 s each)")


def test_eta_is_capped_by_what_max_time_leaves():
    from lightning.pytorch.callbacks import Timer

    timer = Timer(duration="00:00:00:30")
    timer._start_time[next(iter(timer._start_time))] = None  # not started: time_remaining is the whole budget
    trainer = fake_trainer(20)
    trainer.callbacks = [timer]
    assert lines_after(20, 10.0).eta(trainer, 0.0) == pytest.approx(30, abs=1)


def test_duration_reads_as_clock_time():
    assert duration(5) == "00:05"
    assert duration(65.4) == "01:05"
    assert duration(3725) == "1:02:05"
    assert duration(1e16) == duration(float("inf")) == "over 100 years"  # (timedelta overflows)


def test_file_only_lines_stay_off_the_console_and_a_prefix_starts_every_console_line(tmp_path):
    console, logfile = io.StringIO(), tmp_path / "train.log"
    root, handlers = logging.getLogger(), logging.getLogger().handlers[:]
    level = root.level
    root.handlers = [logging.StreamHandler(console), logging.FileHandler(logfile)]
    root.setLevel(logging.INFO)
    try:
        keep_off_console("[dropout=0.2] ")
        log = logging.getLogger("frosty.test")
        log.info("validation at step 10")
        log.info("sample:\ntwo lines", extra=FILE_ONLY)
        keep_off_console()  # a later job in the same worker process: no prefix, still filtered
        log.info("next job")
        log.info("hidden", extra=FILE_ONLY)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = handlers
        root.setLevel(level)
    assert console.getvalue() == "[dropout=0.2] validation at step 10\nnext job\n"
    assert logfile.read_text() == "validation at step 10\nsample:\ntwo lines\nnext job\nhidden\n"


def test_the_summary_prompt_comes_from_the_runs_own_text():
    assert corpus_prompt("ome words\n\nMuch to learn, you still have.\nYes.") == "Much to learn,"
    assert corpus_prompt("no line break here") == "\n"


@pytest.mark.parametrize("prompt", ["Much to learn,", 'He said "no"', "back\\slash", "Snow, and ice!"])
def test_the_printed_generate_command_gives_generate_py_the_prompt_unchanged(prompt):
    args = shlex.split(generate_command(Path("/runs/a b/best.ckpt"), prompt, 7))
    assert args[:2] == ["python", "generate.py"] and args[-1] == "seed=7"
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(args[2:])}
    assert parsed == {"ckpt_path": "/runs/a b/best.ckpt", "prompt": prompt, "seed": 7}


def test_no_prompt_in_the_command_for_a_line_break():
    assert "prompt" not in generate_command(Path("b.ckpt"), "\n", 1)


def test_the_precision_line_says_why(monkeypatch):
    for name in BELOW_BF16:  # no instruction-set cap (the variables that approximate an AVX2 CPU)
        monkeypatch.delenv(name, raising=False)
    auto = OmegaConf.create({"trainer": {"precision": "${frosty_cpu_precision:}"}})
    assert "computes bf16 natively" in precision_line(auto, "bf16-mixed")
    assert precision_line(auto, "32-true").startswith("fp32 (32-true): this CPU has no native bf16")
    forced = OmegaConf.create({"trainer": {"precision": "32-true"}})
    assert precision_line(forced, "32-true") == "32-true: as trainer.precision sets it"


@pytest.mark.parametrize("name, value, capped", [("ATEN_CPU_CAPABILITY", "avx2", True),
                                                 ("ONEDNN_MAX_CPU_ISA", "AVX2", True),
                                                 ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", False)])
def test_an_instruction_set_capped_below_bf16_trains_in_fp32_and_says_so(monkeypatch, name, value, capped):
    from frosty_lm.machine import NATIVE_BF16, cpu_flags, cpu_precision

    for other in BELOW_BF16:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, value)
    auto = OmegaConf.create({"trainer": {"precision": "${frosty_cpu_precision:}"}})
    if capped:  # how an AVX2-only CPU is measured on one with AMX (docs/performance.md)
        assert cpu_precision() == "32-true"
        assert precision_line(auto, "32-true") == (f"fp32 (32-true): {name}={value} caps torch's CPU kernels below "
                                                   "native bf16")
    else:
        assert cpu_precision() == ("bf16-mixed" if set(NATIVE_BF16) & (cpu_flags() or set()) else "32-true")


def test_the_train_val_gap_waits_for_two_validations_and_compares_the_same_stretch():
    curves = {"val/loss": [(10, 3.0)], "train/loss": [(5, 3.5), (10, 3.2)]}
    assert Run(Path("r"), {}, curves).gap() is None
    curves = {"val/loss": [(10, 3.0), (20, 2.5)], "train/loss": [(5, 3.5), (10, 3.2), (15, 2.4), (20, 2.2)]}
    assert Run(Path("r"), {}, curves).gap() == pytest.approx(2.5 - 2.3)


def test_lightning_warnings_that_do_not_apply_are_silenced_and_others_are_not():
    import warnings

    from frosty_lm.progress import quiet_lightning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        # both from a GPU run: Frosty measures the peak itself, and a batch is one gather (no loader workers)
        warnings.warn("FLOPs not found for 'NVIDIA H200', chip is 'nvidia h200'", stacklevel=1)
        warnings.warn("The 'train_dataloader' does not have many workers which may be a bottleneck.", stacklevel=1)
        warnings.warn("a warning Frosty knows nothing about", stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning Frosty knows nothing about"]
