"""Faults are inputs too: bad values, files that are not files, a full disk, leftovers of killed runs.
Each ends in one `error:` line with the fix and exit status 1, or is cleaned up."""
import errno
import json
import os
import stat

import pytest
import torch

from conftest import TINY
from frosty_lm.config import FrostyError
from test_reliability import assert_one_line_error


@pytest.mark.parametrize("override, message", [
    ("threads=0", f"threads=0 must be a positive integer up to this machine's {os.cpu_count()} cores, or null"),
    ("threads=100000", "threads=100000 must be a positive integer up to"),  # a thread each: memory runs out
    (f"+trainer.accumulate_grad_batches={2**70}", f"trainer.accumulate_grad_batches={2**70} must be < 2**63"),
    ("threads=two", "threads='two' must be a positive integer"),
    ("seed=-1", "seed=-1 must be an integer in [0, 2**32)"),
    ("seed=abc", "seed='abc' must be an integer"),
    ("optim.lr=0", "optim.lr=0.0 must be a positive number"),
    ("optim.lr=nan", "optim.lr=nan must be a positive number"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1 must be a number >= 0"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] must be two numbers in [0, 1)"),
    ("summary_sample_chars=-5", "summary_sample_chars=-5 must be an integer >= 0"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps=-1 must be an integer >= 0"),
    ("trainer.precision=16-true", "trainer.precision=16-true keeps the weights and AdamW's state in float16"),
    ("model.logit_softcap=1e39", "model.logit_softcap=1e+39 must be a positive number (e.g. 30; at most 3.4e38)"),
])
def test_bad_values_are_refused_before_anything_runs(invoke, text_file, tmp_path, override, message):
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", override,
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_max_time_is_read_as_lightnings_timer_reads_it():
    from frosty_lm.config import max_time_seconds

    assert max_time_seconds("01:02:03:04") == ((1 * 24 + 2) * 60 + 3) * 60 + 4
    assert max_time_seconds(" 00:00:00:05 ") == 5.0 and max_time_seconds(None) is None


def test_a_fifo_is_refused_as_a_corpus_and_as_a_checkpoint(invoke, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # reading it would block forever
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={fifo}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "is not a regular file")
    code, _, err = invoke("generate.py", f"ckpt_path={fifo}")
    assert_one_line_error(code, err, "is not a regular file")


def test_a_full_disk_is_one_line_and_keeps_the_earlier_checkpoints(invoke, text_file, tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    args = [*TINY, "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}"]
    saved = torch.save

    def fills_the_disk(obj, f, *a, **k):  # the third checkpoint write meets a full disk
        if obj.get("global_step", 0) >= 20:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "checkpoints"))
        return saved(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    code, _, err = invoke("train.py", *args, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "no space left on the device", "paths.outputs_dir=DIR")
    assert f"{run_dir / 'checkpoints'}/" in err and ".ckpt:" in err  # the file it could not write
    monkeypatch.setattr(torch, "save", saved)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 10
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    record = json.loads((run_dir / "status.json").read_text())  # what the checkpoints hold, not the failed write's
    best = next(s["best_model_score"] for k, s in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert record["status"] == "failed" and record["steps"] == 10 and record["best_val_loss"] == float(best)
    assert record["error"] == err.strip().removeprefix("error: ")


def test_a_full_disk_at_the_start_is_one_line(invoke, text_file, tmp_path, monkeypatch):
    """Hydra writes the run's config before any of Frosty's code runs: a disk without room is refused first."""
    import shutil
    from types import SimpleNamespace

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 4096, free=4096))
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "no space left on the device", "has 4 KiB free", "hydra.run.dir=DIR")
    assert not (tmp_path / "r" / ".hydra").exists()


def test_a_killed_writes_leftover_is_cleaned_and_checkpoints_are_as_readable_as_other_outputs(
        invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    args = [*TINY, "trainer.max_steps=10", "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *args, f"hydra.run.dir={run_dir}")[0] == 0
    leftover = run_dir / "checkpoints" / ".last.ckpt.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20")[0] == 0
    assert not leftover.exists()
    mode = stat.S_IMODE(os.stat(run_dir / "checkpoints" / "last.ckpt").st_mode)
    assert mode == stat.S_IMODE(os.stat(run_dir / "status.json").st_mode)


def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)  # what a kill during the first checkpoint write leaves
    (run_dir / "checkpoints" / ".last.ckpt.x.tmp").write_bytes(b"partial")
    code, _, err = invoke("train.py", f"resume={run_dir}")
    assert_one_line_error(code, err, f"hydra.run.dir={run_dir} and the overrides in its .hydra/overrides.yaml")
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=5", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


