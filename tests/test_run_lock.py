"""One process trains a run at a time, and a refused or failed resume leaves the run's record as it was."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import TINY, snapshot
from test_reliability import assert_one_line_error


def finished_run(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    args = [*TINY, "trainer.max_steps=10", "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *args, f"hydra.run.dir={run_dir}")[0] == 0
    return run_dir


HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_run_being_trained_is_refused_to_a_second_trainer(invoke, text_file, tmp_path):
    """The lock is the operating system's: a live holder refuses a second trainer; a holder killed with -9
    releases it, and the next trainer takes it."""
    run_dir = finished_run(invoke, text_file, tmp_path)
    trainer = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "held"  # stands for a live trainer
        before = snapshot(run_dir / "checkpoints")
        status = (run_dir / "status.json").read_text()
        code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
        assert_one_line_error(code, err, "is being trained by another process")
        assert snapshot(run_dir / "checkpoints") == before and (run_dir / "status.json").read_text() == status
    finally:
        trainer.kill()  # SIGKILL: no chance to release the lock itself
        trainer.wait()
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 20


@pytest.mark.slow
def test_a_failed_resume_leaves_the_record_and_a_resume_continues_it(invoke, text_file, tmp_path):
    run_dir = finished_run(invoke, text_file, tmp_path)
    record = json.loads((run_dir / "status.json").read_text())
    moved = tmp_path / "moved.txt"
    text_file.rename(moved)  # the corpus is gone: this resume fails before training
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
    assert_one_line_error(code, err, "does not exist")
    assert json.loads((run_dir / "status.json").read_text()) == record  # still finished, with its numbers
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20", f"data.path={moved}")
    assert code == 0, err
    resumed = json.loads((run_dir / "status.json").read_text())
    assert resumed["status"] == "finished" and resumed["steps"] == 20 and resumed["started"] == record["started"]
    assert resumed["overrides"][: len(record["overrides"])] == record["overrides"]  # what it was started with...
    assert {"trainer.max_steps=20", f"data.path={moved}"} <= set(resumed["overrides"])  # ...and what was changed
    assert not any(o.startswith("resume=") for o in resumed["overrides"])
    assert resumed["wall_time_s"] >= record["wall_time_s"]
    assert "resumes" not in record  # the list of resumes: the one that trained, not the refused one
    assert [r["overrides"] for r in resumed["resumes"]] == [[f"resume={run_dir}", "trainer.max_steps=20",
                                                              f"data.path={moved}"]]


def test_status_json_stays_json_when_a_number_is_not_finite(tmp_path):
    """A NaN or infinite best val loss (an edited checkpoint) is written as null: NaN and Infinity are not JSON."""
    from frosty_lm.status import RunRecord

    record = RunRecord(tmp_path)
    record.write(status="finished", best_val_loss=float("nan"), eta_s=float("inf"), steps=3)
    written = json.loads((tmp_path / "status.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert (written["best_val_loss"], written["eta_s"], written["steps"]) == (None, None, 3)
