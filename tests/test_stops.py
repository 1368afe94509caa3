"""Every way a run ends leaves checkpoints/last.ckpt at its last step, whatever the val loss did, and best.ckpt
at its best val loss: a finished run, Ctrl-C (exit status 130) and SIGTERM (`kill`, a scheduler before
preemption: exit status 143), and a stopped run resumes from where it stopped."""
import json
import re
import signal
import sys
import weakref
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import TINY, poem, run, start, wait_for_checkpoint
from frosty_lm.callbacks import StopOnInterrupt
from frosty_lm.report import read_curves

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
    return [value for _, value in read_curves(run_dir)["val/loss"]]


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
def test_a_second_ctrl_c_whose_interrupt_python_drops_still_aborts_the_run(invoke, text_file, tmp_path, monkeypatch):
    """The second Ctrl-C's KeyboardInterrupt can be raised inside a weakref's callback, where Python prints
    "Exception ignored in" and drops it (as in a sweep): the run then goes on stopping, and must still end as aborted
    by the second, not as stopped by the first."""
    on_batch_end = StopOnInterrupt.on_train_batch_end

    def two_presses_the_second_dropped(self, trainer, *args):
        if trainer.global_step == 3:
            self._request_stop(signal.SIGINT, sys._getframe())  # the first: stop after this step

            class Thing:
                pass

            thing = Thing()
            ref = weakref.ref(thing, lambda _: self._request_stop(signal.SIGINT, sys._getframe()))
            del thing  # the callback runs now, and Python drops the KeyboardInterrupt it raises: this line runs
            assert ref() is None and self.aborted_by == signal.SIGINT
        on_batch_end(self, trainer, *args)

    monkeypatch.setattr(StopOnInterrupt, "on_train_batch_end", two_presses_the_second_dropped)
    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}")
    assert code == 1 and "Traceback" not in err, err  # an abort's exit status, as when the interrupt propagates
    assert err.rstrip().splitlines()[-1] == ("error: aborted by a second SIGINT at step 3; last.ckpt holds the state "
                                            f"at the stop: continue with python train.py resume={run_dir}")
    record = json.loads((run_dir / "status.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "aborted by a second SIGINT at step 3")


def test_sigterm_stops_like_ctrl_c_with_our_handler_in_effect_during_training(invoke, text_file, tmp_path,
                                                                              monkeypatch):
    """In this process: SIGTERM arrives between two steps (signal.raise_signal, as `kill` would send it);
    Frosty's handler is the one in effect while training, not Lightning's (which would end the run without
    saving), and the handlers from before the run are back after it. Under SLURM, Lightning's requeue
    handler (SIGUSR1) stays in place."""
    monkeypatch.setenv("SLURM_NTASKS", "1")  # as under `srun`: Lightning's SLURM environment, auto-requeue on
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    for name in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID"):
        monkeypatch.setenv(name, "0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    handlers = []
    on_batch_end = StopOnInterrupt.on_train_batch_end

    def kill_at_step_3(self, trainer, *args):
        handlers.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
                         signal.getsignal(signal.SIGUSR1)))
        if trainer.global_step == 3:
            signal.raise_signal(signal.SIGTERM)
        on_batch_end(self, trainer, *args)

    monkeypatch.setattr(StopOnInterrupt, "on_train_batch_end", kill_at_step_3)
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)]
    run_dir = tmp_path / "run"
    code, out, err = invoke("train.py", "model=tiny", "data.batch_size=8", "trainer.max_steps=30",
                            "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                            f"hydra.run.dir={run_dir}")
    assert code == 143, err
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)] == before
    assert len(handlers) == 3
    for sigint, sigterm, sigusr1 in handlers:
        for handler in (sigint, sigterm):
            assert getattr(handler, "__func__", None) is StopOnInterrupt._request_stop
        requeue = getattr(sigusr1, "signal_handlers", [])  # Lightning's, composed
        assert [h.__name__ for h in requeue] == ["_slurm_sigusr_handler_fn"]
    output = out + err
    assert "SIGTERM received: stopping after this step" in output
    assert f"interrupted by SIGTERM at step 3; continue with: python train.py resume={run_dir}" in output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    assert torch.load(run_dir / "checkpoints/best.ckpt", weights_only=True)["global_step"] == 3  # its only validation


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
    found = re.search(r"interrupted(?: by SIGTERM)? at step (\d+); continue with: python train.py resume=(\S+)",
                      output)
    assert found and found.group(2) == str(run_dir), output
    step = int(found.group(1))
    assert step >= sent_at
    return proc.returncode, output, step


