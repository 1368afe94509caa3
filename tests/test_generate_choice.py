"""Which checkpoint generate.py samples from without ckpt_path: the best finished run on the asked corpus (default:
the newest run's), or the run chosen with run=latest|DIR; named on stderr with its val loss, step and corpus."""
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import run
from frosty_lm.config import FrostyError
from frosty_lm.run_dirs import newest_run, run_to_resume
from generate import default_checkpoint
from test_reliability import assert_one_line_error

CHOOSE = "(choose with run=latest|DIR or ckpt_path=FILE)"


def fake_run(outputs: Path, name: str, corpus, status, val_loss: float, step: int, age: int,
             source: Path | None = None) -> Path:
    """A run directory as train.py leaves it: status.json, .hydra/config.yaml (with interpolations that only
    resolve inside Hydra), and best.ckpt and last.ckpt, copies of source's best.ckpt carrying val_loss and step
    (or empty files, for the searches that never read them); its last.ckpt written age minutes ago."""
    run_dir = outputs / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "status.json").write_text(json.dumps({"status": status, "best_val_loss": val_loss, "steps": step}))
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"data:\n  name: {corpus}\n  data_dir: ${{oc.env:NOWHERE_SET}}\npaths:\n  output_dir: ${{hydra:run.dir}}\n")
    for ckpt in ("best.ckpt", "last.ckpt"):
        path = run_dir / "checkpoints" / ckpt
        if source is None:
            path.write_bytes(b"")
            continue
        contents = torch.load(source / "checkpoints" / "best.ckpt", weights_only=True)
        contents["state_dict"]["best_val_loss"] = torch.tensor(val_loss)
        contents["global_step"] = step
        torch.save(contents, path)
    os.utime(run_dir / "checkpoints" / "last.ckpt", (1e9 - 60 * age, 1e9 - 60 * age))
    return run_dir


@pytest.fixture(scope="module")
def outputs(trained_run, tmp_path_factory) -> Path:
    """Frost: two finished runs, a better one stopped by Ctrl-C, and the newest, a bad 12-step one; yoda: a better
    finished run (another corpus); a sweep with damaged and foreign files."""
    root = tmp_path_factory.mktemp("choice") / "outputs"
    fake_run(root, "runs/d1/t1", "frost", "finished", 2.1, 1000, age=50, source=trained_run)
    fake_run(root, "runs/d1/t2", "frost", "finished", 1.8123, 2000, age=40, source=trained_run)
    fake_run(root, "runs/d1/t3", "yoda", "finished", 1.2, 800, age=30, source=trained_run)
    fake_run(root, "runs/d1/t4", "frost", "interrupted", 1.5, 1500, age=20, source=trained_run)
    fake_run(root, "runs/d1/t5", "frost", "interrupted", 3.9, 12, age=1, source=trained_run)
    damaged = fake_run(root, "sweeps/d1/t6/job0", "frost", "finished", 0.1, 10, age=60)
    (damaged / "status.json").write_text("{not json")
    foreign = fake_run(root, "sweeps/d1/t6/job1", "frost", "finished", 0.2, 10, age=60)
    (foreign / ".hydra" / "config.yaml").write_text("- a list\n- not a run config\n")
    binary = fake_run(root, "sweeps/d1/t6/job2", "frost", "finished", 0.3, 10, age=60)
    (binary / ".hydra" / "config.yaml").write_bytes(b"\xff\xfe: [\n")
    listed = fake_run(root, "sweeps/d1/t6/job3", "frost", "finished", 0.4, 10, age=60)
    (listed / "status.json").write_text('["finished"]')
    return root


def generate(invoke, outputs: Path, *args: str) -> tuple[int, str, str]:
    return invoke("generate.py", f"paths.outputs_dir={outputs}", "prompt=Snow", "max_new_tokens=5", *args)


def test_the_best_finished_run_on_the_newest_runs_corpus_is_chosen(invoke, outputs):
    code, out, err = generate(invoke, outputs)
    assert code == 0 and out.startswith("Snow"), err
    best = outputs / "runs/d1/t2/checkpoints/best.ckpt"
    assert err.splitlines()[0] == (f"using {best}: best of 2 finished runs on frost, val loss 1.8123 at step 2000 "
                                   f"{CHOOSE}")


def test_corpus_picks_the_best_finished_run_on_that_corpus(invoke, outputs):
    code, _, err = generate(invoke, outputs, "corpus=yoda")
    assert code == 0, err
    assert err.splitlines()[0] == (f"using {outputs}/runs/d1/t3/checkpoints/best.ckpt: best of 1 finished run on "
                                   f"yoda, val loss 1.2000 at step 800 {CHOOSE}")


