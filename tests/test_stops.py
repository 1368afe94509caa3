"""Every way a run ends leaves checkpoints/last.ckpt at its last step, whatever the val loss did, and best.ckpt
at its best val loss: a finished run, Ctrl-C (exit status 130) and SIGTERM (`kill`, a scheduler before
preemption: exit status 143), and a stopped run resumes from where it stopped."""
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import poem, run, start, wait_for_checkpoint
from frosty_lm.report import read_logs

INTERVAL = 5  # validate every 5 steps
RISING = ["model=tiny", "data.batch_size=8", "optim.lr=0.01", "scheduler=constant",
          f"trainer.val_check_interval={INTERVAL}", "dataset=text"]


@pytest.fixture
def rising_corpus(tmp_path: Path) -> Path:
    """A corpus whose val split (its last 10%) is the training text backwards: the same characters in other
    orders. A model learns the characters' frequencies first (val loss falls for 10 steps), then the training
    text's order, which the val text does not follow (val loss rises, by more than 2 nats within 50 steps)."""
    text = poem()
    train = text[: int(len(text) * 0.9)]
    path = tmp_path / "rising.txt"
    path.write_text(train + text[::-1][: len(text) - len(train)], encoding="utf-8")
    return path


def val_losses(run_dir: Path) -> list[float]:
    """The run's val losses, in step order (from its TensorBoard events)."""
    return [value for _, value in read_logs(run_dir)[0]["val/loss"]]


def assert_last_and_best(run_dir: Path, last_step: int, losses: list[float]) -> None:
    """last.ckpt holds the run's last step; best.ckpt the lowest val loss, from the validation that measured it
    (at steps INTERVAL, 2 x INTERVAL, ...)."""
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    best = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)
    assert last["global_step"] == last_step
    lowest = min(losses)
    assert best["global_step"] == INTERVAL * (losses.index(lowest) + 1)
    (state,) = [v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert float(state["best_model_score"]) == pytest.approx(lowest, rel=1e-6)
    for ckpt in (best, last):  # the best val loss so far, which resume carries on from
        assert float(ckpt["state_dict"]["best_val_loss"]) == pytest.approx(lowest, rel=1e-6)


@pytest.mark.slow
def test_a_run_whose_val_loss_gets_worse_ends_with_last_ckpt_at_its_last_step(invoke, rising_corpus, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", *RISING, "trainer.max_steps=30", f"data.path={rising_corpus}",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    losses = val_losses(run_dir)
    assert len(losses) == 30 // INTERVAL
    turn = losses.index(min(losses))
    # the curve really turns up: every validation after the best was worse than the one before it, so none of
    # them saved a best checkpoint (Lightning's ModelCheckpoint alone would leave last.ckpt at the best's step)
    assert turn <= 2 and all(later > earlier for earlier, later in zip(losses[turn:], losses[turn + 1:]))
    assert losses[-1] > losses[turn] + 0.5, losses
    assert_last_and_best(run_dir, 30, losses)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped interrupt
class SignalAt(L.Callback):
    """Test-only: sends this process `signum` (`times` times in a row) after training step `step`, as Ctrl-C or
    `kill` would."""

    def __init__(self, signum: int, step: int, times: int = 1) -> None:
        self.signum, self.step, self.times = signum, step, times

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):
                signal.raise_signal(self.signum)


@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted at step 3"),
                                                (signal.SIGTERM, 143, "interrupted by SIGTERM at step 3")])
def test_a_signal_in_training_stops_at_the_step_saves_last_ckpt_and_says_how_to_resume(
        invoke, text_file, tmp_path, monkeypatch, signum, code, said):
    """In this process: the signal arrives after step 3 (signal.raise_signal, as Ctrl-C or `kill` would send it).
    Ctrl-C through StopOnInterrupt, SIGTERM through Lightning's own handler: both stop after that step, save
    last.ckpt there, record the run as interrupted and exit 130 / 143; the handlers from before the run are back
    after it."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    run_dir = tmp_path / "run"
    code_, out, err = invoke("train.py", "model=tiny", "data.batch_size=8", "trainer.max_steps=30",
                             "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                             f"hydra.run.dir={run_dir}", "+callbacks.signal._target_=test_stops.SignalAt",
                             f"+callbacks.signal.signum={int(signum)}", "+callbacks.signal.step=3")
    assert code_ == code and "Traceback" not in err, err
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before
    assert f"{said}; last.ckpt saved; continue with: python train.py resume={run_dir}" in out + err
    record = json.loads((run_dir / "status.json").read_text())
    assert (record["status"], record["steps"], record["training_started"]) == ("interrupted", 3, True)
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    assert not (run_dir / "checkpoints/best.ckpt").exists()  # no validation before the stop


def test_sigterm_in_the_final_validation_leaves_a_trained_run_finished(invoke, text_file, tmp_path, monkeypatch):
    """SIGTERM with the last step stops within the final validation: every step is trained and in last.ckpt, so the
    run is finished (a resume would have nothing to train), and the line says so rather than how to resume."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    run_dir = tmp_path / "run"
    code, out, err = invoke("train.py", "model=tiny", "data.batch_size=8", "trainer.max_steps=30",
                            "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                            f"hydra.run.dir={run_dir}", "+callbacks.signal._target_=test_stops.SignalAt",
                            f"+callbacks.signal.signum={int(signal.SIGTERM)}", "+callbacks.signal.step=30")
    assert code == 143 and "Traceback" not in err, err
    assert ("stopped by SIGTERM in the final validation at step 30: the run is trained; last.ckpt saved" in out + err
            and "continue with" not in out + err), out + err
    record = json.loads((run_dir / "status.json").read_text())
    assert (record["status"], record["steps"], record.get("error")) == ("finished", 30, None), record
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 30