def assert_stopped_at(run_dir: Path, step: int) -> None:
    losses = val_losses(run_dir)
    assert len(losses) == -(-step // INTERVAL)  # every INTERVAL steps, and once more at the stop if between two
    # the stop's validation was not the best (Lightning's ModelCheckpoint alone would write no last.ckpt at the stop)
    assert losses[-1] > min(losses), losses
    assert_last_and_best(run_dir, step, losses)
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "interrupted" and record["steps"] == step


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "SIGTERM received")])
def test_a_signal_mid_run_leaves_last_ckpt_at_the_stop_and_the_run_resumes(rising_corpus, tmp_path, signum, code,
                                                                            said):
    run_dir = tmp_path / "run"
    returncode, output, step = stop_mid_run(run_dir, rising_corpus, signum)
    assert returncode == code, output
    assert f"{said}: stopping after this step" in output
    assert_stopped_at(run_dir, step)
    result = run("train.py", f"resume={run_dir}", f"trainer.max_steps={step + 3}", cwd=tmp_path)
    assert f"resuming {run_dir} from step {step}" in result.stdout + result.stderr
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step + 3
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_training_starts_is_one_line_and_its_exit_status(tmp_path, signum, code):
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
    assert output.rstrip().endswith(f"interrupted by {signum.name} before training started: nothing was saved")
    assert "Traceback" not in output and not (run_dir / "checkpoints").exists()


@pytest.fixture
def entry_point(monkeypatch):
    """An entry point's handlers, as in its main(), with this file taken for Frosty's code (interrupts.in_own_code);
    the handlers it found are put back after the test."""
    from frosty_lm import interrupts

    monkeypatch.setattr(interrupts, "_OWN_DIRS", (*interrupts._OWN_DIRS, str(Path(__file__).parent) + "/"))
    monkeypatch.setattr(interrupts._EntryPoint, "running", True)
    monkeypatch.setattr(interrupts._EntryPoint, "when", interrupts._EntryPoint.when)
    monkeypatch.setattr(interrupts._EntryPoint, "library_patience_s", interrupts._EntryPoint.library_patience_s)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    interrupts.interrupt_on_signals("before training started", interrupts.LIBRARY_PATIENCE_S)  # as train.py
    yield interrupts
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def library(tmp_path: Path, monkeypatch, name: str, source: str):
    """Import `source` (indented as it is in a test) as module `name` from tmp_path: a library's code, not Frosty's."""
    import importlib
    import sys
    import textwrap

    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def test_a_signal_in_a_librarys_code_is_acted_on_back_in_frostys(tmp_path, monkeypatch, entry_point):
    """Raised in a library's code, the interrupt can be lost: a bare `except:` or a `__del__` swallows it (a run would
    then train to its end, exit status 0), or a `finally:` masks it (Hydra's config reader: UnboundLocalError)."""
    import time

    swallowing = library(tmp_path, monkeypatch, "swallowing", """
        import signal, time
        swallowed = 0
        def work():  # a bare except in a loop; the signal comes again meanwhile: still here
            global swallowed
            deadline, signals = time.monotonic() + 0.5, [signal.SIGINT]
            while time.monotonic() < deadline:
                try:
                    if signals:
                        signal.raise_signal(signals.pop())
                    time.sleep(0.01)
                except BaseException:
                    swallowed += 1
        """)
    started = time.monotonic()
    with pytest.raises(entry_point.Interrupted) as raised:
        swallowing.work()
        time.sleep(5)  # Frosty's code: the signal comes again within 50 ms, and is acted on here
    assert swallowing.swallowed == 0 and raised.value.signum == signal.SIGINT
    assert time.monotonic() - started < 2


def test_a_signal_in_a_long_library_call_is_acted_on_after_a_patience(tmp_path, monkeypatch, entry_point):
    """A download, or any library call that takes long: the signal does not wait for it to end."""
    import time

    monkeypatch.setattr(entry_point._EntryPoint, "library_patience_s", 0.5)
    slow = library(tmp_path, monkeypatch, "slow", """
        import signal, time
        finished = False
        def work():
            global finished
            signal.raise_signal(signal.SIGTERM)
            time.sleep(10)
            finished = True
        """)
    started = time.monotonic()
    with pytest.raises(entry_point.Interrupted) as raised:
        slow.work()
    assert not slow.finished and raised.value.signum == signal.SIGTERM
    assert 0.5 <= time.monotonic() - started < 3