@pytest.mark.slow
def test_a_resume_with_nothing_left_to_train_is_refused(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    args = [*TINY, "trainer.max_steps=100000", "trainer.max_time=00:00:00:01", "trainer.val_check_interval=5",
            "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *args, f"hydra.run.dir={run_dir}")[0] == 0  # stopped by its time budget
    status = (run_dir / "status.json").read_text()
    step = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    code, _, err = invoke("train.py", f"resume={run_dir}")
    assert_one_line_error(code, err, "trainer.max_time=00:00:00:01: nothing to train", "give a longer trainer.max_time")
    code, _, err = invoke("train.py", f"resume={run_dir}", f"trainer.max_steps={step}", "trainer.max_time=null")
    assert_one_line_error(code, err, f"is at step {step} and trainer.max_steps={step}: nothing to train")
    assert (run_dir / "status.json").read_text() == status  # refused: the record is untouched
    code, _, err = invoke("train.py", f"resume={run_dir}", f"trainer.max_steps={step + 5}", "trainer.max_time=null")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step + 5


def test_ctrl_c_during_the_summary_keeps_the_run_finished(invoke, text_file, tmp_path, monkeypatch):
    import frosty_lm.generation as generation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation, "sample_text", interrupted)  # Ctrl-C while the summary samples
    run_dir = tmp_path / "r"
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=5", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("sweep", [False, True])
def test_an_outputs_dir_that_cannot_be_made_is_one_line(invoke, text_file, tmp_path, sweep):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a directory")
    code, out, err = invoke("train.py", *(["-m"] if sweep else []), *TINY, "dataset=text", f"data.path={text_file}",
                            f"paths.outputs_dir={in_the_way}/outputs")
    assert_one_line_error(code, err, f"cannot create {in_the_way}/outputs/{'sweeps' if sweep else 'runs'}/",
                          "Not a directory", "choose a writable directory with paths.outputs_dir=DIR")
    assert in_the_way.read_text() == "not a directory" and sorted(tmp_path.iterdir()) == [in_the_way, text_file]


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_the_numbers(invoke, text_file, tmp_path):
    code, _, err = invoke("train.py", *TINY, "data.batch_size=50000000", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "training (batch 50000000 x 32 characters", "GiB of memory, and this machine has",
                          "lower data.batch_size")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_model_too_large_to_build_is_refused_before_it_is_built(invoke, text_file, tmp_path):
    """Sized on torch's meta device: 48 layers of width 65,536 (2.5e12 parameters) are refused, not allocated."""
    code, _, err = invoke("train.py", *TINY, "model.n_embd=65536", "model.n_head=2", "model.n_layer=48",
                          "dataset=text", f"data.path={text_file}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "parameters) needs about", "choose a smaller model (model.n_embd, model.n_layer)")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_model_too_deep_to_build_is_refused_at_once(invoke, text_file, tmp_path):
    code, _, err = invoke("train.py", *TINY, f"model.n_layer={2**24}", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "213,137,755,008 parameters) needs about", "model.n_layer")


def test_a_bigram_model_is_sized_without_the_blocks_it_does_not_have():
    from frosty_lm.config import GPTConfig
    from frosty_lm.machine import check_training_fits

    check_training_fits(GPTConfig(vocab_size=97, block_size=64, n_layer=2**24, kind="bigram"), batch_size=32)


@pytest.mark.parametrize("options", [{}, {"tie_weights": True, "position": "rope", "qk_norm": True, "bias": False},
                                     {"kind": "bigram"}])
def test_the_memory_check_counts_the_parameters_of_the_model_it_would_build(monkeypatch, options):
    import frosty_lm.machine as machine
    from frosty_lm.config import GPTConfig
    from frosty_lm.model import build

    monkeypatch.setattr(machine, "available_memory", lambda: 1)
    cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=5, n_head=2, n_embd=16, **options)
    with pytest.raises(FrostyError, match=f"characters, {build(cfg).num_params():,} parameters\\) needs about"):
        machine.check_training_fits(cfg, batch_size=4)


