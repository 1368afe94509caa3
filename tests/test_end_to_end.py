"""train.py and generate.py as a user runs them: through their entry points, in this process or in subprocesses."""
import hashlib
import io
import json
import math
import os
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY, call_entry_point


def ckpt_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def frost_run(frost_dir, tmp_path_factory) -> tuple[Path, str]:
    """The command contract: a tiny run on frost leaves checkpoints and a TensorBoard event file. It trains in this
    process, through train.py's entry point, its stdout and stderr piped as a user's `python train.py | tee` pipes
    them (not a terminal: progress lines, no bar); a fresh interpreter would add seconds of imports."""
    work = tmp_path_factory.mktemp("frost")
    run_dir = work / "D"
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, redirect_stdout(output), redirect_stderr(output):
        monkeypatch.chdir(work)
        monkeypatch.setenv("FROSTY_DATA_DIR", str(frost_dir))
        args = ["model=tiny", "dataset=frost", "trainer.max_steps=30", "trainer.val_check_interval=10",
                "callbacks.progress_lines.every_n_steps=5", "callbacks.copied.chars=100", f"hydra.run.dir={run_dir}"]
        code = call_entry_point("train.py", args, monkeypatch)
    assert code == 0, f"train.py exited {code}:\n{output.getvalue()}"
    return run_dir, output.getvalue()