def test_a_stop_without_last_ckpt_says_there_is_nothing_to_continue_from(invoke, text_file, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    code, out, err = invoke("train.py", "model=tiny", "data.batch_size=8", "trainer.max_steps=30",
                            "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                            f"hydra.run.dir={tmp_path / 'run'}", "callbacks.model_checkpoint.save_last=false",
                            "+callbacks.signal._target_=test_stops.SignalAt",
                            f"+callbacks.signal.signum={int(signal.SIGTERM)}", "+callbacks.signal.step=3")
    assert code == 143 and "interrupted by SIGTERM at step 3; no checkpoints/last.ckpt to continue from" in out + err
    assert "continue with" not in out + err and not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("step", [10, 13])
def test_a_ctrl_c_at_a_validations_step_stops_after_that_validation(invoke, text_file, tmp_path, monkeypatch, step):
    """The signal comes with step 10, where a validation is due: the run validates and checkpoints step 10, then
    stops; a resumed run's curve has every validation of an uninterrupted one, at the same steps (also after a stop
    between validations, at step 13)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    run_dir = tmp_path / "run"
    common = ["model=tiny", "data.batch_size=8", "trainer.val_check_interval=10", "dataset=text",
              f"data.path={text_file}", f"hydra.run.dir={run_dir}"]
    code, out, err = invoke("train.py", *common, "trainer.max_steps=30",
                            "+callbacks.signal._target_=test_stops.SignalAt",
                            f"+callbacks.signal.signum={int(signal.SIGINT)}", f"+callbacks.signal.step={step}")
    assert code == 130 and f"interrupted at step {step}; last.ckpt saved" in out + err, err
    assert [step for step, _ in read_logs(run_dir)[0]["val/loss"]] == [10]
    assert torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)["global_step"] == 10
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step
    last = run_dir / "checkpoints/last.ckpt"  # the test's callback goes: a resume refuses a recorded _target_
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyper_parameters"]["overrides"] = [o for o in ckpt["hyper_parameters"]["overrides"] if "signal" not in o]
    torch.save(ckpt, last)
    code, out, err = invoke("train.py", f"resume={run_dir}")
    assert code == 0, err
    assert [step for step, _ in read_logs(run_dir)[0]["val/loss"]] == [10, 20, 30]


def stop_mid_run(run_dir: Path, corpus: Path, signum: signal.Signals) -> tuple[int, str, int]:
    """Start a long run on the rising corpus, send it signum once its val loss has turned up (a checkpoint at
    step 20 or later: the best is at step 10) and wait for it to end. Returns its exit status, its output and
    the step it says it stopped at."""
    proc = start("train.py", *RISING, "trainer.max_steps=100000", f"data.path={corpus}", f"hydra.run.dir={run_dir}",
                 cwd=run_dir.parent)
    try:
        sent_at = wait_for_checkpoint(run_dir / "checkpoints/last.ckpt", proc, 4 * INTERVAL)
        proc.send_signal(signum)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in output, output
    found = re.search(r"interrupted(?: by SIGTERM)? at step (\d+); last.ckpt saved; continue with: python train.py "
                      r"resume=(\S+)",
                      output)
    assert found and found.group(2) == str(run_dir), output
    step = int(found.group(1))
    assert step >= sent_at
    return proc.returncode, output, step


def assert_stopped_at(run_dir: Path, step: int) -> None:
    losses = val_losses(run_dir)
    # every INTERVAL steps, and the stop saves without validating: a signal that came during (or just before) the
    # validation of a step that is a multiple of INTERVAL stops the run without that validation's val loss
    assert len(losses) in {step // INTERVAL, (step - 1) // INTERVAL}, (step, losses)
    assert losses[-1] > min(losses), losses  # best.ckpt stays at the best, last.ckpt is the state at the stop
    assert_last_and_best(run_dir, step, losses)
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "interrupted" and record["steps"] == step


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted: stopping after this step"),
                                                (signal.SIGTERM, 143, "Received SIGTERM")])
def test_a_signal_mid_run_leaves_last_ckpt_at_the_stop_and_the_run_resumes(rising_corpus, tmp_path, signum, code,
                                                                            said):
    run_dir = tmp_path / "run"
    returncode, output, step = stop_mid_run(run_dir, rising_corpus, signum)
    assert returncode == code, output
    assert said in output
    assert_stopped_at(run_dir, step)
    result = run("train.py", f"resume={run_dir}", f"trainer.max_steps={step + 3}", cwd=tmp_path)
    assert f"resuming {run_dir} from step {step}" in result.stdout + result.stderr
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step + 3
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_a_signal_before_training_starts_saves_nothing(tmp_path, signum, code):
    """Ctrl-C once Hydra has composed the run, while train.py loads: one line and exit status 130. SIGTERM there:
    Python's default, the process ends at once; nothing was saved either way."""
    import time

    run_dir = tmp_path / "r"
    proc = start("train.py", "model=tiny", "dataset=text", f"data.path={tmp_path / 'corpus.txt'}",
                 f"hydra.run.dir={run_dir}", cwd=tmp_path)
    (tmp_path / "corpus.txt").write_text(poem())
    deadline = time.time() + 60
    while not (run_dir / ".hydra" / "config.yaml").is_file():  # Hydra has composed the run: train.py is loading
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signum)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == code, output
    if signum == signal.SIGINT:
        assert output.rstrip().endswith("interrupted: nothing more was saved") and "Traceback" not in output, output
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_and_keeps_the_last_checkpoint_written(tmp_path):
    (tmp_path / "corpus.txt").write_text(poem())
    run_dir = tmp_path / "r"
    step = 2 * INTERVAL + 2
    result = run("train.py", *RISING, f"data.path={tmp_path / 'corpus.txt'}", f"hydra.run.dir={run_dir}",
                 "+callbacks.signal._target_=test_stops.SignalAt", f"+callbacks.signal.signum={int(signal.SIGINT)}",
                 f"+callbacks.signal.step={step}", "+callbacks.signal.times=2", cwd=tmp_path,
                 env={"PYTHONPATH": str(Path(__file__).parent)}, check=False)
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.rstrip().splitlines()[-1]
    assert last_line == "interrupted again: exiting now; last.ckpt is the last one written"
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2 * INTERVAL