def test_run_latest_is_the_run_resume_latest_continues(invoke, outputs):
    latest = run_to_resume("latest", outputs)
    assert latest == outputs / "runs/d1/t5"
    code, _, err = generate(invoke, outputs, "run=latest")
    assert code == 0, err
    assert err.splitlines()[0] == (f"using {latest}/checkpoints/best.ckpt: run=latest (status interrupted, corpus "
                                   f"frost), val loss 3.9000 at step 12 {CHOOSE}")


def test_run_latest_without_last_ckpt_is_the_newest_run_by_its_best(invoke, trained_run, tmp_path):
    outputs = tmp_path / "outputs"
    fake_run(outputs, "older", "frost", "finished", 2.0, 100, age=9, source=trained_run)
    newer = fake_run(outputs, "newer", "frost", "finished", 2.5, 50, age=9, source=trained_run)
    (newer / "checkpoints" / "last.ckpt").unlink()  # callbacks.model_checkpoint.save_last=false
    code, _, err = generate(invoke, outputs, "run=latest")
    assert code == 0, err
    assert err.splitlines()[0].startswith(f"using {newer}/checkpoints/best.ckpt: run=latest"), err


def test_run_dir_picks_that_run(invoke, outputs):
    code, _, err = generate(invoke, outputs, f"run={outputs}/runs/d1/t1")
    assert code == 0, err
    assert err.splitlines()[0].startswith(f"using {outputs}/runs/d1/t1/checkpoints/best.ckpt: run={outputs}/runs/d1/t1 "
                                          "(status finished, corpus frost), val loss 2.1000 at step 1000")


def test_without_a_finished_run_the_newest_run_on_the_corpus_is_used_and_said(invoke, trained_run, tmp_path):
    outputs = tmp_path / "outputs"
    fake_run(outputs, "runs/old", "frost", "interrupted", 2.5, 300, age=10, source=trained_run)
    fake_run(outputs, "runs/new", "frost", "failed", 3.0, 20, age=1, source=trained_run)
    fake_run(outputs, "runs/yoda", "yoda", "interrupted", 2.0, 200, age=5, source=trained_run)
    code, _, err = generate(invoke, outputs)
    assert code == 0, err
    assert err.splitlines()[0] == (f"no finished run on frost; using the newest run's {outputs}/runs/new/checkpoints/"
                                   f"best.ckpt (status failed, corpus frost), val loss 3.0000 at step 20 {CHOOSE}")
    _, _, err = generate(invoke, outputs, "corpus=yoda")
    assert err.splitlines()[0].startswith(f"no finished run on yoda; using the newest run's {outputs}/runs/yoda/")


def test_damaged_and_foreign_run_files_are_skipped(tmp_path):
    outputs = tmp_path / "outputs"
    fake_run(outputs, "a", "frost", "finished", 2.0, 100, age=9)
    for name, file, content in [("b", "status.json", b"{"), ("c", "status.json", b"\xff\xfe"),
                                ("d", "status.json", b"[1, 2]"), ("e", ".hydra/config.yaml", b"data: [\n"),
                                ("f", ".hydra/config.yaml", b"data: frost\n"), ("g", ".hydra/config.yaml", b"42\n"),
                                ("h", ".hydra/config.yaml", b"data:\n  name: ${oc.env:NOWHERE_SET}\n"),
                                ("i", "status.json", b'{"status": "finished", "best_val_loss": "low"}'),
                                ("j", "status.json", b'{"status": "finished", "best_val_loss": NaN}')]:
        (fake_run(outputs, name, "frost", "finished", 1.0, 100, age=1) / file).write_bytes(content)
    (fake_run(outputs, "k", "frost", "finished", 1.0, 100, age=1) / ".hydra" / "config.yaml").unlink()
    assert default_checkpoint(str(outputs), "frost") == (outputs / "a" / "checkpoints" / "best.ckpt",
                                                          f"using {outputs / 'a/checkpoints/best.ckpt'}: best of 1 "
                                                          "finished run on frost")
    with pytest.raises(FrostyError, match="no run on corpus yoda"):
        default_checkpoint(str(outputs), "yoda")
    assert newest_run(outputs) is not None


def test_a_run_without_last_ckpt_is_still_chosen_by_its_best(tmp_path):
    outputs = tmp_path / "outputs"
    run_dir = fake_run(outputs, "a", "frost", "finished", 2.0, 100, age=1)
    (run_dir / "checkpoints" / "last.ckpt").unlink()  # callbacks.model_checkpoint.save_last=false
    assert default_checkpoint(str(outputs), None)[0] == run_dir / "checkpoints" / "best.ckpt"


