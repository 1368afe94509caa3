"""Every experiment and sweep preset runs, for a few steps, and trains what it promises."""
import json
from pathlib import Path

import pytest
import torch

from conftest import job_dir, run

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
def test_speedrun_trains_its_recipe_for_its_time_budget(invoke, text_file, tmp_path):
    """+experiment=speedrun: Muon and AdamW with the search's lrs, 1 layer of 64, context 64, batch 16, RMSNorm,
    limited by time (here 3 s instead of its 30), the schedule laid over the time down to its floor."""
    run_dir = tmp_path / "speedrun"
    code, _, err = invoke("train.py", "+experiment=speedrun", "trainer.max_time=00:00:00:03", "dataset=text",
                          f"data.path={text_file}", "summary_sample_chars=10", f"hydra.run.dir={run_dir}")
    assert code == 0, err
    ckpt = last_checkpoint(run_dir)
    hp = ckpt["hyper_parameters"]
    m = hp["model"]
    assert (m["n_layer"], m["n_embd"], m["n_head"], m["block_size"], m["norm"], m["dropout"], m["zero_init_proj"]) == (
        1, 64, 4, 64, "rmsnorm", 0.0, True)
    assert (hp["optim"]["name"], hp["optim"]["lr"], hp["optim"]["adamw_lr"]) == ("muon", 0.01, 6e-3)
    assert hp["config"]["data"]["batch_size"] == 16
    assert 0 < ckpt["global_step"] < 1_000_000 and ckpt["callbacks"]["Timer"]["time_elapsed"]["train"] >= 3
    lrs = sorted(g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"])
    assert lrs[0] == pytest.approx(0.1 * 6e-3, rel=0.05) and lrs[-1] == pytest.approx(0.1 * 0.01, rel=0.05)


def test_the_speedrun_search_is_optuna_over_the_recipe_one_trial_at_a_time():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).parents[1] / "conf")):
        cfg = compose("train", overrides=["+search=speedrun"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "minimize"
    assert cfg.hydra.sweeper.max_failure_rate == 1.0  # a failed trial does not end the search
    assert cfg.hydra.sweeper.n_jobs == 1 and cfg.hydra.launcher.n_jobs == 1  # timed trials: never two at once
    assert cfg.optim.name == "muon" and cfg.trainer.max_time == "00:00:00:30"
    assert {"optim.lr", "optim.adamw_lr", "model.n_layer", "data.batch_size"} <= set(cfg.hydra.sweeper.params)


@pytest.mark.slow
def test_yoda_dropout_sweeps_three_dropouts_on_yoda(frost_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", "+experiment=yoda_dropout", *FEW_STEPS, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                 env={"FROSTY_DATA_DIR": str(frost_dir)})
    assert "3 of 3 runs finished" in result.stderr
    for dropout in (0.0, 0.2, 0.4):
        hp = last_checkpoint(job_dir(sweep, f"model.dropout={dropout}"))["hyper_parameters"]
        assert hp["model"]["dropout"] == dropout and hp["config"]["data"]["name"] == "yoda"
        assert (hp["model"]["n_embd"], hp["model"]["block_size"], hp["optim"]["lr"]) == (128, 64, 1e-3)


@pytest.mark.slow
def test_dropout_depth_sweeps_twelve_runs_named_by_their_overrides(text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", "+sweep=dropout_depth", "model=tiny", "data.batch_size=4", *FEW_STEPS,
                 "dataset=text", f"data.path={text_file}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "12 of 12 runs finished" in result.stderr
    for dropout in (0.0, 0.1, 0.2, 0.3):
        for layers in (2, 4, 6):
            job = job_dir(sweep, f"model.dropout={dropout}", f"model.n_layer={layers}")
            model = last_checkpoint(job)["hyper_parameters"]["model"]
            assert (model["dropout"], model["n_layer"]) == (dropout, layers)
            assert json.loads((job / "status.json").read_text())["status"] == "finished"