def test_a_corpus_that_cannot_fit_in_memory_is_refused_before_it_is_read(invoke, text_file, tmp_path, monkeypatch):
    import frosty_lm.machine as machine

    monkeypatch.setattr(machine, "available_memory", lambda: text_file.stat().st_size)  # less than reading takes
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, f"reading the corpus {text_file} needs about", "train on a smaller file")


def test_a_model_that_would_not_fit_on_the_gpu_is_refused_with_the_numbers(invoke, text_file, tmp_path,
                                                                            monkeypatch):
    import frosty_lm.machine as machine

    monkeypatch.setattr(machine, "gpu_free_memory", lambda: 2**20)  # a GPU with 1 MiB free (no GPU here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    code, _, err = invoke("train.py", *TINY, "trainer=gpu", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "training (batch 8 x 32 characters,", "MiB of memory, and the GPU has 1 MiB "
                          "available: lower data.batch_size, model.block_size or model.n_layer")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_gpu_trainer_without_a_gpu_is_refused_with_the_fix(invoke, text_file, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no GPU, also where the tests run on one
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for trainer in ("gpu", "ddp"):
        code, _, err = invoke("train.py", *TINY, f"trainer={trainer}", "dataset=text", f"data.path={text_file}",
                              f"hydra.run.dir={tmp_path / trainer}")
        assert_one_line_error(code, err, "trainer.accelerator=gpu (trainer=gpu and trainer=ddp), but torch sees no "
                              "GPU here", "train on the CPU with trainer=cpu (the default)")
        assert not (tmp_path / trainer / "checkpoints").exists()


def test_the_memory_estimate_is_of_the_right_size():
    from frosty_lm.machine import training_memory

    small = training_memory(816_896, 32, 128, 4, 4, 128, 65)  # the small model at its default batch
    assert 100 * 2**20 < small < 1 * 2**30  # the measured figure: docs/performance.md
    assert training_memory(816_896, 64, 128, 4, 4, 128, 65) > 1.9 * small - 16 * 816_896


@pytest.mark.slow
@pytest.mark.parametrize("stdout", ["full", "pipe closed early", "closed"])
def test_a_console_that_cannot_be_written_loses_lines_not_the_run(text_file, tmp_path, stdout):
    """train.py > /dev/full, train.py | head -1 (the reader gone), train.py >&-: the run trains and finishes,
    exit 0, with no traceback or logging report; train.log has the lines."""
    import subprocess
    import sys

    from conftest import ROOT

    args = [sys.executable, str(ROOT / "train.py"), *TINY, "dataset=text", f"data.path={text_file}",
            f"hydra.run.dir={tmp_path / 'r'}"]
    if stdout == "full":
        with open("/dev/full", "w") as full:
            result = subprocess.run(args, cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
        code, err = result.returncode, result.stderr
    elif stdout == "pipe closed early":
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.readline()
        proc.stdout.close()  # as head -1 exits
        err = proc.stderr.read()
        code = proc.wait(timeout=300)
    else:
        result = subprocess.run(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                timeout=300, preexec_fn=lambda: os.close(1))
        code, err = result.returncode, result.stderr
    assert code == 0, err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "finished"
    assert "continue from it with" in (tmp_path / "r" / "train.log").read_text()


def test_the_memory_check_counts_a_process_limit(monkeypatch):
    """ulimit -v (and a container's cgroup limit) leave a process less than the machine has: the up-front check
    counts the least of them."""
    import resource

    from frosty_lm import machine

    size = machine.meminfo("/proc/self/status", "VmSize:")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (size + 2**30, resource.RLIM_INFINITY))
    assert 0 < machine.available_memory() <= 2**30
    with pytest.raises(FrostyError, match=r"needs about 2\.0 GiB of memory, and this machine has 1\.0 GiB"):
        machine.check_fits(2 * 2**30, "training", "lower data.batch_size")


def test_a_full_disk_at_a_resume_gives_the_fix_a_resume_can_use(invoke, trained_run, tmp_path, monkeypatch):
    """A resumed run cannot move to another disk: the line's other way is a new run from its last.ckpt there."""
    import shutil
    from types import SimpleNamespace

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 4096, free=4096))
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert_one_line_error(code, err, "has 4 KiB free: free some space, or choose another disk with a new run from "
                          f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'} paths.outputs_dir=DIR")


def test_a_file_system_without_files_left_is_one_line_at_the_start(invoke, text_file, tmp_path, monkeypatch):
    from types import SimpleNamespace

    space = {"f_frsize": 4096, "f_blocks": 10**6, "f_bfree": 10**6, "f_bavail": 10**6}  # (shutil.disk_usage's)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_files=1000, f_favail=3, **space))
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "no space left on the device", "has room for 3 more files (inodes)")
    assert not (tmp_path / "r" / ".hydra").exists()


