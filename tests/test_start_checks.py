"""A checkpoint to start from or to resume is checked before training: edited or damaged contents, NaN weights,
nothing left to train and conflicting arguments are refused in one line, and the run's record is left as it was.
Directories that cannot be made are one line too, including hydra.run.dir, which Hydra makes before train.py runs."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY, run, snapshot
from test_reliability import assert_one_line_error


def edited_copy(trained_run: Path, tmp_path: Path, edit) -> Path:
    """A copy of a finished run whose last.ckpt was edited by edit(checkpoint)."""
    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, last)
    return run_dir


def drop_tensor(ckpt):
    del ckpt["state_dict"]["model.blocks.1.mlp.fc.weight"]


def drop_optimizer(ckpt):
    del ckpt["optimizer_states"]


def damage_rng(ckpt):
    ckpt["torch_rng_state"] = torch.zeros(3, dtype=torch.uint8)


def negative_step(ckpt):
    ckpt["global_step"] = -5


def nan_weights(ckpt):
    ckpt["state_dict"]["model.tok_emb.weight"].fill_(float("nan"))


@pytest.mark.parametrize("edit, message", [
    (drop_tensor, "lacks model.blocks.1.mlp.fc.weight: the file was edited or damaged"),
    (drop_optimizer, "holds no optimizer state to go on with"),
    (damage_rng, "holds a damaged random state"),
    (nan_weights, "holds NaN or infinite weights: training cannot go on from them"),
    (negative_step, "holds a damaged step count (global_step=-5)"),
])
def test_a_damaged_checkpoint_is_refused_on_resume_and_the_record_kept(invoke, trained_run, tmp_path, edit, message):
    run_dir = edited_copy(trained_run, tmp_path, edit)
    before = snapshot(run_dir / "checkpoints")
    record = (run_dir / "status.json").read_text()
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=45")
    assert_one_line_error(code, err, message)
    assert snapshot(run_dir / "checkpoints") == before
    assert (run_dir / "status.json").read_text() == record  # still "finished", with its numbers


@pytest.mark.parametrize("args, message", [  # one of each place a resume is refused
    (["scheduler.warmup_steps=-1"], "scheduler.warmup_steps=-1 must be an integer >= 0"),  # the config's checks
    (["model=small"], "a resumed run keeps the config groups it was started with"),
    (["trainer.max_steps=30"], "is at step 30 and trainer.max_steps=30: nothing to train"),
    (["model.n_embd=64"], "model.n_embd"),  # found once the model is built: after the threads are set
    (["trainer.precision=17"], "Precision 17 is invalid"),  # Lightning's refusal, building the Trainer
])
def test_a_refused_resume_leaves_every_file_of_the_run_as_it_was(invoke, trained_run, tmp_path, args, message):
    """Not only status.json and the checkpoints: no event file, no line in train.log, no copy of the refused
    command's config in .hydra/."""
    run_dir = edited_copy(trained_run, tmp_path, lambda ckpt: None)
    before = snapshot(run_dir)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=45", *args)
    assert_one_line_error(code, err, message)
    assert snapshot(run_dir) == before
    assert sorted(p.name for p in run_dir.rglob("*")) == sorted(p.name for p in trained_run.rglob("*"))


def test_a_new_run_from_nan_weights_is_refused_before_training(invoke, trained_run, tmp_path):
    source = edited_copy(trained_run, tmp_path, nan_weights) / "checkpoints" / "last.ckpt"
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=45", "dataset=text",
                          f"data.path={trained_run.parent / 'corpus.txt'}", f"ckpt_path={source}",
                          f"hydra.run.dir={tmp_path / 'new'}")
    assert_one_line_error(code, err, f"{source} holds NaN or infinite weights")
    assert not (tmp_path / "new" / "checkpoints").exists()


