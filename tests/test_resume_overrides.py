"""What a resumed run records is what it trains with: optimizer settings given on resume are applied to the
restored optimizer, not only written into the checkpoint."""
import json

import pytest
import torch
import yaml

from conftest import TINY, job_dir


def optimizer_groups(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["hyper_parameters"]["optim"], ckpt["optimizer_states"][0]["param_groups"], ckpt["lr_schedulers"][0]


def test_optim_settings_given_on_resume_train(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    common = [*TINY, "scheduler=constant", "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *common, "trainer.max_steps=10", f"hydra.run.dir={run_dir}")[0] == 0
    _, groups, _ = optimizer_groups(run_dir)
    assert groups[0]["lr"] == 3e-3 and groups[0]["weight_decay"] == 0.1  # conf/optim/adamw.yaml
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20", "optim.lr=0.05",
                          "optim.weight_decay=0.2", "optim.betas=[0.8,0.95]")
    assert code == 0, err
    recorded, groups, schedule = optimizer_groups(run_dir)
    assert recorded["lr"] == 0.05
    assert [g["lr"] for g in groups] == [0.05, 0.05] and schedule["base_lrs"] == [0.05, 0.05]
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]  # decay on matrices only, as configured
    assert all(tuple(g["betas"]) == (0.8, 0.95) for g in groups)


@pytest.mark.slow
def test_a_resume_midway_down_a_cosine_trains_as_the_run_would_have(invoke, text_file, tmp_path):
    """The resumed optimizer starts at the schedule's lr for its step (not the base lr, not the start's): its
    weights after the rest of the schedule are those of a run that was never stopped."""
    common = [*TINY, "scheduler=cosine", "scheduler.warmup_steps=4", "scheduler.decay_steps=30", "dataset=text",
              f"data.path={text_file}"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert invoke("train.py", *common, "trainer.max_steps=30", f"hydra.run.dir={straight}")[0] == 0
    assert invoke("train.py", *common, "trainer.max_steps=12", f"hydra.run.dir={resumed}")[0] == 0
    assert invoke("train.py", f"resume={resumed}", "trainer.max_steps=30")[0] == 0
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (straight, resumed))
    assert a["optimizer_states"][0]["param_groups"] == b["optimizer_states"][0]["param_groups"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.slow
def test_a_sweeps_job_resumes_with_its_own_overrides(invoke, text_file, tmp_path):
    """A sweep job's directory is named by its overrides (1_...,seed=2,..., with = and ,): resume= of it (quoted, as
    the interrupted line prints it) composes conf/ with the job's recorded overrides, its own seed among them."""
    sweep = tmp_path / "sweep"
    code, _, err = invoke("train.py", "-m", *TINY, "trainer.max_steps=10", "dataset=text", f"data.path={text_file}",
                          "seed=1,2", "hydra/launcher=basic", f"hydra.sweep.dir={sweep}")
    assert code == 0, err
    job = job_dir(sweep, "seed=2")
    code, _, err = invoke("train.py", f'resume="{job}"', "trainer.max_steps=20")
    assert code == 0, err
    ckpt = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 20 and ckpt["hyper_parameters"]["config"]["seed"] == 2


def test_a_resume_that_saved_nothing_does_not_count_and_the_runs_own_groups_may_be_repeated(
        invoke, text_file, tmp_path, monkeypatch):
    """A resume composes conf/ with the overrides its last.ckpt records: a resume killed before its first checkpoint
    (its overrides in .hydra/ all the same) does not count. The run's own command may be repeated with resume=
    (its group choices, model=tiny and +sweep=dropout_depth, among them), and ~ in resume= is the home directory."""
    run_dir = tmp_path / "r"
    common = [*TINY, "scheduler=constant", "dataset=text", f"data.path={text_file}", "+sweep=dropout_depth"]
    assert invoke("train.py", *common, "trainer.max_steps=15", f"hydra.run.dir={run_dir}")[0] == 0
    killed = run_dir / ".hydra" / "resumed-2026-12-07_10-00-00-000000"  # what a kill -9 before a checkpoint leaves
    killed.mkdir()
    (killed / "overrides.yaml").write_text("- resume=latest\n- optim.lr=0.001\n- trainer.max_steps=300\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = invoke("train.py", *common, 'resume="~/r"', "trainer.max_steps=20")
    assert code == 0, err
    recorded, groups, _ = optimizer_groups(run_dir)
    assert recorded["lr"] == 3e-3 and groups[0]["lr"] == 3e-3
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=25")  # and again: +sweep= once
    assert code == 0, err
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 25 and ckpt["hyper_parameters"]["overrides"].count("+sweep=dropout_depth") == 1
    record = json.loads((run_dir / "status.json").read_text())  # the overrides that trained it, each key once
    keys = [o.lstrip("+~").split("=", 1)[0] for o in record["overrides"]]
    assert len(keys) == len(set(keys)) and "trainer.max_steps=25" in record["overrides"], record["overrides"]
    assert {o for o in common if not o.startswith("trainer.max_steps=")} <= set(record["overrides"])
    assert not [o for o in record["overrides"] if o.startswith(("optim.lr=", "resume="))], record["overrides"]
    assert record["resumes"][-1]["overrides"] == [f"resume={run_dir}", "trainer.max_steps=25"]
    resumed = max(run_dir.glob(".hydra/resumed-*/config.yaml"), key=lambda p: p.stat().st_mtime)
    config = yaml.safe_load(resumed.read_text())  # the config the resume trained with, not the command's alone
    assert config["model"]["n_embd"] == 32 and config["trainer"]["max_steps"] == 25, config