@pytest.mark.parametrize("err, line", [
    (OSError(errno.EFBIG, "File too large", "/r/best.ckpt"), "file too large (for the file system, or a limit such "
                                                            "as ulimit -f): /r/best.ckpt: free some space"),
    (OSError(errno.EPERM, "Operation not permitted", b"/r/events"), "operation not permitted: /r/events: choose"),
    (ImportError("libx.so: failed to map segment from shared object"), "out of memory (the machine's, or a limit"),
])
def test_disk_and_memory_errors_are_one_line_each(err, line):
    from frosty_lm.machine import error_line

    wrapped = RuntimeError("while training")
    wrapped.__cause__ = err
    assert error_line(wrapped).startswith(line)


def test_the_report_and_attention_tools_memory_and_disk_errors_are_one_line(capsys):
    """run_entry_point, around python -m frosty_lm.report and frosty_lm.attention: an error with a user's line is
    that line and exit status 1; any other error is raised as it is."""
    from frosty_lm.cli import run_entry_point

    def raising(error):
        def main():
            raise error
        return main

    for error, line in ((MemoryError(), "error: out of memory"),
                        (OSError(errno.ENOSPC, "No space left on device", "/r/x.png"), "error: no space left on the "
                                                                                       "device: /r/x.png")):
        with pytest.raises(SystemExit) as ended:
            run_entry_point(raising(error))
        assert ended.value.code == 1 and capsys.readouterr().err.startswith(line)
    with pytest.raises(ValueError, match="a bug"):
        run_entry_point(raising(ValueError("a bug")))
    for debug in ("FROSTY_DEBUG", "HYDRA_FULL_ERROR"):  # the traceback asked for
        with pytest.MonkeyPatch.context() as env:
            env.setenv(debug, "1")
            with pytest.raises(MemoryError):
                run_entry_point(raising(MemoryError()))


def test_a_disk_error_in_a_writer_thread_is_left_to_the_runs_own_line(capsys):
    """TensorBoard writes events in a thread of its own, which raises the error again in the run: the thread's
    traceback is left out; any other thread's error keeps Python's report."""
    import threading

    from frosty_lm.progress import quiet_lightning

    def fail(error):
        thread = threading.Thread(target=lambda: (_ for _ in ()).throw(error))
        thread.start()
        thread.join()

    hook = threading.excepthook  # (pytest's own, which reports to stderr, replaced while this test runs)
    threading.excepthook = threading.__excepthook__
    try:
        quiet_lightning()
        fail(OSError(errno.ENOSPC, "No space left on device"))
        assert capsys.readouterr().err == ""
        fail(ValueError("a bug"))
        assert "ValueError: a bug" in capsys.readouterr().err
    finally:
        threading.excepthook = hook


