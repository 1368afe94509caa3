"""SIGTERM or Ctrl-C to a sweep: running jobs save and stop, the others do not start, no worker is left behind,
and the sweep ends with its summary and 128 + the signal's number."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "basic"])
def test_sigterm_to_a_sweep_stops_it_cleanly(launcher, text_file, tmp_path):
    sweep = tmp_path / "sweep"
    extra = ["hydra/launcher=basic"] if launcher == "basic" else []  # joblib, 2 jobs at a time, is the default
    command = [sys.executable, str(ROOT / "train.py"), "-m", *TINY, "trainer.max_steps=100000",
               "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}", "model.dropout=0.0,0.1,0.2",
               *extra, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = sweep / "dropout=0.0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not first.is_file():  # a job is training
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/status.json")}
    states = sorted(r["status"] for r in records.values())
    running_at_once = 2 if launcher == "joblib" else 1
    assert states == ["interrupted"] * running_at_once + ["not run"] * (3 - running_at_once), records
    assert "runs finished" in err and f"{running_at_once} interrupted" in err and "resume=" in err
    assert not any(alive(r["pid"]) for r in records.values() if "pid" in r)  # no worker left training
    for name, record in records.items():
        if record["status"] == "interrupted":  # saved at its stop
            assert record["steps"] > 0 and (sweep / name / "checkpoints" / "last.ckpt").is_file()