def test_a_corpus_without_runs_lists_the_corpora_with_runs_and_their_files(tmp_path):
    outputs = tmp_path / "outputs"
    fake_run(outputs, "a", "frost", "finished", 2.0, 100, age=2)
    fake_run(outputs, "b", "text\n  path: /data/poems.txt", "finished", 2.0, 100, age=1)
    with pytest.raises(FrostyError, match="its runs are on frost, text:/data/poems.txt, or leave out corpus="):
        default_checkpoint(str(outputs), "poems")
    assert default_checkpoint(str(outputs), "text:/data/poems.txt")[0] == outputs / "b" / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("args, fragments", [
    (["run=latest"], ["no best.ckpt found under", "python train.py"]),
    (["corpus=yoda"], ["no run on corpus yoda under", "python train.py dataset=yoda"]),
    (["corpus=poems"], ["no run on corpus poems under", ": its runs are on frost, or leave out corpus="]),
    (["run={tmp}"], ["run=", "has no checkpoints/best.ckpt", "give a run directory that has one"]),
    (["run=nowhere"], ["run=nowhere does not exist"]),
    (["run={tmp}/x.ckpt"], ["run=", "x.ckpt is a file, not a run directory: give ckpt_path=", "x.ckpt to sample"]),
    (["run={tmp}/outputs/runs/d1"], ["has no checkpoints/best.ckpt (a sweep's directory, whose jobs are runs: "
                             "paths.outputs_dir=", "picks the best of them)"]),
    (["ckpt_path=x.ckpt", "run=latest"], ["ckpt_path=x.ckpt and run=latest conflict", "give one of them"]),
    (["run=latest", "corpus=frost"], ["run=latest and corpus=frost conflict"]),
])
def test_choice_errors_are_one_line(invoke, tmp_path, args, fragments):
    outputs = tmp_path / "outputs"
    (tmp_path / "x.ckpt").write_bytes(b"")
    if "corpus=yoda" in args or "corpus=poems" in args or "run={tmp}/outputs/runs/d1" in args:
        fake_run(outputs, "runs/d1/t1", "frost", "finished", 2.0, 100, age=1)
    code, out, err = generate(invoke, outputs, *(a.format(tmp=tmp_path) for a in args))
    assert_one_line_error(code, err, *fragments)
    assert out == ""


def test_a_damaged_best_ckpt_that_generate_chooses_is_one_line(invoke, trained_run, tmp_path):
    outputs = tmp_path / "outputs"
    run_dir = fake_run(outputs, "a", "frost", "finished", 2.0, 100, age=1, source=trained_run)
    contents = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    torch.save({**contents, "state_dict": [1]}, run_dir / "checkpoints" / "best.ckpt")
    for choice in ([], [f"run={run_dir}"]):  # the default choice, and run=
        code, out, err = generate(invoke, outputs, *choice)
        assert_one_line_error(code, err, f"{run_dir}/checkpoints/best.ckpt is damaged: its weights do not fit")
        assert out == ""


@pytest.mark.slow
def test_no_run_at_all_is_one_line_through_the_entry_point(tmp_path):
    result = run("generate.py", "paths.outputs_dir=runs_here", "prompt=Snow", cwd=tmp_path, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ("error: no best.ckpt found under runs_here (no such directory): train a model "
                                     "first with "
                                     "`python train.py`, or give ckpt_path=PATH")


def test_corpus_text_chooses_among_runs_on_the_newest_runs_file(invoke, trained_run, tmp_path):
    """dataset=text runs on different files do not compare: corpus=text takes the best run on the file of the
    newest text run, and says which file; corpus=text:FILE picks another."""
    outputs = tmp_path / "outputs"
    for name, file, loss, age in (("a", "/poems/a.txt", 1.5, 9), ("b", "/poems/b.txt", 2.5, 5),
                                  ("b2", "/poems/b.txt", 2.2, 7)):
        run_dir = fake_run(outputs, name, "text", "finished", loss, 100, age=age, source=trained_run)
        (run_dir / ".hydra" / "config.yaml").write_text(f"data:\n  name: text\n  path: {file}\n")
    code, _, err = generate(invoke, outputs, "corpus=text")
    assert code == 0, err
    assert err.splitlines()[0].startswith(f"using {outputs}/b2/checkpoints/best.ckpt: best of 2 finished runs on "
                                          "text:/poems/b.txt, val loss 2.2000"), err
    code, _, err = generate(invoke, outputs, "corpus=text:/poems/a.txt")
    assert code == 0 and err.splitlines()[0].startswith(f"using {outputs}/a/checkpoints/best.ckpt: best of 1"), err