def test_frost_run_leaves_checkpoints_events_and_a_summary(frost_run):
    run_dir, output = frost_run
    assert sorted(p.name for p in run_dir.rglob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert list(run_dir.rglob("events.out.tfevents.*"))
    best = (run_dir / "checkpoints" / "best.ckpt").resolve()
    assert f"best checkpoint: {best}" in output
    assert "bits/char" in output and "sample:" in output
    assert re.search(r"training speed: [\d,]+ characters/s \((32-true|bf16-mixed)\)", output)
    validations = len(re.findall(r"validation at step \d+", output))
    assert validations and re.search(rf"time: [\d:]+ training, [\d:]+ in {validations} validations \(val loss, "
                                     r"sample, checkpoints\)", output)
    prompt = re.search(rf"python generate.py ckpt_path={best} 'prompt=\"(.+)\"' seed=1337", output).group(1)
    assert prompt != "Whose woods these are"  # a prompt from the run's own val split, not a fixed one


def test_a_piped_run_prints_progress_lines_and_one_line_per_validation(frost_run):
    run_dir, output = frost_run
    log = (run_dir / "train.log").read_text()
    for text in (output, log):  # on the console (no terminal: no bar) and in train.log
        assert re.search(r"precision: (bf16-mixed: this CPU computes bf16 natively|fp32 \(32-true\): (this CPU has "
                         r"no native bf16|\S+ caps torch's CPU kernels below native bf16))", text)
        assert re.search(r"time estimate: [\d:]+ for the remaining 19 steps \(\d+ ms/step over the 10 after the "
                         r"first", text)
        steps = [int(s) for s in re.findall(r"step (\d+)/30 \(\d+%\)  train loss \d\.\d{4}  [\d,]+ chars/s  "
                                            r"elapsed [\d:]+  ETA [\d:]+", text)]
        assert steps == [5, 10, 15, 20, 25, 30]
        validations = re.findall(r"validation at step (\d+): val loss \d\.\d{4} \(\d\.\d{4} bpc\), ", text)
        assert validations == ["10", "20", "30"]
    assert "Training ━" not in output  # the Rich bar only on a terminal


def test_a_validation_has_one_step_number_in_console_scalars_samples_and_report(frost_run, capsys):
    from frosty_lm.report import find_runs

    run_dir, output = frost_run
    console = [int(s) for s in re.findall(r"validation at step (\d+)", output)]
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    events.Reload()
    scalars = [e.step for e in events.Scalars("val/loss")]
    samples = [e.step for e in events.Tensors("sample/text_summary")]
    report = [step for step, _ in find_runs([run_dir])[0].curves["val/loss"]]
    copied = [e.step for e in events.Scalars("sample/copied")]  # callbacks.CopiedShare
    images = [e.step for e in events.Images("attention")]
    assert console == scalars == report == [10, 20, 30]
    assert samples == copied == images == [30]  # every 4th validation and the last: a short run gets one of each
    assert all(0 <= e.value <= 1 for e in events.Scalars("sample/copied"))
    assert [e.step for e in events.Scalars("train/loss")][-1] == 30  # the last step's loss, at step 30


def test_a_frost_run_learns_between_its_first_and_last_validation(frost_run):
    events = EventAccumulator(str(frost_run[0]), size_guidance={"scalars": 0})
    events.Reload()
    val = [e.value for e in events.Scalars("val/loss")]
    assert len(val) == 3  # after 10, 20 and 30 steps
    assert val[-1] < val[0] - 0.2, val  # a learner that does not learn (no optimizer step, lr 0, ...) fails here


def test_a_short_run_gets_well_below_an_untrained_models_loss(invoke, text_file, tmp_path):
    """An untrained model predicts every character about equally: its loss is ln(vocabulary size). 80 steps on a
    small regular corpus must take the best val loss below half of that."""
    run_dir = tmp_path / "r"
    code, _, err = invoke("train.py", "model=tiny", "data.batch_size=8", "trainer.max_steps=80", "optim.lr=3e-3",
                          "trainer.val_check_interval=40", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    assert code == 0, err
    untrained = math.log(len(set(text_file.read_text())))
    best = json.loads((run_dir / "status.json").read_text())["best_val_loss"]
    assert best < 0.5 * untrained, (best, untrained)


def test_checkpoint_is_plain_data_with_the_vocabulary(frost_run, frost_dir):
    ckpt = torch.load(frost_run[0] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    vocab = ckpt["hyper_parameters"]["vocab"]
    assert isinstance(vocab, str) and vocab == "".join(sorted(set((frost_dir / "frost.txt").read_text("utf-8"))))
    assert ckpt["hyper_parameters"]["model"]["n_layer"] == 2
    assert ckpt["global_step"] == 30


def test_generate_prints_only_samples_starting_with_the_prompt(frost_run, tmp_path, invoke, monkeypatch):
    ckpt = frost_run[0] / "checkpoints" / "best.ckpt"
    args = [f"ckpt_path={ckpt}", "prompt=Whose woods", "max_new_tokens=100"]
    monkeypatch.chdir(tmp_path)  # (test_generate_input: generate.py's stdout in a process of its own)
    first, again, other = (invoke("generate.py", *args, f"seed={seed}")[1] for seed in (1, 1, 2))
    assert first.startswith("Whose woods")
    assert len(first) == len("Whose woods") + 100 + 1  # the sample and its closing line break
    assert first == again != other
    assert not any(tmp_path.iterdir())  # generate.py writes no files


def test_generate_several_samples_and_greedy(trained_run, invoke):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    _, out, err = invoke("generate.py", f"ckpt_path={ckpt}", "prompt=Snow", "max_new_tokens=20", "num_samples=2")
    first, second = out[:25], out[25:]
    assert len(out) == 2 * (len("Snow") + 20 + 1)
    assert first.startswith("Snow") and second.startswith("Snow") and first.endswith("\n")
    assert first != second  # sample i uses seed + i
    assert "--- sample 2 ---" in err
    greedy = [invoke("generate.py", f"ckpt_path={ckpt}", "prompt=Snow", "max_new_tokens=30", "temperature=0",
                     f"seed={s}")[1] for s in (1, 2)]
    assert greedy[0] == greedy[1]  # greedy decoding does not depend on the seed


def test_generate_uses_the_best_finished_run_when_no_checkpoint_is_given(trained_run, tmp_path, invoke, monkeypatch):
    outputs = tmp_path / "outputs"
    shutil.copytree(trained_run, outputs / "runs" / "r1")
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("generate.py", "prompt=Snow", "max_new_tokens=10")
    assert code == 0 and out.startswith("Snow") and "best.ckpt" not in out  # messages go to stderr only
    corpus = trained_run.parent / "corpus.txt"  # a dataset=text run's corpus is its file: runs on two files differ
    assert f"using outputs/runs/r1/checkpoints/best.ckpt: best of 1 finished run on text:{corpus}, val loss " in err
    other = outputs / "runs" / "r2"  # a better run on another text file: not compared with r1
    shutil.copytree(trained_run, other)
    config = other / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace(str(corpus), str(tmp_path / "other.txt")))
    record = json.loads((other / "status.json").read_text())
    (other / "status.json").write_text(json.dumps({**record, "best_val_loss": 0.5}))
    os.utime(other / "checkpoints" / "last.ckpt", (1, 1))  # older: r1 stays the newest run
    code, out, err = invoke("generate.py", "prompt=Snow", "max_new_tokens=10")
    assert code == 0 and f"outputs/runs/r1/checkpoints/best.ckpt: best of 1 finished run on text:{corpus}" in err
    code, out, err = invoke("generate.py", "prompt=Snow", "max_new_tokens=10", "corpus=text")  # the newest's file
    assert code == 0 and f"outputs/runs/r1/checkpoints/best.ckpt: best of 1 finished run on text:{corpus}" in err
    code, out, err = invoke("generate.py", "prompt=Snow", "max_new_tokens=10", f"corpus=text:{tmp_path / 'other.txt'}")
    assert code == 0 and "outputs/runs/r2/checkpoints/best.ckpt: best of 1 finished run on text:" in err


def test_prompt_outside_the_vocabulary_is_a_clear_error(trained_run, invoke):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    code, out, err = invoke("generate.py", f"ckpt_path={ckpt}", "prompt='Snow Z%'")
    assert code == 1
    assert err.strip() == ("error: prompt characters not in the checkpoint's vocabulary: 'Z', '%'; "
                           "remove or replace them")
    assert out == ""


def test_tensorboard_has_curves_hparams_with_best_val_loss_and_samples(trained_run):
    events = EventAccumulator(str(trained_run), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/bpc", "train/lr", "train/device/items_per_sec",
            "train/device/flops_per_sec", "best/val_loss", "best/val_bpc"} <= scalars
    logged_steps = [e.step for e in events.Scalars("train/loss")]  # every trainer.log_every_n_steps (10) of 30
    assert logged_steps == [10, 20, 30]
    speeds = [e.value for e in events.Scalars("train/device/items_per_sec")]  # characters per second
    assert len(speeds) == 3 and all(speed > 0 for speed in speeds)
    val = [e.value for e in events.Scalars("val/loss")]
    best = [e.value for e in events.Scalars("best/val_loss")]
    assert len(val) == 2 and best[-1] == pytest.approx(min(val))  # validation at steps 15 and 30
    steps = [e.step for e in events.Scalars("val/loss")]  # best's first point once, by the HPARAMS tab's writer
    assert [e.step for e in events.Scalars("best/val_loss")] == steps
    assert [e.step for e in events.Scalars("best/val_bpc")] == steps
    assert [e.value for e in events.Scalars("val/bpc")] == pytest.approx([v / 0.6931471805599453 for v in val])
    plugins = events.PluginTagToContent("hparams")
    experiment = plugins["_hparams_/experiment"].decode("latin-1")
    assert "best/val_loss" in experiment and "model.n_layer" in experiment
    texts = [t for t in events.Tags()["tensors"] if t.startswith("sample")]
    sample = events.Tensors(texts[0])[0].tensor_proto.string_val[0].decode()
    assert sample.startswith("```\n") and sample.endswith("\n```")


def test_text_dataset_run_trains(trained_run):
    first, last = (torch.load(trained_run / "checkpoints" / name, weights_only=True)
                   for name in ("best.ckpt", "last.ckpt"))
    assert last["global_step"] == 30
    hparams = first["hyper_parameters"]
    assert hparams["vocab"] == "".join(sorted(set(Path(hparams["config"]["data"]["path"]).read_text())))
    # the run config once, as composed (with its interpolations, for resume=), and the overrides that composed it;
    # vocab, model, optim, scheduler, and the corpus's text as a resume must find it (its ids' sha256)
    assert set(hparams) == {"vocab", "model", "optim", "scheduler", "config", "overrides", "corpus_sha256"}
    text = Path(hparams["config"]["data"]["path"]).read_text()
    ids = np.array([hparams["vocab"].index(ch) for ch in text], dtype=np.uint8)
    assert hparams["corpus_sha256"] == hashlib.sha256(ids.tobytes()).hexdigest()
    assert "dataset=text" in hparams["overrides"] and not any(o.startswith("hydra.") for o in hparams["overrides"])
    assert hparams["config"]["scheduler"]["decay_steps"] == "${trainer.max_steps}"


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(text_file, tmp_path, invoke):
    common = [*TINY, "model.dropout=0.1", "scheduler=constant", "dataset=text", f"data.path={text_file}",
              "trainer.val_check_interval=10"]  # constant lr: a 20-step and a 40-step run share the schedule
    assert invoke("train.py", *common, "trainer.max_steps=20", f"hydra.run.dir={tmp_path / 'first'}")[0] == 0
    assert invoke("train.py", *common, "trainer.max_steps=40", f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}",
                  f"hydra.run.dir={tmp_path / 'resumed'}")[0] == 0
    assert invoke("train.py", *common, "trainer.max_steps=40", f"hydra.run.dir={tmp_path / 'straight'}")[0] == 0
    resumed = ckpt_weights(tmp_path / "resumed/checkpoints/last.ckpt")
    straight = ckpt_weights(tmp_path / "straight/checkpoints/last.ckpt")
    first = ckpt_weights(tmp_path / "first/checkpoints/last.ckpt")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
    assert not all(torch.equal(resumed[k], first[k]) for k in resumed)  # it did train on from step 20


@pytest.mark.parametrize("every, points", [(4, 2), (0, 0)])  # steps 4 and 5 (the last) of 5; 0: no step logs
def test_step_logs_follow_log_every_n_steps_and_include_the_last_step(invoke, text_file, tmp_path, every, points):
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=5", f"trainer.log_every_n_steps={every}",
                          "dataset=text", f"data.path={text_file}", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "r"), size_guidance={"scalars": 0})
    events.Reload()
    count = {tag: len(events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    assert count.get("train/loss", 0) == points
    if points:  # each point is that step's own loss, not the last logged one written again
        assert len({e.value for e in events.Scalars("train/loss")}) == points
    assert count["val/loss"] == 1


@pytest.mark.slow
def test_a_piped_run_prints_each_line_once(text_file, tmp_path):
    """Lightning's own console handler is not beside Hydra's: each of its lines reaches the console once (and
    train.log), not twice."""
    from conftest import TINY, run

    result = run("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={tmp_path / 'r'}",
                 cwd=tmp_path)
    output = result.stdout + result.stderr
    assert output.count("`Trainer.fit` stopped: `max_steps=") == 1, output
    assert "`Trainer.fit` stopped: `max_steps=" in (tmp_path / "r" / "train.log").read_text()
