"""A run directory received from someone else is safe to resume: resume= composes conf/ with the overrides the
run recorded, and an override that would run code, read the environment or write outside the run, or a link in
the run's directory, is refused before anything is written."""
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

from conftest import snapshot
from test_reliability import assert_one_line_error, malicious_checkpoint


def received(trained_run: Path, tmp_path: Path, *planted: str, older: bool = False) -> Path:
    """A copy of a finished run, with overrides planted where resume= reads them: its last.ckpt's record of them, or
    (older: an older Frosty's checkpoint, which has none) its .hydra/overrides.yaml."""
    run_dir = tmp_path / "received"
    shutil.copytree(trained_run, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    recorded = ckpt["hyper_parameters"].pop("overrides")
    if not older:
        ckpt["hyper_parameters"]["overrides"] = [*recorded, *planted]
    torch.save(ckpt, last)
    overrides = run_dir / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump([*yaml.safe_load(overrides.read_text()), *planted]))
    return run_dir


def resume_is_refused(invoke, run_dir: Path, tmp_path: Path, *fragments: str) -> None:
    before = snapshot(run_dir)
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(run_dir)}
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert_one_line_error(code, err, *fragments)
    after = snapshot(run_dir)
    hydra_records = {p for p in after if ".hydra" in p.parts or p.name == "train.log"}  # Hydra's, before Frosty runs
    assert {p: v for p, v in after.items() if p not in hydra_records} == {p: v for p, v in before.items()
                                                                          if p not in hydra_records}
    assert not [p for p in after if "resumed-" in str(p)]  # the refused resume's config went too
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(run_dir)} == outside  # nothing written elsewhere


def test_a_recorded_override_that_would_unpickle_a_file_is_refused(invoke, trained_run, tmp_path):
    marker, evil = tmp_path / "code-ran", tmp_path / "evil.pt"
    malicious_checkpoint(evil, marker)
    run_dir = received(trained_run, tmp_path, "+callbacks.loader._target_=torch.load", f"+callbacks.loader.f={evil}",
                       "+callbacks.loader.weights_only=false")
    resume_is_refused(invoke, run_dir, tmp_path, "+callbacks.loader._target_=torch.load", "sets")
    assert not marker.exists()


