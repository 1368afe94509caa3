"""A validation's extras (the text sample, the attention maps, sample/copied) come every N validations and at the
run's last; its val loss and checkpoints at every one."""
import shutil
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import QUICK, TINY, poem
from frosty_lm.callbacks import AttentionImage, CopiedShare, EveryNValidations, SampleText
from frosty_lm.config import FrostyError
from test_reliability import assert_one_line_error

EXTRAS = ("sample_text", "attention_image", "copied")


class Recorder(EveryNValidations):
    name = "sample_text"

    def __init__(self, every_n_validations: int) -> None:
        super().__init__(every_n_validations)
        self.steps = []

    def at_validation(self, trainer, pl_module) -> None:
        self.steps.append(trainer.global_step)


def validate(callback: EveryNValidations, steps, max_steps: int, sanity_check: bool = False, stop_at=None) -> list:
    """Validations at these steps of a run of max_steps (a sanity check first, if asked; a stop at stop_at, as
    trainer.max_time or early stopping stop): the steps at which the callback did its work."""
    if sanity_check:
        callback.on_validation_end(SimpleNamespace(sanity_checking=True, should_stop=False, max_steps=max_steps,
                                                   global_step=0), None)
    for step in steps:
        trainer = SimpleNamespace(sanity_checking=False, should_stop=step == stop_at, max_steps=max_steps,
                                  global_step=step)
        callback.on_validation_end(trainer, None)
    return callback.steps


@pytest.mark.parametrize("every, expected", [(1, [10, 20, 30, 40, 50]), (2, [20, 40, 50]), (3, [30, 50]),
                                             (4, [40, 50]), (5, [50]), (9, [50])])
def test_every_nth_validation_and_the_last_one(every, expected):
    assert validate(Recorder(every), [10, 20, 30, 40, 50], max_steps=50, sanity_check=True) == expected


def test_a_short_run_gets_one_of_each_at_its_last_validation():
    assert validate(Recorder(4), [20, 40, 60], max_steps=60) == [60]
    assert validate(Recorder(4), [20, 40, 55], max_steps=55) == [55]  # the last step, off the interval


def test_a_stop_before_max_steps_is_the_last_validation_too():
    assert validate(Recorder(4), [10, 20, 27], max_steps=100, stop_at=27) == [27]


def test_a_resumed_run_keeps_the_cadence_of_an_uninterrupted_one():
    first = Recorder(2)
    assert validate(first, [10, 20, 30], max_steps=60) == [20]
    resumed = Recorder(2)
    resumed.load_state_dict(first.state_dict())  # as Lightning restores it from the checkpoint
    assert validate(resumed, [40, 50, 60], max_steps=60) == [40, 60]
    older = Recorder(2)
    older.load_state_dict({})  # a checkpoint without the count: counted from the resume
    assert validate(older, [40, 50, 60], max_steps=60) == [50, 60]


@pytest.mark.parametrize("make, key", [(SampleText, "sample_text"), (AttentionImage, "attention_image"),
                                       (CopiedShare, "copied")])
def test_a_bad_cadence_is_one_line_with_the_key(make, key):
    with pytest.raises(FrostyError, match=rf"^callbacks\.{key}\.every_n_validations=0 must be a positive integer N"):
        make(every_n_validations=0)


@pytest.mark.parametrize("override, message", [
    ("callbacks.sample_text.every_n_validations=0", "callbacks.sample_text.every_n_validations=0 must be"),
    ("callbacks.attention_image.every_n_validations=1.5", "callbacks.attention_image.every_n_validations=1.5 must"),
    ("callbacks.copied.every_n_validations=often", "callbacks.copied.every_n_validations='often' must be a positive "
                                                   "integer N: at every Nth validation and at the last"),
])
def test_a_bad_cadence_is_refused_before_anything_runs(invoke, text_file, tmp_path, override, message):
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", override,
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_run_logs_its_extras_every_n_validations_and_its_val_loss_at_every_one(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    every = [f"callbacks.{name}.every_n_validations=2" for name in EXTRAS]
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=50", "trainer.val_check_interval=10", *every,
                          "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}")
    assert code == 0, err
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [10, 20, 30, 40, 50]
    assert [e.step for e in events.Tensors("sample/text_summary")] == [20, 40, 50]  # the 2nd, 4th, and the last
    assert [e.step for e in events.Images("attention")] == [20, 40, 50]
    assert [e.step for e in events.Scalars("sample/copied")] == [20, 40, 50]
    states = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert all(states[name] == {"validations": 5} for name in ("SampleText", "AttentionImage", "CopiedShare"))