def test_a_full_disk_under_a_logger_names_the_run_and_is_recorded(invoke, text_file, tmp_path, monkeypatch):
    """A logger's write that meets a full disk names no file: the line names the run's directory; status.json,
    whose own new copy cannot be written then, is rewritten in place and says failed, with the checkpoints' steps."""
    from pathlib import Path

    from lightning.pytorch.loggers import TensorBoardLogger

    run_dir, logged, written = tmp_path / "r", TensorBoardLogger.log_metrics, Path.write_bytes

    def full_from_step_20(self, metrics, step=None):
        if step is not None and step >= 20:
            monkeypatch.setattr(Path, "write_bytes", lambda path, data: written(path, data) if path.suffix != ".tmp"
                                else (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
            raise OSError(errno.ENOSPC, "No space left on device")
        return logged(self, metrics, step)

    monkeypatch.setattr(TensorBoardLogger, "log_metrics", full_from_step_20)
    code, _, err = invoke("train.py", *TINY, "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, f"no space left on the device: {run_dir}: free some space")
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "failed" and record["steps"] == 10 and not (run_dir / "status.tmp").exists()


def test_a_record_too_large_for_its_room_on_a_full_disk_leaves_the_old_one_whole(tmp_path, monkeypatch):
    from pathlib import Path

    from frosty_lm.status import RunRecord

    record = RunRecord(tmp_path)
    record.write(status="running")
    written = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda path, data: written(path, data) if path.suffix != ".tmp"
                        else (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    record.write(status="failed")  # fits in the room the record holds: written in place
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"
    before = (tmp_path / "status.json").read_bytes()
    with pytest.raises(OSError):
        record.write(error="y" * 100_000)
    assert (tmp_path / "status.json").read_bytes() == before


def test_a_replaced_file_keeps_its_mode(tmp_path):
    from frosty_lm.cli import replace_file

    (tmp_path / "private.png").write_bytes(b"old")
    (tmp_path / "private.png").chmod(0o600)
    replace_file(tmp_path / "private.png", lambda f: f.write(b"new"))
    file = tmp_path / "private.png"
    assert file.read_bytes() == b"new" and stat.S_IMODE(file.stat().st_mode) == 0o600


def test_running_out_of_memory_during_training_is_one_line(invoke, text_file, tmp_path, monkeypatch):
    """Memory that runs out after the estimate (an allocation torch cannot make): one line with the fix, exit 1,
    and status.json says failed."""
    from frosty_lm.lit_module import FrostyLM

    def no_memory(self, batch, batch_idx):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 536870912 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(FrostyLM, "training_step", no_memory)
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "out of memory", "in training, lower data.batch_size, model.block_size or the "
                          "model's size")
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


def test_a_nan_val_loss_is_no_best(invoke, text_file, tmp_path, monkeypatch):
    """A validation whose loss is NaN (e.g. an overflow under 16-bit precision) leaves the best val loss as it was."""
    from frosty_lm.lit_module import FrostyLM

    epoch_end = FrostyLM.on_validation_epoch_end

    def nan_at_the_last(self):
        if self.global_step == 30:
            self._val_totals[0] = float("nan")
        epoch_end(self)

    monkeypatch.setattr(FrostyLM, "on_validation_epoch_end", nan_at_the_last)
    run = tmp_path / "r"
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run}")
    assert code == 0, err
    record = json.loads((run / "status.json").read_text())
    best = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    assert record["status"] == "finished" and record["steps"] == 30 and best["global_step"] == 15
    assert record["best_val_loss"] == pytest.approx(float(best["state_dict"]["best_val_loss"]))


def test_bf16_true_keeps_the_best_val_loss_exact(invoke, text_file, tmp_path):
    """trainer.precision=bf16-true makes the module's buffers bf16: the best val loss is kept in fp32 all the same,
    so what status.json, the summary and generate.py report is a val loss that was measured."""
    from frosty_lm.report import read_logs

    run = tmp_path / "r"
    code, _, err = invoke("train.py", *TINY, "trainer.precision=bf16-true", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run}")
    assert code == 0, err
    measured = [value for _, value in read_logs(run)[0]["val/loss"]]
    assert json.loads((run / "status.json").read_text())["best_val_loss"] == pytest.approx(min(measured), abs=1e-6)


def test_a_run_is_finished_in_its_record_before_its_summary(invoke, text_file, tmp_path, monkeypatch):
    """The summary samples from best.ckpt after training: a kill -9 there leaves the record as it is then."""
    from frosty_lm import status

    seen = {}

    def summary(trainer, cfg, loss, text):
        seen.update(json.loads((tmp_path / "r" / "status.json").read_text()))

    monkeypatch.setattr(status, "summarise", summary)
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=5", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 0, err
    assert seen["status"] == "finished" and seen["steps"] == 5, seen
