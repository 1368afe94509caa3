"""One process trains a run at a time, and a refused or failed resume leaves the run's record as it was."""
import json
import subprocess
import sys
from pathlib import Path

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
    changed = {"trainer.max_steps": "trainer.max_steps=20", "data.path": f"data.path={moved}"}
    kept = [o for o in record["overrides"] if o.split("=")[0] not in changed]  # what it was started with...
    assert [o for o in resumed["overrides"] if o in kept] == kept and set(changed.values()) <= set(resumed["overrides"])
    assert len(resumed["overrides"]) == len(kept) + 2  # ...and what was changed, each key once
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


@pytest.mark.slow
def test_a_new_run_in_a_directory_being_trained_is_refused_before_anything_is_written(invoke, text_file, tmp_path):
    """A run is written (its .hydra/ included) only by its trainer: a new run given its directory while it trains,
    before its first checkpoint, is refused before Hydra writes into it."""
    run_dir = tmp_path / "r"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=3\n")  # the trainer's, as Hydra wrote them
    trainer = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "held"
        before = snapshot(run_dir)
        code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}")
        assert_one_line_error(code, err, f"{run_dir} is being trained by another process: choose another hydra.run.dir")
        assert snapshot(run_dir) == before
    finally:
        trainer.kill()
        trainer.wait()


@pytest.mark.slow
def test_a_resume_keeps_writing_last_ckpt_where_the_run_keeps_it(invoke, text_file, tmp_path):
    """Checkpoints moved or turned off by a resume's overrides would leave status.json ahead of last.ckpt, and a
    later resume going on from the older last.ckpt: refused, the run untouched."""
    run_dir = finished_run(invoke, text_file, tmp_path)
    before = snapshot(run_dir / "checkpoints"), (run_dir / "status.json").read_text()
    for override in (f"callbacks.model_checkpoint.dirpath={tmp_path / 'elsewhere'}", "callbacks.model_checkpoint=null",
                     "callbacks.model_checkpoint.save_last=false"):
        code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20", override)
        assert_one_line_error(code, err, f"cannot resume {run_dir} without writing its checkpoints/last.ckpt as it "
                                         "trains: leave out the overrides of callbacks.model_checkpoint")
        assert (snapshot(run_dir / "checkpoints"), (run_dir / "status.json").read_text()) == before
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.slow
def test_a_resume_on_a_corpus_file_whose_text_changed_is_refused(invoke, text_file, tmp_path):
    """Same characters, other text: the train/val split would change under the run (and best.ckpt be chosen across
    two val sets). Refused, the run untouched; with the file put back, the run goes on."""
    run_dir = finished_run(invoke, text_file, tmp_path)
    original = text_file.read_text()
    text_file.write_text("\n".join(reversed(original.splitlines())))
    before = snapshot(run_dir / "checkpoints"), (run_dir / "status.json").read_text()
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
    assert_one_line_error(code, err, "last.ckpt was trained on other text than its corpus file holds now",
                          "put the file back as it was, or start a new run from the checkpoint with ckpt_path=")
    assert (snapshot(run_dir / "checkpoints"), (run_dir / "status.json").read_text()) == before
    code, _, err = invoke("train.py", f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}", *TINY, "trainer.max_steps=20",
                          "dataset=text", f"data.path={text_file}", f"hydra.run.dir={tmp_path / 'new'}")
    assert code == 0, err  # a new run from its weights may train on other text
    text_file.write_text(original)
    assert invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")[0] == 0


@pytest.mark.slow
def test_a_run_that_cannot_be_written_says_how_to_go_on(invoke, text_file, tmp_path, monkeypatch):
    import os

    run_dir = finished_run(invoke, text_file, tmp_path)
    before = snapshot(run_dir)
    writable = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != run_dir and writable(path, mode))  # read-only
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
    assert_one_line_error(code, err, f"cannot write to {run_dir}: make it writable to resume it, or start a new run "
                                     f"from its weights with ckpt_path={run_dir}/checkpoints/last.ckpt")
    assert snapshot(run_dir) == before


def test_a_run_is_held_only_for_other_trainers_not_for_its_own_ranks(tmp_path, monkeypatch):
    from filelock import FileLock

    from frosty_lm.status import RunLock

    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert not RunLock(tmp_path).held() and not (tmp_path / ".lock").exists()  # none: none made
    with FileLock(tmp_path / ".lock"):  # its trainer, rank 0
        assert RunLock(tmp_path).held()
        monkeypatch.setenv("LOCAL_RANK", "1")  # the command line again, as Lightning's ddp starts rank 1
        assert not RunLock(tmp_path).held()
        monkeypatch.delenv("LOCAL_RANK")
    assert not RunLock(tmp_path).held()  # released