def test_a_signal_still_put_off_when_training_starts_is_taken_there_as_before_training(entry_point):
    """StopOnInterrupt's handlers would otherwise get it, and train a step and save checkpoints for it."""
    import time

    stop = StopOnInterrupt()
    entry_point._put_off(signal.SIGINT, signal.getsignal(signal.SIGINT))  # as the entry point's handler does while
    # Lightning's code sets up
    with pytest.raises(entry_point.Interrupted) as raised:
        stop.on_train_start(None, None)
    assert raised.value.signum == signal.SIGINT and not stop._started
    try:
        time.sleep(0.2)  # it does not come again: here it would raise Interrupted (this file is Frosty's code)
    except entry_point.Interrupted:
        pytest.fail("the signal taken when training started came again")


def test_a_put_off_signal_waits_while_another_handler_is_installed_for_it_to_take(entry_point):
    """Lightning's SIGTERM handler, installed when fit starts, calls the one it replaced (the entry point's): sent
    again, the signal would go through Lightning's notifier each time (a broadcast in a multi-process run)."""
    import time

    calls = []
    entry_handler = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    entry_point._put_off(signal.SIGTERM, entry_handler)
    time.sleep(0.3)
    assert calls == [] and entry_point.take_put_off() == signal.SIGTERM and entry_point.take_put_off() is None


def test_a_signal_still_put_off_when_the_work_ends_is_acted_on_then(entry_point, capsys):
    """The report, interrupted while it imports, must not run to its end and exit 0 with the signal still put off."""
    import logging

    def work() -> None:  # it ends before the signal it put off comes again
        entry_point._put_off(signal.SIGINT, signal.getsignal(signal.SIGINT))

    try:
        with pytest.raises(SystemExit) as done:
            entry_point.exit_when_interrupted(work)
    finally:
        logging.disable(logging.NOTSET)  # (exit_interrupted silences logging for the rest of the process)
    assert done.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted by SIGINT before training started"


def test_a_signal_after_the_work_has_ended_is_its_one_line(entry_point, capsys):
    """Not Interrupted raised on the entry point's last line, outside everything that catches it (a traceback)."""
    import logging

    entry_point.exit_when_interrupted(lambda: None)
    try:
        with pytest.raises((SystemExit, KeyboardInterrupt)) as done:
            signal.raise_signal(signal.SIGTERM)
    finally:
        logging.disable(logging.NOTSET)
    assert isinstance(done.value, SystemExit) and done.value.code == 143
    assert capsys.readouterr().err.strip() == "interrupted by SIGTERM before training started"


def test_frozen_modules_and_generated_code_are_not_frostys_own(monkeypatch):
    """Relative to the project's root (the directory users run train.py from), "<frozen posixpath>" or "<string>"
    (a dataclass's __init__) would look like a file of the root's, as train.py is: they are not Frosty's."""
    from conftest import ROOT
    from frosty_lm.interrupts import in_own_code

    def frame_of(filename: str):  # a frame of code compiled as if from filename
        frames = []
        exec(compile("import sys\nframes.append(sys._getframe())", filename, "exec"), {"frames": frames})
        return frames[0]

    monkeypatch.chdir(ROOT)
    assert not any(in_own_code(frame_of(name)) for name in ("<frozen posixpath>", "<string>", "train.py"))
    assert in_own_code(frame_of(str(ROOT / "train.py"))) and in_own_code(frame_of(str(ROOT / "frosty_lm" / "x.py")))
    assert not in_own_code(frame_of(str(ROOT / ".venv" / "lib" / "site-packages" / "hydra" / "x.py")))


def test_a_signal_during_an_import_is_acted_on_once_the_import_is_done(tmp_path, monkeypatch, entry_point):
    """An exception raised inside an import can be swallowed by a C extension's initialisation: torch, given
    SIGTERM while it imports numpy, goes on without numpy, and the run trains to its end (exit status 0). The
    entry point's handler lets the import finish, then interrupts."""
    import pickle
    import sys
    import time

    swallows = (  # as a C extension that swallows what its own imports raise
        "import signal, time\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "    time.sleep(0.5)  # the signal comes again meanwhile: still importing\n"
        "    finished = True\n"
        "except BaseException:\n"
        "    finished = False\n")
    with pytest.raises(entry_point.Interrupted) as raised:
        library(tmp_path, monkeypatch, "swallows_interrupts", swallows)
        time.sleep(5)  # the signal comes again 50 ms after the import: Interrupted here
    assert sys.modules["swallows_interrupts"].finished and raised.value.signum == signal.SIGTERM
    assert pickle.loads(pickle.dumps(raised.value)).signum == signal.SIGTERM  # (a sweep's worker passes it on)