def test_a_new_run_from_a_checkpoint_with_nothing_left_to_train_is_refused(invoke, trained_run, tmp_path):
    source = trained_run / "checkpoints" / "last.ckpt"  # at step 30, TINY's max_steps
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={trained_run.parent / 'corpus.txt'}",
                          f"ckpt_path={source}", f"hydra.run.dir={tmp_path / 'new'}")
    assert_one_line_error(code, err, f"{source} is at step 30 and trainer.max_steps=30: nothing to train")
    assert json.loads((tmp_path / "new" / "status.json").read_text())["status"] == "failed"


def test_a_new_run_from_a_checkpoint_reports_its_own_best(invoke, trained_run, tmp_path):
    """A new run's best val loss is its own, as its best.ckpt is: not the best of the run it started from (here
    made one no validation of the new run can reach)."""
    from frosty_lm.report import read_logs

    source = edited_copy(trained_run, tmp_path, lambda ckpt: ckpt["state_dict"].update(
        best_val_loss=torch.tensor(0.001))) / "checkpoints" / "last.ckpt"
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=45", "dataset=text",
                          f"data.path={trained_run.parent / 'corpus.txt'}", f"ckpt_path={source}",
                          f"hydra.run.dir={tmp_path / 'new'}")
    assert code == 0, err
    own = min(loss for _, loss in read_logs(tmp_path / "new")[0]["val/loss"])
    assert json.loads((tmp_path / "new" / "status.json").read_text())["best_val_loss"] == pytest.approx(own)
    best = torch.load(tmp_path / "new" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert float(best["best_val_loss"]) == pytest.approx(own)


def test_a_new_run_from_a_checkpoint_counts_its_own_patience(invoke, trained_run, tmp_path):
    """Early stopping in a new run compares its own validations, not the best of the run it started from."""
    def excellent_and_waiting(ckpt):
        key = next(key for key in ckpt["callbacks"] if "EarlyStop" in key)
        ckpt["callbacks"][key].update(best_score=torch.tensor(0.001), wait_count=1, patience=2)

    source = edited_copy(trained_run, tmp_path, excellent_and_waiting) / "checkpoints" / "last.ckpt"
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=60", "callbacks.early_stopping.patience=2",
                          "dataset=text", f"data.path={trained_run.parent / 'corpus.txt'}", f"ckpt_path={source}",
                          f"hydra.run.dir={tmp_path / 'new'}")
    assert code == 0, err
    assert json.loads((tmp_path / "new" / "status.json").read_text())["steps"] == 60  # no early stop at step 45


def test_resume_and_ckpt_path_together_are_refused(invoke, trained_run, tmp_path):
    run_dir = edited_copy(trained_run, tmp_path, lambda ckpt: None)
    before, record = snapshot(run_dir / "checkpoints"), (run_dir / "status.json").read_text()
    code, _, err = invoke("train.py", f"resume={run_dir}", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}")
    assert_one_line_error(code, err, "conflict: resume= continues a run in its own directory, ckpt_path= starts")
    assert snapshot(run_dir / "checkpoints") == before and (run_dir / "status.json").read_text() == record


def test_resume_of_a_checkpoint_file_says_to_give_its_run(invoke, trained_run):
    last = trained_run / "checkpoints" / "last.ckpt"
    code, _, err = invoke("train.py", f"resume={last}")
    assert_one_line_error(code, err, f"resume={last} is a file: resume= takes a run's directory",
                          f"(here resume={trained_run})", f"give ckpt_path={last}")


def test_resume_of_a_runs_checkpoints_directory_says_to_give_the_run(invoke, trained_run):
    code, _, err = invoke("train.py", f"resume={trained_run / 'checkpoints'}")
    assert_one_line_error(code, err, "takes the run's directory: resume=" + str(trained_run))


