"""SIGTERM or Ctrl-C to a sweep (to its main process, or to all its processes as a terminal's Ctrl-C does): running
jobs save and stop, the others do not start, no worker is left behind, and the sweep ends with its summary and
128 + the signal's number."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_then_signal(proc: subprocess.Popen, sweep: Path, first: str, signum: int, to: str, count: int = 1) -> None:
    """Once count files are there (first, a glob pattern in sweep: a job's first checkpoint, once it trains), signal
    the sweep's main process or its group. Jobs side by side: count them all, or a job whose worker still imports
    when another has trained its first steps would find the sweep stopped before it began ("not run")."""
    deadline = time.time() + 120
    while len(list(sweep.glob(first))) < count:
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"no job trained within 120 s (exit {proc.poll()})")
        time.sleep(0.2)
    if to == "group":  # every process of the sweep at once, the main process and its workers
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)


def signalled_sweep(args: list[str], cwd: Path, send) -> tuple[subprocess.Popen, str]:
    """Run `train.py -m *args` in its own process group (as a terminal runs a job), signal it with send(proc), and
    return the ended process and its stderr. A failing test leaves no sweep behind (one that trains for 100,000
    steps)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        send(proc)
        _, err = proc.communicate(timeout=120)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc, err


@pytest.mark.slow
@pytest.mark.parametrize("launcher, signum, to", [("joblib", signal.SIGTERM, "main"), ("basic", signal.SIGTERM, "main"),
                                                  ("joblib", signal.SIGINT, "main"),  # kill -INT PID
                                                  ("joblib", signal.SIGINT, "group")])  # Ctrl-C in a terminal
def test_a_signal_to_a_sweep_stops_it_cleanly(launcher, signum, to, text_file, tmp_path):
    sweep = tmp_path / "sweep"
    extra = ["hydra/launcher=basic"] if launcher == "basic" else []  # joblib, 2 jobs at a time, is the default
    args = [*TINY, "trainer.max_steps=100000", "trainer.val_check_interval=10", "dataset=text",
            f"data.path={text_file}", "model.dropout=0.0,0.1,0.2", *extra, f"hydra.sweep.dir={sweep}"]
    running_at_once = 2 if launcher == "joblib" else 1
    proc, err = signalled_sweep(args, tmp_path, lambda proc: wait_then_signal(
        proc, sweep, "*/checkpoints/last.ckpt", signum, to, count=running_at_once))
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    states = sorted(r["status"] for r in records.values())
    assert states == ["interrupted"] * running_at_once + ["not run"] * (3 - running_at_once), records
    assert "runs finished" in err and f"{running_at_once} interrupted" in err and "resume=" in err
    assert not any(alive(r["pid"]) for r in records.values() if "pid" in r)  # no worker left training
    for name, record in records.items():
        if record["status"] == "interrupted":  # saved at its stop
            assert record["steps"] > 0 and (sweep / name / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("at_once", [2, 1])  # 1: joblib runs each job in the sweep's own process (+search=speedrun)
def test_ctrl_c_to_a_search_stops_it_with_its_summary(at_once, text_file, tmp_path):
    """A search (+search=optuna, Frosty's loop around Optuna's sweeper) stops as a grid does: the trials training
    save and stop, no more trials are asked for, and the summary comes (in Optuna's own loop the trials that could
    not finish would end it with its traceback and exit 1). A stopped trial's val loss is not taken as a result."""
    sweep = tmp_path / "search"
    args = ["+search=optuna", *TINY, "trainer.max_steps=100000", "trainer.val_check_interval=10", "dataset=text",
            f"data.path={text_file}", "hydra.sweeper.n_trials=6", f"hydra.sweeper.n_jobs={at_once}",
            f"hydra.launcher.n_jobs={at_once}", f"hydra.sweep.dir={sweep}"]
    proc, err = signalled_sweep(args, tmp_path, lambda proc: wait_then_signal(
        proc, sweep, "*/checkpoints/last.ckpt", signal.SIGINT, "group", count=at_once))
    assert proc.returncode == 130 and "Traceback" not in err, err
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    assert sorted(r["status"] for r in records.values()) == ["interrupted"] * at_once, records
    assert f"0 of 6 runs finished, {at_once} interrupted, {6 - at_once} not run" in err  # (the count of trials
    # not run survives jobs run in the sweep's process, where Hydra loads the plugin's module afresh)
    assert not (sweep / "optimization_results.yaml").exists()  # no trial finished: no best
    assert not any(alive(r["pid"]) for r in records.values() if "pid" in r)


@pytest.mark.slow
def test_a_search_goes_on_past_a_worker_killed_under_it(text_file, tmp_path):
    """kill -9 (or the kernel's out-of-memory killer) to a worker while it trains a trial: joblib's pool breaks, which
    would end the search with a traceback. Its batch's trials fail, the search goes on, and the summary names them."""
    sweep = tmp_path / "search"
    args = ["+search=optuna", *TINY, "trainer.max_steps=300", "trainer.val_check_interval=100", "dataset=text",
            f"data.path={text_file}", "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}"]

    def kill_a_worker(proc: subprocess.Popen) -> None:
        deadline = time.time() + 120
        while len(list(sweep.glob("*/status.json"))) < 2:  # both trials of the first batch have begun
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        worker = json.loads(next(sweep.glob("*/status.json")).read_text())["pid"]
        os.kill(worker, signal.SIGKILL)

    proc, err = signalled_sweep(args, tmp_path, kill_a_worker)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "error: a worker process ended" in err and "its batch of 2 job(s)" in err and "killed: " in err
    records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    assert len(records) == 4 and sum(r["status"] == "finished" for r in records) >= 2, records  # the next batch ran


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grid", "search"])
def test_a_second_ctrl_c_aborts_a_sweep_whose_jobs_run_in_its_own_process(kind, text_file, tmp_path):
    """hydra/launcher=basic, or a search one trial at a time (+search=speedrun): the second Ctrl-C, while the first
    job saves and stops, aborts the sweep, not only that job: no other job trains, and the exit status is 130."""
    sweep = tmp_path / "sweep"
    varied = (["+search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.launcher.n_jobs=1"]
              if kind == "search" else ["model.dropout=0.0,0.1,0.2", "hydra/launcher=basic"])
    # a validation long enough (5,000 sampled characters for sample/copied) that the stop, which validates, is still
    # going when the second Ctrl-C comes: with the tiny model's 100 it could be over within the 0.3 s
    args = [*TINY, "trainer.max_steps=100000", "trainer.val_check_interval=10", "dataset=text",
            f"data.path={text_file}", *varied, f"hydra.sweep.dir={sweep}", "callbacks.copied.chars=5000"]

    def twice(proc: subprocess.Popen) -> None:
        wait_then_signal(proc, sweep, "*/checkpoints/last.ckpt", signal.SIGINT, "group")
        time.sleep(0.3)  # the job is still stopping
        os.killpg(proc.pid, signal.SIGINT)

    proc, err = signalled_sweep(args, tmp_path, twice)
    assert proc.returncode == 130 and "the sweep aborted, without its summary" in err, err
    assert "error: aborted by a second SIGINT at step" in err  # the job's own abort, as it stopped
    records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    assert [r["status"] for r in records] == ["interrupted"], records  # no other job started


@pytest.mark.slow
def test_a_stop_while_a_job_in_the_sweeps_process_sets_up_stops_it_after_one_step(text_file, tmp_path):
    """hydra/launcher=basic: a SIGTERM once the job has begun (status.json) and before it trains reaches the sweep's
    handler, and the job, when it starts training, stops after one step; nothing more trains."""
    sweep = tmp_path / "sweep"
    args = [*TINY, "trainer.max_steps=100000", "dataset=text", f"data.path={text_file}", "model.dropout=0.0,0.1",
            "hydra/launcher=basic", f"hydra.sweep.dir={sweep}"]
    proc, err = signalled_sweep(args, tmp_path, lambda proc: wait_then_signal(
        proc, sweep, "dropout=0.0/status.json", signal.SIGTERM, "main"))
    assert proc.returncode == 143 and "Traceback" not in err, err
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    assert records["dropout=0.0"]["status"] in ("interrupted", "not run"), records
    assert records["dropout=0.1"]["status"] == "not run", records
    assert records["dropout=0.0"].get("steps", 0) < 1000, records  # stopped soon (one step after it began to train,
    # or when the signal came if training had begun by then), not at its 100,000 steps


@pytest.mark.slow
@pytest.mark.parametrize("to", ["group", "main"])
def test_sigterm_while_a_sweep_starts_ends_it_with_its_summary(to, text_file, tmp_path):
    """SIGTERM as the sweep launches its workers, while they load (before their jobs' handlers), could end
    them and the sweep with joblib's traceback, or reach the main process before they exist and leave them to
    train to the end: no job trains, and the sweep ends with its summary and 143."""
    sweep = tmp_path / "sweep"

    def as_the_workers_start(proc: subprocess.Popen) -> None:
        deadline = time.time() + 120
        while not (sweep / "multirun.yaml").is_file():  # written just before the workers start
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.01)
        if to == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)

    args = [*TINY, "trainer.max_steps=100000", "dataset=text", f"data.path={text_file}", "model.dropout=0.0,0.1,0.2",
            f"hydra.sweep.dir={sweep}"]
    proc, err = signalled_sweep(args, tmp_path, as_the_workers_start)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert "sweep " in err and "0 of 3 runs finished" in err, err
    records = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    assert all(r["status"] in ("not run", "interrupted") for r in records), records
    assert not any(alive(r["pid"]) for r in records if "pid" in r)
    assert not (sweep / ".sweep-stopped").exists()  # the sweep's own note to its workers, gone at its end