def extras_steps(run_dir) -> tuple[list[int], list[int]]:
    """The steps of the run's val losses, and those of its text samples."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return [e.step for e in events.Scalars("val/loss")], [e.step for e in events.Tensors("sample/text_summary")]


def test_an_early_stop_is_the_last_validation(invoke, tmp_path):
    text = poem()  # as test_stops.rising_corpus: a val split whose loss falls for 10 steps, then rises
    train = text[: int(len(text) * 0.9)]
    rising = tmp_path / "rising.txt"
    rising.write_text(train + text[::-1][: len(text) - len(train)], encoding="utf-8")
    run_dir = tmp_path / "r"
    code, _, err = invoke("train.py", "model=tiny", "data.batch_size=8", "optim.lr=0.01", "scheduler=constant",
                          "trainer.val_check_interval=5", "trainer.max_steps=100", *QUICK,
                          "callbacks.early_stopping.patience=2", "callbacks.sample_text.every_n_validations=100",
                          "dataset=text", f"data.path={rising}", f"hydra.run.dir={run_dir}")
    assert code == 0, err
    val, samples = extras_steps(run_dir)
    assert val[-1] < 100 and samples == [val[-1]]  # stopped early: the sample at the stop only


def test_a_stop_by_max_time_is_the_last_validation(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=100000", "trainer.val_check_interval=100000",
                          "trainer.max_time=00:00:00:01", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    val, samples = extras_steps(run_dir)
    assert len(val) == 1 and samples == val  # the one validation, at the stop: its sample too


def test_a_run_checkpointed_without_the_cadence_resumes_at_the_default_one(invoke, trained_run, tmp_path):
    """A checkpoint whose recorded callbacks have no every_n_validations and that holds no count of validations (as
    runs trained before the cadence): the run resumes with today's conf/ for its callbacks (every 4th and the
    last), counted from the resume."""
    run_dir = tmp_path / "received"
    shutil.copytree(trained_run, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    for name in EXTRAS:
        del ckpt["hyper_parameters"]["config"]["callbacks"][name]["every_n_validations"]
    for state in ("SampleText", "AttentionImage", "CopiedShare"):
        del ckpt["callbacks"][state]
    torch.save(ckpt, last)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=120")  # validations every 15 steps
    assert code == 0, err
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 120
    assert resumed["hyper_parameters"]["config"]["callbacks"]["sample_text"]["every_n_validations"] == 4
    assert all(resumed["callbacks"][state] == {"validations": 6} for state in ("SampleText", "AttentionImage",
                                                                               "CopiedShare"))
    val, samples = extras_steps(run_dir)
    assert val == [15, 30, 45, 60, 75, 90, 105, 120]
    assert samples == [30, 90, 120]  # the first run's last; then the 4th validation from the resume, and the last


def test_val_check_interval_counts_steps_also_when_gradients_accumulate(invoke, text_file, tmp_path):
    """Lightning's val_check_interval counts batches: train.py gives it steps x accumulate_grad_batches, so that
    validations come every N optimizer steps, at step boundaries, as the docs say."""
    from frosty_lm.report import read_logs

    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", "model=tiny", "data.batch_size=8", "dataset=text", f"data.path={text_file}",
                          "trainer.max_steps=10", "trainer.val_check_interval=5", "+trainer.accumulate_grad_batches=2",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    assert [step for step, _ in read_logs(run_dir)[0]["val/loss"]] == [5, 10]
    code, _, err = invoke("train.py", "model=tiny", "data.batch_size=8", "dataset=text", f"data.path={text_file}",
                          "trainer.max_steps=4", "trainer.val_check_interval=2",
                          "+trainer.accumulate_grad_batches=null",  # null: Lightning's default, one batch a step
                          f"hydra.run.dir={tmp_path / 'null'}")
    assert code == 0, err
    assert [step for step, _ in read_logs(tmp_path / "null")[0]["val/loss"]] == [2, 4]


def test_with_gradients_accumulating_train_loss_is_the_steps_mean(invoke, text_file, tmp_path):
    """train/loss at a step is the mean loss of the step's batches, as the progress lines print it: not the last
    batch's, and over the batches a step has (Lightning ends an epoch's last step early)."""
    import re

    from frosty_lm.report import read_logs

    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=10", "dataset=text", f"data.path={text_file}",
                          "+trainer.accumulate_grad_batches=2", "trainer.log_every_n_steps=1",
                          "callbacks.progress_lines.every_n_steps=1", f"hydra.run.dir={run_dir}")
    assert code == 0, err
    printed = {int(step): float(loss) for step, loss in
               re.findall(r"step (\d+)/10 \(\d+%\)  train loss (\d+\.\d+)", (run_dir / "train.log").read_text())}
    logged = dict(read_logs(run_dir)[0]["train/loss"])
    assert sorted(printed) == list(range(1, 11))
    off = {step: (logged[step], printed[step]) for step in printed if abs(logged[step] - printed[step]) > 1e-4}
    assert not off  # (this corpus's epoch ends inside a step: that step has one batch)