@pytest.mark.parametrize("planted, message", [
    ("+callbacks.copy._target_=shutil.copyfile", "sets callbacks.copy._target_"),
    ("callbacks.model_checkpoint.dirpath=${oc.env:ELSEWHERE}", "calls a resolver"),
    ("logger.tensorboard.name=../../escaped", "writes outside the run's directory"),
    ("callbacks.model_checkpoint.dirpath=/tmp/elsewhere", "writes outside the run's directory"),
    ("paths.output_dir=/tmp/elsewhere", "writes outside the run's directory"),
    ("callbacks.model_checkpoint.dirpath=elsewhere", "writes outside the run's directory"),  # relative to the cwd
    ("callbacks.model_checkpoint.dirpath=${paths.outputs_dir}", "writes outside the run's directory"),
    ("logger.tensorboard.save_dir=elsewhere", "writes outside the run's directory"),
    ("logger.tensorboard.name=${paths.outputs_dir}", "writes outside the run's directory"),
    ("data.url=https://example.com/evil.txt", "downloads from a URL that conf/ does not name"),
    ("hydra.run.dir=/tmp/elsewhere", "sets hydra.run.dir"),
    # a dict or list value is checked key by key, as if each were given alone
    ("+callbacks.evil={_target_:shutil.copyfile,src:a,dst:b}", "sets callbacks.evil._target_"),
    ("+logger.evil=[{_target_:builtins.print}]", "sets logger.evil.0._target_"),
    ("logger.tensorboard={save_dir:/tmp/elsewhere,name:x}", "writes outside the run's directory"),
    ("data={url:'https://example.com/evil.txt'}", "downloads from a URL that conf/ does not name"),
])
@pytest.mark.parametrize("older", [False, True])
def test_other_recorded_escapes_are_refused(invoke, trained_run, tmp_path, monkeypatch, planted, message, older):
    monkeypatch.setenv("ELSEWHERE", str(tmp_path / "elsewhere"))
    resume_is_refused(invoke, received(trained_run, tmp_path, planted, older=older), tmp_path, planted, message)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("content, message", [
    ("{model: tiny}\n", "is not a list of overrides"),
    ("- [not, a, string]\n", "is not a list of overrides"),
    (": [\n", "is not a list of overrides"),
    ("- model.n_layer=[\n", "its recorded overrides do not parse"),
])
def test_a_damaged_overrides_file_is_one_line(invoke, trained_run, tmp_path, content, message):
    run_dir = received(trained_run, tmp_path, older=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(content)
    resume_is_refused(invoke, run_dir, tmp_path, message)


def test_a_checkpoints_damaged_record_of_its_overrides_is_one_line(invoke, trained_run, tmp_path):
    run_dir = received(trained_run, tmp_path, older=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyper_parameters"]["overrides"] = {"model": "tiny"}
    torch.save(ckpt, last)
    resume_is_refused(invoke, run_dir, tmp_path, "last.ckpt records its overrides in a form other than a list")


@pytest.mark.parametrize("link", ["hparams.yaml", "checkpoints", ".hydra"])
def test_a_link_in_a_received_run_is_refused(invoke, trained_run, tmp_path, link):
    """A symbolic link in the run's directory could send a resume's writes anywhere: refused before Hydra or
    Frosty write anything, and the file it points to is left alone."""
    run_dir = received(trained_run, tmp_path)
    target = tmp_path / f"victim-{link}"
    shutil.move(run_dir / link, target)
    os.symlink(target, run_dir / link)
    victim = snapshot(target) if target.is_dir() else {target: target.read_bytes()}
    before = snapshot(run_dir)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert_one_line_error(code, err, f"{run_dir / link} is a symbolic link")
    assert (snapshot(target) if target.is_dir() else {target: target.read_bytes()}) == victim
    assert snapshot(run_dir) == before


def test_a_received_checkpoint_naming_files_elsewhere_deletes_none_of_them(invoke, trained_run, tmp_path):
    """ModelCheckpoint's state names its best checkpoints, and Lightning deletes the one a better score replaces, but
    only inside its checkpoint directory: a file a received run's state names elsewhere stays."""
    run_dir = received(trained_run, tmp_path)
    victim = tmp_path / "victim.ckpt"
    victim.write_text("mine")
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    key = next(key for key in ckpt["callbacks"] if key.startswith("ModelCheckpoint"))
    ckpt["callbacks"][key].update(dirpath=str(run_dir / "checkpoints"), best_model_path=str(victim),
                                  kth_best_model_path=str(victim), best_k_models={str(victim): torch.tensor(99.0)},
                                  best_model_score=torch.tensor(99.0), kth_value=torch.tensor(99.0))
    torch.save(ckpt, last)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert code == 0, err
    assert victim.read_text() == "mine"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_a_fifo_in_a_received_run_is_refused(invoke, trained_run, tmp_path):
    """A FIFO where a record should be would block the resume that reads it: refused in one line instead."""
    run_dir = received(trained_run, tmp_path)
    (run_dir / "status.json").unlink()
    os.mkfifo(run_dir / "status.json")
    resume_is_refused(invoke, run_dir, tmp_path, f"{run_dir / 'status.json'} is no file or directory")


def test_an_untouched_received_run_resumes_in_place(invoke, trained_run, tmp_path):
    run_dir = received(trained_run, tmp_path)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40
    assert os.path.isfile(run_dir / "status.json")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no -v1 fork
    assert invoke("train.py", f"resume={run_dir}", "trainer.max_steps=50")[0] == 0  # continues from step 40
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 50


def test_a_run_whose_settings_conf_no_longer_gives_is_refused_naming_them(invoke, trained_run, tmp_path):
    """The checkpoint records the settings it trained with; if conf/ and the recorded overrides now compose to
    others, the resume is refused naming the key and the override that keeps it; with it, the run goes on.
    Nothing in the checkpoint is composed: its record is only compared."""
    run_dir = received(trained_run, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyper_parameters"]["config"]["data"]["val_fraction"] = 0.2  # as if conf/ had said 0.2 when it trained
    torch.save(ckpt, last)
    resume_is_refused(invoke, run_dir, tmp_path, "conf/ now gives data.val_fraction=0.1 where the run recorded "
                      "data.val_fraction=0.2", "add data.val_fraction=0.2 to the command")
    before = snapshot(run_dir / "checkpoints")  # another split than the run's: its val losses would not compare
    for split in ("data.val_fraction=0.3", "data={val_fraction:0.3}"):
        code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40", split)
        assert_one_line_error(code, err, "data.val_fraction=0.3: a resumed run keeps its val split, "
                              "data.val_fraction=0.2")
        assert snapshot(run_dir / "checkpoints") == before
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40", "data.val_fraction=0.2")
    assert code == 0, err
    assert torch.load(last, weights_only=True)["hyper_parameters"]["config"]["data"]["val_fraction"] == 0.2


def test_the_best_run_search_reads_a_planted_config_without_resolving_it(trained_run, tmp_path, monkeypatch):
    """generate.py's choice of run reads each run's .hydra/config.yaml as written: a planted resolver is not
    called (here it would read the environment and make the run look like one on the corpus asked for)."""
    from generate import on_corpus, run_corpus

    run_dir = received(trained_run, tmp_path)
    config = run_dir / ".hydra" / "config.yaml"
    planted = yaml.safe_load(config.read_text())
    planted["data"]["name"] = "${oc.env:CORPUS}"
    config.write_text(yaml.safe_dump(planted))
    monkeypatch.setenv("CORPUS", "frost")
    assert run_corpus(run_dir) is None and not on_corpus(run_corpus(run_dir), "frost")


def test_the_best_run_search_reads_a_planted_config_of_nested_aliases_at_once(trained_run, tmp_path):
    """A few hundred bytes of YAML aliases nested ten-fold per level would expand to a billion values if copied out:
    read plainly, the run's corpus is still found, at once."""
    from generate import run_corpus

    run_dir = received(trained_run, tmp_path)
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]"
                                                         for i in range(1, 9)]
    (run_dir / ".hydra" / "config.yaml").write_text("\n".join(levels) + "\ndata: {name: frost, path: *a8}\n")

    def give_up(signum, frame):
        raise TimeoutError("the YAML's aliases were expanded")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(30)
    try:
        assert run_corpus(run_dir) == "frost"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