class SignalAtSetup(L.Callback):
    """Test-only: sends this process `signum` from Lightning's setup, before training (and our handlers) start."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def setup(self, trainer, pl_module, stage) -> None:
        signal.raise_signal(self.signum)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_lightnings_setup_is_an_interruption_not_a_failure(tmp_path, signum, code):
    (tmp_path / "corpus.txt").write_text(poem())
    run_dir = tmp_path / "r"
    result = run("train.py", "model=tiny", "dataset=text", f"data.path={tmp_path / 'corpus.txt'}",
                 f"hydra.run.dir={run_dir}", "+callbacks.signal._target_=test_stops.SignalAtSetup",
                 f"+callbacks.signal.signum={int(signum)}", cwd=tmp_path,
                 env={"PYTHONPATH": str(Path(__file__).parent)}, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == code, output  # Lightning itself exits 1 on a KeyboardInterrupt in its setup
    assert output.rstrip().endswith(f"interrupted by {signum.name} before training started: nothing was saved")
    assert "Traceback" not in output and "Detected KeyboardInterrupt" not in output
    record = json.loads((run_dir / "status.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "stopped before training started")
    assert not (run_dir / "checkpoints").exists()


class SignalTwiceAt(L.Callback):
    """Test-only: sends this process `signum` twice in a row after training step `step`: a stop, then an abort."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            signal.raise_signal(self.signum)
            signal.raise_signal(self.signum)


@pytest.mark.slow
def test_a_second_signal_aborts_with_one_line_and_the_run_recorded_as_interrupted(tmp_path):
    """Not exit status 1 without a word and status.json failed with error "1": one line, recorded as interrupted."""
    (tmp_path / "corpus.txt").write_text(poem())
    run_dir = tmp_path / "r"
    step = 2 * INTERVAL + 2
    result = run("train.py", *RISING, f"data.path={tmp_path / 'corpus.txt'}", f"hydra.run.dir={run_dir}",
                 "+callbacks.signal._target_=test_stops.SignalTwiceAt",
                 f"+callbacks.signal.signum={int(signal.SIGINT)}", f"+callbacks.signal.step={step}", cwd=tmp_path,
                 env={"PYTHONPATH": str(Path(__file__).parent)}, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == (
        f"error: aborted by a second SIGINT at step {step}; last.ckpt holds the last validation's state: "
        f"continue with python train.py resume={run_dir}")
    record = json.loads((run_dir / "status.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", f"aborted by a second SIGINT at step {step}")
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] in (INTERVAL, 2 * INTERVAL)


@pytest.mark.slow
def test_ctrl_c_at_any_moment_while_train_py_loads_is_one_line_and_exit_130(tmp_path):
    import time

    (tmp_path / "corpus.txt").write_text(poem())
    for delay in (0.2, 0.5, 1.0):  # importing Hydra, composing the config, importing torch and Lightning
        proc = start("train.py", "model=tiny", "dataset=text", f"data.path={tmp_path / 'corpus.txt'}",
                     f"hydra.run.dir={tmp_path / str(delay)}", cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 130, (delay, output)
        assert output.rstrip().endswith("interrupted by SIGINT before training started: nothing was saved"), output
        assert "Traceback" not in output, output


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


def test_early_stopping_is_off_by_default_and_its_patience_is_checked(invoke, text_file, tmp_path):
    from test_reliability import assert_one_line_error

    code, _, err = invoke("train.py", *RISING, "callbacks.early_stopping.patience=0", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "callbacks.early_stopping.patience=0 must be a positive integer")


@pytest.mark.slow
def test_ctrl_c_or_sigterm_to_the_report_is_one_line(trained_run, tmp_path):
    """Not Python's KeyboardInterrupt traceback (Ctrl-C), nor an end without a word (SIGTERM)."""
    import subprocess
    import sys
    import time

    from conftest import ROOT

    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "frosty_lm.report", str(trained_run), "--out", str(tmp_path)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.3)  # loading (matplotlib, TensorBoard's reader: longer than this)
        proc.send_signal(signum)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 128 + signum and output.strip() == f"interrupted by {signum.name}", output