class SecondSignalWhileSaving(SignalAt):
    """Test-only: Ctrl-C after training step `step`, and again while the stop saves last.ckpt."""

    def on_save_checkpoint(self, trainer, *args) -> None:
        if trainer.interrupted:
            signal.raise_signal(self.signum)


def interrupted_twice(tmp_path: Path, callback: str) -> tuple[subprocess.CompletedProcess, Path]:
    """train.py with a test callback that sends Ctrl-C after step INTERVAL + 2 and again: it exits at once, 130, with
    its line and no traceback."""
    (tmp_path / "corpus.txt").write_text(poem())
    run_dir = tmp_path / "r"
    result = run("train.py", *RISING, f"data.path={tmp_path / 'corpus.txt'}", f"hydra.run.dir={run_dir}",
                 f"+callbacks.signal._target_=test_stops.{callback}", f"+callbacks.signal.signum={int(signal.SIGINT)}",
                 f"+callbacks.signal.step={INTERVAL + 2}", cwd=tmp_path,
                 env={"PYTHONPATH": str(Path(__file__).parent)}, check=False)
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    last_line = result.stderr.rstrip().splitlines()[-1]
    assert last_line == "interrupted again: exiting now; last.ckpt is the last one written", result.stderr
    return result, run_dir


@pytest.mark.slow
def test_a_second_ctrl_c_while_the_stop_saves_exits_at_once(tmp_path):
    _, run_dir = interrupted_twice(tmp_path, "SecondSignalWhileSaving")
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == INTERVAL


class SecondSignalAsItExits(SignalAt):
    """Test-only: Ctrl-C after training step `step`, and again as the stopped process exits (in an atexit hook, where
    Python's own handler would print an ignored KeyboardInterrupt's traceback)."""

    def on_exception(self, trainer, pl_module, exception) -> None:
        import atexit

        atexit.register(signal.raise_signal, self.signum)


@pytest.mark.slow
def test_a_second_ctrl_c_as_the_stopped_run_exits_ends_it_at_once(tmp_path):
    result, run_dir = interrupted_twice(tmp_path, "SecondSignalAsItExits")
    assert f"interrupted at step {INTERVAL + 2}; last.ckpt saved" in result.stdout + result.stderr
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == INTERVAL + 2


