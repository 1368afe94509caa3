"""Every experiment and sweep preset runs, for a few steps, and trains what it promises."""
import json
from pathlib import Path

import pytest
import torch

from conftest import run

FEW_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=2", "summary_sample_chars=10",
             "callbacks.sample_text.max_new_tokens=10"]


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_seed_frosty_trains_the_seeds_model_with_adamw_3e_4(invoke, frost_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FROSTY_DATA_DIR", str(frost_dir))
    run_dir = tmp_path / "seed"
    code, _, err = invoke("train.py", "+experiment=seed_frosty", *FEW_STEPS, f"hydra.run.dir={run_dir}")
    assert code == 0, err
    ckpt = last_checkpoint(run_dir)
    hp = ckpt["hyper_parameters"]
    m = hp["model"]
    assert (m["n_embd"], m["n_head"], m["n_layer"], m["block_size"], m["dropout"]) == (384, 6, 6, 256, 0.2)
    assert ckpt["global_step"] == 2 and hp["config"]["data"]["name"] == "frost"
    (group,) = [g for g in ckpt["optimizer_states"][0]["param_groups"] if g["weight_decay"]]
    assert group["lr"] == 3e-4 and hp["scheduler"]["name"] == "constant"  # constant: no warm-up, no decay
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(ckpt["optimizer_states"][0]["state"].values())))  # Adam's
    assert "effective batch: 32 windows of 256 characters" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_yoda_dropout_sweeps_three_dropouts_on_yoda(frost_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", "+experiment=yoda_dropout", *FEW_STEPS, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                 env={"FROSTY_DATA_DIR": str(frost_dir)})
    assert "3 of 3 runs finished" in result.stderr
    for dropout in (0.0, 0.2, 0.4):
        hp = last_checkpoint(sweep / f"dropout={dropout}")["hyper_parameters"]
        assert hp["model"]["dropout"] == dropout and hp["config"]["data"]["name"] == "yoda"
        assert (hp["model"]["n_embd"], hp["model"]["block_size"], hp["optim"]["lr"]) == (128, 64, 1e-3)


@pytest.mark.slow
def test_dropout_depth_sweeps_twelve_runs_named_by_their_values(text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", "+sweep=dropout_depth", "model=tiny", "data.batch_size=4", *FEW_STEPS,
                 "dataset=text", f"data.path={text_file}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "12 of 12 runs finished" in result.stderr
    for dropout in (0.0, 0.1, 0.2, 0.3):
        for layers in (2, 4, 6):
            job = sweep / f"dropout={dropout},n_layer={layers}"
            model = last_checkpoint(job)["hyper_parameters"]["model"]
            assert (model["dropout"], model["n_layer"]) == (dropout, layers)
            assert json.loads((job / "status.json").read_text())["status"] == "finished"