def test_a_status_json_that_is_a_directory_is_one_line_and_the_resume_leaves_nothing(invoke, trained_run, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "status.json").unlink()
    (run_dir / "status.json").mkdir()
    before = snapshot(run_dir)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=40")
    assert_one_line_error(code, err, f"a directory is in the way: {run_dir / 'status.json'}")
    after = snapshot(run_dir)
    assert {p: v for p, v in after.items() if p.name != "train.log"} == {p: v for p, v in before.items()
                                                                         if p.name != "train.log"}


def test_a_checkpoints_file_in_the_run_directory_is_one_line(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoints go\\n")
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, f"a file is in the way: {run_dir / 'checkpoints'}")


def test_a_run_directory_that_cannot_be_made_or_a_second_one_for_resume_is_one_line(trained_run, text_file,
                                                                                       tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\\n")
    for where, fragment in ((blocker / "run", "Not a directory"), (blocker, "a file is in the way")):
        result = run("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={where}",
                     cwd=tmp_path, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [f"error: cannot create {where}: {fragment}: choose a writable "
                                                      "directory with paths.outputs_dir=DIR (or hydra.run.dir=DIR)"]
    result = run("train.py", f"resume={trained_run}", f"hydra.run.dir={tmp_path / 'elsewhere'}", cwd=tmp_path,
                 check=False)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"error: resume={trained_run} continues that run in its own directory: leave out "
        f"hydra.run.dir={tmp_path / 'elsewhere'}"]
    assert not (tmp_path / "elsewhere").exists()
    result = run("train.py", "resume=latest", f"paths.outputs_dir={trained_run.parent}",
                 f"hydra.run.dir={tmp_path / 'elsewhere'}", cwd=tmp_path, check=False)  # latest: the same refusal
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: resume=latest continues that run in its own directory: leave out "
        f"hydra.run.dir={tmp_path / 'elsewhere'}"]
    assert not (tmp_path / "elsewhere").exists()


def test_a_run_without_last_ckpt_but_with_best_ckpt_says_to_start_from_best(invoke, trained_run, tmp_path):
    run_dir = edited_copy(trained_run, tmp_path, lambda ckpt: None)
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=45")
    assert_one_line_error(code, err, f"cannot resume {run_dir}: it has no checkpoints/last.ckpt, only "
                          f"checkpoints/best.ckpt: start a new run from that, python train.py ckpt_path=")
    assert "hydra.run.dir" not in err  # which would refuse a directory that holds a checkpoint


def no_validation_yet(ckpt):
    ckpt["state_dict"]["best_val_loss"] = torch.tensor(float("inf"))  # as a run stopped before its first validation


def test_a_checkpoint_from_before_the_first_validation_resumes(invoke, trained_run, tmp_path):
    """Its best val loss is still inf: that is no weight, and no reason to refuse it as NaN or infinite weights."""
    run_dir = edited_copy(trained_run, tmp_path, no_validation_yet)
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=32")
    assert code == 0, err
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 32


def test_an_existing_directory_that_cannot_be_written_is_one_line(monkeypatch, tmp_path):
    from frosty_lm import cli
    from frosty_lm.config import FrostyError

    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # a read-only file system (root or not)
    with pytest.raises(FrostyError, match=f"cannot write to {tmp_path}: choose a writable directory with X=DIR"):
        cli.make_dir(str(tmp_path), "X=DIR")


def test_an_empty_status_json_is_restored_as_it_was(tmp_path):
    from frosty_lm.status import RunRecord

    (tmp_path / "status.json").write_bytes(b"")
    record = RunRecord(tmp_path, resumed=True)
    record.write(status="running")
    record.restore()  # a refused resume of a run whose record was empty: empty again, no error
    assert (tmp_path / "status.json").read_bytes() == b""


def test_an_empty_resume_is_refused_not_a_new_run(invoke, tmp_path):
    code, _, err = invoke("train.py", "resume=", f"paths.outputs_dir={tmp_path}")
    assert code == 1 and err.strip() == "error: resume= is empty: give resume=RUN_DIR or resume=latest"
    assert not list(tmp_path.iterdir())  # no run directory
