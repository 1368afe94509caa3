"""Ctrl-C or SIGTERM to a sweep. Ctrl-C in a terminal reaches every process: each running job saves last.ckpt and
stops (unless joblib's shutdown ends its worker first), and the sweep exits with status 130. SIGTERM to the sweep's
main process ends it with exit status 143, and joblib shuts its workers down. Either way no process of the sweep is
left behind, and every checkpoint is whole."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, as_from_a_shell, job_dir


def group_members(pgid: int) -> list[int]:
    """The processes of a process group (Linux's /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(stat.parent.name))
    return members


@pytest.mark.slow
@pytest.mark.parametrize("signum, to, code", [(signal.SIGINT, "group", 130),  # Ctrl-C in a terminal
                                              (signal.SIGTERM, "main", 143)])  # kill PID
def test_a_stopped_sweep_leaves_no_worker_behind(signum, to, code, text_file, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *TINY, "trainer.max_steps=100000",
                             "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                             "model.dropout=0.0,0.1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_from_a_shell)
    try:
        deadline = time.time() + 120
        while len(list(sweep.glob("*/checkpoints/last.ckpt"))) < 2:  # both jobs train
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signum) if to == "group" else proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code and "Traceback" not in err, err
    deadline = time.time() + 15  # joblib's shutdown of its workers and resource trackers
    while group_members(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert group_members(proc.pid) == [], "a process of the sweep is left behind"
    for job in (job_dir(sweep, f"model.dropout={d}") for d in ("0.0", "0.1")):
        step = torch.load(job / "checkpoints/last.ckpt", weights_only=True)["global_step"]  # whole, readable
        record = json.loads((job / "status.json").read_text())
        if record["status"] == "interrupted":  # it stopped at a step and saved there
            assert record["steps"] == step
        else:  # joblib's shutdown ended its worker first: last.ckpt is its last validation's, or the stop's if the
            # worker got that far before its status.json said so (status.json's steps: the last validation's)
            assert record["status"] == "running" and (step % 10 == 0 or step > record.get("steps", 0))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["hydra/launcher=basic", "hydra.launcher.n_jobs=1"])
def test_sigterm_to_a_sweep_whose_jobs_run_in_its_process_ends_it_once_the_job_saved(launcher, text_file, tmp_path):
    """There Lightning's own handler stops the job at its step (last.ckpt saved, interrupted, how to resume), and
    the sweep ends with it, exit status 143: the next jobs do not start."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *TINY, "trainer.max_steps=100000",
                             "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                             "model.dropout=0.0,0.1", launcher, f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_shell)
    try:
        deadline = time.time() + 120
        while not list(sweep.glob("*/checkpoints/last.ckpt")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err, err
    [job] = [p.parent for p in sweep.glob("*/status.json")]  # the second job never started
    record = json.loads((job / "status.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", "stopped by SIGTERM")
    assert record["steps"] == torch.load(job / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert f"interrupted by SIGTERM at step {record['steps']}; last.ckpt saved; continue with" in out + err