class DieAfterValidation(L.Callback):
    """Test-only: the process ends at once (as kill -9 would) at the end of the validation at step `step`, after
    the other callbacks' work there and before the checkpoints' (Lightning runs checkpoint callbacks last)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step and not trainer.sanity_checking:
            os._exit(9)


@pytest.mark.slow
def test_status_json_is_never_ahead_of_the_checkpoints_after_a_hard_kill(tmp_path):
    (tmp_path / "corpus.txt").write_text(poem())
    run_dir = tmp_path / "r"
    result = run("train.py", *RISING, f"data.path={tmp_path / 'corpus.txt'}", f"hydra.run.dir={run_dir}",
                 "+callbacks.die._target_=test_stops.DieAfterValidation", f"+callbacks.die.step={2 * INTERVAL}",
                 cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).parent)}, check=False)
    assert result.returncode == 9, result.stderr
    record = json.loads((run_dir / "status.json").read_text())
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert record["status"] == "running" and record["steps"] == last["global_step"] == INTERVAL
    assert record["best_val_loss"] == pytest.approx(float(last["state_dict"]["best_val_loss"]), rel=1e-6)


@pytest.mark.slow
def test_early_stopping_stops_after_patience_validations_and_keeps_the_best(invoke, rising_corpus, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = invoke("train.py", *RISING, "trainer.max_steps=100", "callbacks.early_stopping.patience=2",
                            f"data.path={rising_corpus}", f"hydra.run.dir={run_dir}")
    assert code == 0, err
    losses = val_losses(run_dir)
    best = losses.index(min(losses))
    assert len(losses) == best + 1 + 2  # two validations without a new best after the best one, then the stop
    stop = INTERVAL * len(losses)
    assert f"early stop at step {stop}: val loss has not improved for 2 validations (best {min(losses):.4f})" in out
    assert_last_and_best(run_dir, stop, losses)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_early_stopping_can_be_set_or_turned_off_when_a_run_is_resumed(invoke, rising_corpus, tmp_path):
    """A resume that sets patience counts it from the resume; a resume that sets it to null trains on."""
    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", *RISING, f"trainer.max_steps={3 * INTERVAL}", f"data.path={rising_corpus}",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    code, out, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=100",
                            "callbacks.early_stopping.patience=2")
    assert code == 0, err
    stop = 6 * INTERVAL  # the first validation after the resume is its best; the val loss rises from there on
    assert f"early stop at step {stop}: val loss has not improved for 2 validations" in out
    code, out, err = invoke("train.py", f"resume={run_dir}", f"trainer.max_steps={stop + 2 * INTERVAL}",
                            "callbacks.early_stopping.patience=null")
    assert code == 0 and "early stop" not in out, err
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == stop + 2 * INTERVAL


def test_early_stopping_is_off_by_default_and_its_patience_is_checked(invoke, text_file, tmp_path):
    from test_reliability import assert_one_line_error

    code, _, err = invoke("train.py", *RISING, "callbacks.early_stopping.patience=0", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "callbacks.early_stopping.patience=0 must be a positive integer")


@pytest.mark.slow
def test_ctrl_c_to_the_report_is_one_line(trained_run, tmp_path):
    """Not Python's KeyboardInterrupt traceback."""
    import sys
    import time

    from conftest import ROOT, as_from_a_shell

    # Enough samples that the report is still sampling when the signal comes: a Ctrl-C while torch imports is
    # Python's and torch's default (CPython's -m runner may then end the process by SIGINT, pybind11 may abort)
    proc = subprocess.Popen([sys.executable, "-m", "frosty_lm.report", str(trained_run), "--out", str(tmp_path),
                             "--samples", "50000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=as_from_a_shell)
    time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and output.strip() == "interrupted: nothing more was saved", output


class InterruptAtSetup(L.Callback):
    """Test-only: Ctrl-C as Lightning sets the run up, after train.py's checks and before the first step."""

    def setup(self, trainer, pl_module, stage) -> None:
        raise KeyboardInterrupt


def test_a_ctrl_c_before_the_first_step_is_recorded_as_such(invoke, text_file, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", "model=tiny", "trainer.max_steps=30", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}", "+callbacks.interrupt._target_=test_stops.InterruptAtSetup")
    assert code == 130 and err.strip().endswith("interrupted: nothing more was saved") and "Traceback" not in err
    record = json.loads((run_dir / "status.json").read_text())
    assert (record["status"], record["error"], record["training_started"]) == (
        "interrupted", "stopped by SIGINT before the first step", True)
    assert not (run_dir / "checkpoints").exists()
