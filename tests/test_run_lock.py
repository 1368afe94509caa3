"""One process trains a run at a time, and a refused or failed resume leaves the run's record as it was."""
import json
import os
import socket
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


@pytest.mark.slow
def test_a_run_being_trained_is_refused_to_a_second_trainer(invoke, text_file, tmp_path):
    run_dir = finished_run(invoke, text_file, tmp_path)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for a live trainer
    try:
        (run_dir / ".lock").write_text(json.dumps({"pid": trainer.pid, "host": socket.gethostname()}))
        before = snapshot(run_dir / "checkpoints")
        status = (run_dir / "status.json").read_text()
        code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
        assert_one_line_error(code, err, f"is being trained by process {trainer.pid}")
        assert snapshot(run_dir / "checkpoints") == before and (run_dir / "status.json").read_text() == status
    finally:
        trainer.kill()
        trainer.wait()
    # the trainer is gone (killed): its lock is stale and the resume takes it over
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 20
    assert not (run_dir / ".lock").exists()  # released at the end


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


def test_a_lock_interrupted_as_it_is_taken_is_whole_or_absent(tmp_path, monkeypatch):
    """A signal between creating .lock and writing it must not leave a lock that names no process, which no later
    run could take over: the lock is written beside, then linked into place."""
    import errno
    import os
    from pathlib import Path

    import pytest

    from frosty_lm.errors import FrostyError
    from frosty_lm.status import RunLock

    link = os.link

    def interrupted(before: bool):
        def link_then_interrupt(src, dst):
            if not before:
                link(src, dst)
            raise KeyboardInterrupt
        return link_then_interrupt

    for before in (True, False):
        monkeypatch.setattr(os, "link", interrupted(before))
        with pytest.raises(KeyboardInterrupt):
            RunLock(tmp_path).acquire()
        assert [p.name for p in tmp_path.iterdir()] == ([] if before else [".lock"])  # nothing written beside
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()  # whole: a later run takes it over
    monkeypatch.setattr(os, "link", link)
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()

    def no_hard_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")  # as on FAT

    monkeypatch.setattr(os, "link", no_hard_links)
    lock.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() and lock.held
    lock.release()

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        RunLock(tmp_path).acquire()
    assert list(tmp_path.iterdir()) == []  # no lock, empty or not
    monkeypatch.undo()
    (tmp_path / ".lock").write_text("")  # an empty lock, as creating .lock and then writing it could leave
    with pytest.raises(FrostyError, match=r"\.lock names no process \(a damaged lock\): if no process trains"):
        RunLock(tmp_path).acquire()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times from Linux's /proc")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    """A killed trainer's pid, reused by an unrelated process: the start time the lock records tells them apart."""
    from frosty_lm.errors import FrostyError
    from frosty_lm.status import RunLock, process_start

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # live, not the lock's trainer
    try:
        lock = {"pid": other.pid, "host": socket.gethostname(), "started": process_start(other.pid)}
        (tmp_path / ".lock").write_text(json.dumps(lock))
        with pytest.raises(FrostyError, match=f"is being trained by process {other.pid}"):
            RunLock(tmp_path).acquire()  # the same process: live
        (tmp_path / ".lock").write_text(json.dumps({**lock, "started": lock["started"] - 1}))
        taken = RunLock(tmp_path)
        taken.acquire()  # another process under that pid: stale, taken over
        assert taken.held and json.loads((tmp_path / ".lock").read_text())["started"] == process_start(os.getpid())
        taken.release()
    finally:
        other.kill()
        other.wait()
