"""A run directory received from someone else is safe to resume: the config stored in its checkpoint is data,
and one that would run code, read the environment or write outside the run is refused before anything runs."""
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import snapshot
from test_reliability import assert_one_line_error, malicious_checkpoint


def crafted_run(trained_run: Path, tmp_path: Path, edit) -> Path:
    """A copy of a finished run whose last.ckpt's stored config was edited by edit(config)."""
    run_dir = tmp_path / "received"
    shutil.copytree(trained_run, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    edit(ckpt["hyper_parameters"]["config"])
    torch.save(ckpt, last)
    return run_dir


def resume_is_refused(invoke, run_dir: Path, tmp_path: Path, *fragments: str) -> None:
    before = snapshot(run_dir)
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(run_dir)}
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert_one_line_error(code, err, "was refused", *fragments)
    after = snapshot(run_dir)
    hydra_records = {p for p in after if ".hydra" in p.parts or p.name == "train.log"}  # Hydra's, before Frosty runs
    assert {p: v for p, v in after.items() if p not in hydra_records} == {p: v for p, v in before.items()
                                                                          if p not in hydra_records}
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(run_dir)} == outside  # nothing written elsewhere


def test_a_stored_callback_that_would_unpickle_a_file_is_refused(invoke, trained_run, tmp_path):
    marker, evil = tmp_path / "code-ran", tmp_path / "evil.pt"
    malicious_checkpoint(evil, marker)

    def add_loader(config):
        config["callbacks"]["loader"] = {"_target_": "torch.load", "f": str(evil), "weights_only": False}

    resume_is_refused(invoke, crafted_run(trained_run, tmp_path, add_loader), tmp_path, "'torch.load'",
                      "callbacks.loader._target_")
    assert not marker.exists()


def test_a_stored_file_copy_is_refused(invoke, trained_run, tmp_path):
    victim, source = tmp_path / "victim.txt", tmp_path / "source.txt"
    victim.write_text("mine")
    source.write_text("theirs")

    def add_copy(config):
        config["callbacks"]["copy"] = {"_target_": "shutil.copyfile", "src": str(source), "dst": str(victim)}

    resume_is_refused(invoke, crafted_run(trained_run, tmp_path, add_copy), tmp_path, "'shutil.copyfile'")
    assert victim.read_text() == "mine"


def test_a_stored_environment_interpolation_is_refused(invoke, trained_run, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("ELSEWHERE", str(elsewhere))

    def redirect(config):
        config["callbacks"]["model_checkpoint"]["dirpath"] = "${oc.env:ELSEWHERE}"

    resume_is_refused(invoke, crafted_run(trained_run, tmp_path, redirect), tmp_path, "${oc.env:ELSEWHERE}")
    assert not elsewhere.exists()


@pytest.mark.parametrize("key, value, message", [
    ("logger.tensorboard.name", "../../escaped", "outside the run's directory"),
    ("paths.output_dir", "/tmp/elsewhere", "moves the run's directory"),
    ("data.url", "https://example.com/evil.txt", "not one of Frosty's corpora"),
    ("callbacks.sample_text._args_", ["x"], "sets Hydra's _args_"),
])
def test_other_stored_escapes_are_refused(invoke, trained_run, tmp_path, key, value, message):
    def edit(config):
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value

    resume_is_refused(invoke, crafted_run(trained_run, tmp_path, edit), tmp_path, message)
def test_an_untouched_received_run_resumes_in_place(invoke, trained_run, tmp_path):
    run_dir = crafted_run(trained_run, tmp_path, lambda config: None)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
    assert os.path.isfile(run_dir / "status.json")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no -v1 fork
    assert invoke("train.py", f"resume={run_dir}", "trainer.max_steps=50")[0] == 0  # continues from step 40
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 50


@pytest.mark.parametrize("earlier_module", ["frosty_lm.callbacks", "frosty_lm.checkpoint"])
def test_a_run_whose_config_names_the_checkpoint_callback_where_it_used_to_be_resumes(
        invoke, trained_run, tmp_path, earlier_module):
    """A stored config may name BestAndLastCheckpoint in frosty_lm.callbacks or frosty_lm.checkpoint, where earlier
    versions kept it (it is in frosty_lm.checkpoint_saving, so that reading a checkpoint needs no Lightning): the
    run resumes, and its new checkpoints name it there."""

    def where_it_was(config):
        config["callbacks"]["model_checkpoint"]["_target_"] = f"{earlier_module}.BestAndLastCheckpoint"

    run_dir = crafted_run(trained_run, tmp_path, where_it_was)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert code == 0, err
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 40
    assert last["hyper_parameters"]["config"]["callbacks"]["model_checkpoint"]["_target_"] == (
        "frosty_lm.checkpoint_saving.BestAndLastCheckpoint")  # stored up to date
