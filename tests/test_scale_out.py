"""The multi-process path on the CPU: DDP over 2 gloo processes, alone and inside a sweep; submitit's local launcher."""
import contextlib
import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, TINY, job_dir, run
from frosty_lm.checkpoint import load_checkpoint
from frosty_lm.data import CharDataModule
from frosty_lm.lit_module import FrostyLM

DDP = [*TINY, "trainer=ddp_cpu", "trainer.max_steps=20", "trainer.val_check_interval=10"]


def single_process_val_loss(ckpt_path: Path, corpus: Path) -> float:
    ckpt = load_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    module = FrostyLM(hp["vocab"], hp["model"], hp["optim"], hp["scheduler"])
    module.load_state_dict(ckpt["state_dict"])
    data = CharDataModule("text", "unused", hp["model"]["block_size"], batch_size=8, path=str(corpus))
    precision = OmegaConf.create(hp["config"]).trainer.precision  # the run's (bf16-mixed on a CPU with native bf16)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    return trainer.validate(module, datamodule=data, verbose=False)[0]["val/loss"]


def checkpoint_val_loss(ckpt_path: Path) -> float:
    state = torch.load(ckpt_path, weights_only=True)["callbacks"]
    (checkpoint_state,) = [v for k, v in state.items() if k.startswith("ModelCheckpoint")]
    return float(checkpoint_state["best_model_score"])


@pytest.mark.slow
def test_ddp_cpu_run_matches_a_single_process_evaluation(text_file, tmp_path):
    run_dir = tmp_path / "ddp"
    result = run("train.py", *DDP, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "effective batch: 16 windows of 32 characters per step (data.batch_size 8 x 2 processes" in output
    assert output.count("torch threads:") == 1 and output.count("best checkpoint:") == 1  # rank 0 speaks for the run
    assert f"torch threads: {max(1, (os.cpu_count() or 1) // 2)}" in output  # each process its share of the cores
    assert "sync_dist" not in output  # (the val loss is summed across processes already)
    assert sorted(p.name for p in run_dir.rglob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # logs from rank 0 only
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    best = run_dir / "checkpoints/best.ckpt"
    assert single_process_val_loss(best, text_file) == pytest.approx(checkpoint_val_loss(best), abs=1e-5)
    # and the DDP run resumes
    run("train.py", f"resume={run_dir}", "trainer.max_steps=30", cwd=tmp_path)
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 30


@pytest.mark.slow
def test_ddp_cpu_inside_a_sweep_runs_each_job_once(text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", *DDP, "dataset=text", f"data.path={text_file}", "model.dropout=0.0,0.1",
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "2 of 2 runs finished" in result.stderr
    assert "trainer.strategy=ddp_spawn instead of ddp" in result.stdout + result.stderr
    jobs = [job_dir(sweep, f"model.dropout={d}") for d in ("0.0", "0.1")]
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 2  # no job ran twice, no second sweep started
    assert not (tmp_path / "outputs").exists()
    for job in jobs:
        best = job / "checkpoints/best.ckpt"
        assert single_process_val_loss(best, text_file) == pytest.approx(checkpoint_val_loss(best), abs=1e-5)


@pytest.mark.slow
def test_submitit_local_sweep(text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", *TINY, "trainer.max_steps=10", "dataset=text", f"data.path={text_file}",
                 "hydra/launcher=submitit_local", "model.dropout=0.0,0.1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "2 of 2 runs finished" in result.stderr
    for dropout in ("0.0", "0.1"):
        assert (job_dir(sweep, f"model.dropout={dropout}") / "checkpoints/best.ckpt").is_file()


def test_gpu_trainers_and_slurm_launcher_compose():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        ddp = compose("train", overrides=["trainer=ddp", "paths.output_dir=/tmp/x"])
        slurm = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
                        return_hydra_config=True)
    assert (ddp.trainer.strategy, ddp.trainer.accelerator, ddp.trainer.devices) == ("ddp", "gpu", -1)
    assert slurm.hydra.launcher.tasks_per_node == 4  # one task per GPU
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")


@pytest.mark.slow
def test_a_ctrl_c_stop_of_a_ddp_job_inside_a_sweep_is_one_line(text_file, tmp_path):
    """ddp_spawn's ranks raise in child processes, and torch ends the others at once (no last.ckpt of the stop):
    the job fails with one line that says so, and the sweep says which, with no traceback."""
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", *DDP, "dataset=text", f"data.path={text_file}", f"hydra.sweep.dir={sweep}",
                 "hydra/launcher=basic", "+callbacks.signal._target_=test_stops.SignalAt",
                 f"+callbacks.signal.signum={int(signal.SIGINT)}", "+callbacks.signal.step=3", cwd=tmp_path,
                 env={"PYTHONPATH": str(Path(__file__).parent)}, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]
    record = json.loads((job / "status.json").read_text())
    said = "a process of the run ended with frosty_lm.callbacks.Stopped: SIGINT: ddp_spawn ended the others at once"
    assert record["status"] == "failed" and record["error"].startswith(said)
    assert f"failed: {job.name}: {said}" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("to", ["group", "main"])  # as SLURM sends it; `kill PID`
def test_sigterm_stops_every_process_of_a_ddp_cpu_run_at_one_step(text_file, tmp_path, to):
    """Frosty's handler, not Lightning's (whose broadcast inside the handler can meet another collective and hang
    the run): every process stops at the same step, last.ckpt is saved there, exit status 143, and it resumes."""
    import subprocess
    import sys
    import time

    from conftest import ROOT, as_from_a_shell

    run_dir = tmp_path / "ddp"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *DDP, "trainer.max_steps=100000",
                             "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=as_from_a_shell)
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoints/last.ckpt").is_file():  # both processes train; a validation is near
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM) if to == "group" else proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143 and "Traceback" not in out, out
    record = json.loads((run_dir / "status.json").read_text())
    step = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert record["status"] == "interrupted" and record["steps"] == step, record
    assert f"interrupted by SIGTERM at step {step}; last.ckpt saved" in out
    assert out.count("SIGTERM: stopping after this step and saving last.ckpt") == 1, out  # rank 0's, for the run
    run("train.py", f"resume={run_dir}", f"trainer.max_steps={step + 5}", cwd=tmp_path)
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step + 5
