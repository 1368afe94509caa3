"""Bad input gets one clear line and exit status 1, and nothing of earlier runs is touched;
interrupted runs resume exactly; checkpoints are written atomically and loaded safely."""
import json
import os
import re
import shutil
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import QUICK, TINY, poem, run, snapshot, start_training, wait_for_checkpoint
from frosty_lm.checkpoint_saving import AtomicCheckpointIO


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.fixture
def earlier_run(trained_run, tmp_path) -> Path:
    """A copy of a finished run, whose files the failing commands must leave alone."""
    copy = tmp_path / "earlier"
    shutil.copytree(trained_run, copy)
    return copy


# ---- train.py: configuration ---------------------------------------------------------------

SLOW = pytest.mark.slow  # each family of checks keeps one or two cases in the default run; CI runs them all


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.n_embd=30", "model.n_head=4"], "model.n_embd=30 is not divisible by model.n_head=4"),
        pytest.param(["model.n_layer=0"], "model.n_layer=0 must be a positive integer", marks=SLOW),
        pytest.param(["model.block_size=-4"], "model.block_size=-4 must be a positive integer", marks=SLOW),
        pytest.param(["model.dropout=1.0"], "model.dropout=1.0 must be a number in [0, 1)", marks=SLOW),
        pytest.param(["model.dropout=-0.2"], "model.dropout=-0.2 must be a number in [0, 1)", marks=SLOW),
        (["trainer.max_steps=0"], "trainer.max_steps=0 must be a positive integer"),
        pytest.param(["trainer.max_steps=-3"], "trainer.max_steps=-3 must be a positive integer", marks=SLOW),
        pytest.param(["trainer.val_check_interval=0"], "trainer.val_check_interval=0 must be a positive integer",
                     marks=SLOW),
        (["data.batch_size=0"], "data.batch_size=0 must be a positive integer"),
        pytest.param(["data.batch_size=-2"], "data.batch_size=-2 must be a positive integer", marks=SLOW),
        pytest.param(["data.val_fraction=0"], "data.val_fraction=0.0 must be between 0 and 1", marks=SLOW),
        pytest.param(["data.val_fraction=1.5"], "data.val_fraction=1.5 must be between 0 and 1", marks=SLOW),
        (["model.block_size=5000"], "the train split of"),
        pytest.param(["model.block_size=600", "data.val_fraction=0.05"], "the val split of", marks=SLOW),
        pytest.param(["scheduler.decay_steps=0"], "scheduler.decay_steps=0 must be a positive integer", marks=SLOW),
        (["scheduler.name=linear"], "scheduler.name='linear' must be constant or cosine"),
        (["scheduler.name=constant"], "scheduler.decay_steps is not a setting of scheduler (name, warmup_steps); "
                                      "scheduler=NAME switches scheduler with its settings, scheduler.name alone"),
        (["optim.name=muon"], "optim.name=muon: optim=NAME switches optim with its settings, optim.name alone"),
        pytest.param(["model.position=rope", "model.n_head=3"], "(e.g. model.n_embd=30)", marks=SLOW),  # even heads
        pytest.param(["scheduler.warmup_steps=-5"], "scheduler.warmup_steps=-5 must be an integer >= 0", marks=SLOW),
        pytest.param(["scheduler.min_lr_ratio=-1"], "scheduler.min_lr_ratio=-1.0 must be a number in [0, 1]",
                     marks=SLOW),  # a negative lr
        (["trainer.max_time=5"], "trainer.max_time=5 must be a time budget DD:HH:MM:SS, e.g. trainer.max_time="),
        pytest.param(["trainer.max_time=abc"], "trainer.max_time='abc' must be a time budget DD:HH:MM:SS", marks=SLOW),
        pytest.param(["trainer.max_time=00:00:00:00"], "trainer.max_time='00:00:00:00' must be longer than no time",
                     marks=SLOW),
        pytest.param(["trainer.num_sanity_val_steps=abc"],
                     "trainer.num_sanity_val_steps='abc' must be an integer >= -1", marks=SLOW),
        pytest.param(["trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be a positive integer, or -1",
                     marks=SLOW),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be a positive integer, or -1 (no limit"),
        (["data.block_size=64"], "data.block_size=64 must be model.block_size (32), which it follows: set "
                                 "model.block_size instead"),
        (["~data"], "data is not set: choose one of its options, dataset=NAME"),
        (["~model"], "model is not set: choose one of its options, model=NAME"),
        pytest.param(["+trainer.accumulate_grad_batches=0"],
                     "trainer.accumulate_grad_batches=0 must be a positive integer", marks=SLOW),
        pytest.param(["callbacks.progress_lines.every_seconds=abc"],
                     "callbacks.progress_lines.every_seconds='abc' must be a positive number of seconds, or null",
                     marks=SLOW),
        (["callbacks.sample_text.temperature=-1"], "callbacks.sample_text.temperature=-1 must be a number >= 0"),
        (["optim.lr=1e39"], "optim.lr=1e+39 must be a positive number (at most 3.4e38"),
        pytest.param(["trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val=nan must be a number >= 0",
                     marks=SLOW),
        pytest.param(["trainer.devices=-5"], "trainer: `devices` selected with `CPUAccelerator` should be",
                     marks=SLOW),
        (["trainer.max_steps=1e3"], "trainer.max_steps=1000.0 must be a positive integer"),  # not the interpolation's
        (["model.n_embd=100000000000000000000"], "model.n_embd=100000000000000000000 must be a positive integer (at"),
        (["callbacks.throughput.window_size=0"], "callbacks.throughput.window_size=0 must be an integer >= 2"),
        pytest.param(["callbacks.copied.seed=abc"], "callbacks.copied.seed='abc' must be an integer in [0, 2**32)",
                     marks=SLOW),
        pytest.param(["callbacks.sample_text.seed=1180591620717411303424"],
                     "callbacks.sample_text.seed=1180591620717411303424 must be an integer in [0, 2**32)", marks=SLOW),
        pytest.param(["callbacks.copied.temperature=nan"], "callbacks.copied.temperature=nan must be a number >= 0",
                     marks=SLOW),
        pytest.param(["callbacks.early_stopping.min_delta=-1"],
                     "callbacks.early_stopping.min_delta=-1 must be a number >= 0", marks=SLOW),
        pytest.param(["callbacks.model_checkpoint.save_top_k=-5"],
                     "callbacks.model_checkpoint: Invalid value for save_top_k=-5. Must be >= -1", marks=SLOW),
        (["~scheduler"], "scheduler is not set: choose one of its options, scheduler=NAME"),
        (["~seed"], "seed is not set: give it a value (seed=...) rather than remove it"),
        pytest.param(["~summary_sample_chars"], "summary_sample_chars is not set: give it a value", marks=SLOW),
        (["trainer.accelerator=foo"], "You selected an invalid accelerator name: `accelerator='foo'`"),
        pytest.param(["trainer.precision=17"], "Precision 17 is invalid", marks=SLOW),
    ],
)
def test_bad_config_is_one_line_and_touches_nothing(invoke, text_file, earlier_run, tmp_path, overrides, message):
    before = snapshot(earlier_run)
    new_dir = tmp_path / "new"
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", *overrides,
                          f"hydra.run.dir={new_dir}")
    assert_one_line_error(code, err, message)
    assert snapshot(earlier_run) == before
    assert not (new_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [(["model=huge"], "Could not find 'model/huge'"),  # Hydra lists the group's options after it
     (["+experiment=nope"], "Could not find 'experiment/nope'"),
     (["experiment=speedrun"], "use +experiment=speedrun"),
     (["trainer.max_step=3"], "Could not override 'trainer.max_step'"),
     (["seeed=3"], "Could not override 'seeed'"),
     (["-m", "model.dropout=0.1,0.2", "model.colour=1"], "Could not override 'model.colour'"),  # before any job
     # a value of the wrong type for the model's schema (config.ModelConfig)
     (["model.dropout=abc"], "Value 'abc' of type 'str' could not be converted to Float"),
     (["model.bias=maybe"], "Value 'maybe' is not a valid bool"),
     (["optim.lr=fast"], "Value 'fast' of type 'str' could not be converted to Float"),
     (["scheduler.warmup_steps=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
     (["data.batch_size=x"], "Value 'x' of type 'str' could not be converted to Integer"),
     ],
)
def test_an_option_or_setting_that_does_not_exist_or_a_mistyped_value_is_hydras_own_message(
        invoke, text_file, tmp_path, overrides, message):
    flags = [o for o in overrides if o.startswith("-")]  # before the overrides, as Hydra's command line takes them
    code, _, err = invoke("train.py", *flags, *TINY, "dataset=text", f"data.path={text_file}",
                          *[o for o in overrides if o not in flags], f"hydra.run.dir={tmp_path / 'r'}",
                          f"hydra.sweep.dir={tmp_path / 's'}")
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not list(tmp_path.glob("[rs]"))  # no run or sweep directory


def test_a_setting_the_model_does_not_take_is_one_line_and_generate_takes_only_its_own(invoke, text_file, tmp_path):
    code, _, err = invoke("train.py", "dataset=text", f"data.path={text_file}", "+model.colour=3",
                          f"hydra.run.dir={tmp_path / 'r'}")  # the model takes no more than its own settings
    assert_one_line_error(code, err, "colour")
    code, _, err = invoke("train.py", "dataset=text", f"data.path={text_file}", "+optim.momentum=0.9",
                          f"hydra.run.dir={tmp_path / 'r'}")  # a key of optim=muon's, not adamw's
    assert_one_line_error(code, err, "optim.momentum is not a setting of optim (betas, lr, name, weight_decay)")
    code, _, err = invoke("generate.py", "promt=Whose woods")
    assert code == 1 and "Could not override 'promt'" in err and "Traceback" not in err, err


def test_a_removed_setting_that_conf_refers_to_and_two_modes_at_once_are_one_line(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("train.py", "~paths")  # hydra.run.dir refers to paths.outputs_dir
    assert_one_line_error(code, err, "hydra.run.dir: Interpolation key 'paths.outputs_dir' not found")
    for script in ("train.py", "generate.py"):
        code, _, err = invoke(script, "--cfg", "job", "--info")
        assert_one_line_error(code, err, "Only one of --run, --multirun, --cfg, --info")
    assert not list(tmp_path.iterdir())


def test_a_run_directory_in_use_is_refused_and_left_alone(invoke, earlier_run, text_file):
    before = snapshot(earlier_run)
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={earlier_run}")
    assert_one_line_error(code, err, "already holds a run", f"resume={earlier_run}")
    assert snapshot(earlier_run) == before
    for inside in (earlier_run / "checkpoints", earlier_run.parent):  # its checkpoints' directory; a sweep's
        (earlier_run.parent / "multirun.yaml").write_text("hydra: {}\n")
        code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"hydra.run.dir={inside}")
        assert_one_line_error(code, err, *(("already holds a run", f"resume={earlier_run}")
                                           if inside.name == "checkpoints" else ("holds a sweep",)))
        assert snapshot(earlier_run) == before
    code, _, err = invoke("train.py", f"resume={earlier_run.parent}")  # a sweep's directory: one of its jobs
    assert_one_line_error(code, err, f"{earlier_run.parent} is a sweep's directory: resume one of its jobs")
    failed = earlier_run.parent / "failed_sweep"  # a sweep whose jobs all failed before a checkpoint
    (failed / "0_seed=1" / ".hydra").mkdir(parents=True)
    (failed / "multirun.yaml").write_text("hydra: {}\n")
    code, _, err = invoke("train.py", "-m", *TINY, "dataset=text", f"data.path={text_file}", "seed=1,2",
                          f"hydra.sweep.dir={failed}")  # its summary would count the earlier jobs
    assert_one_line_error(code, err, "already holds a sweep's runs: choose another hydra.sweep.dir")
    assert sorted(p.name for p in failed.iterdir()) == ["0_seed=1", "multirun.yaml"]


def test_runs_started_one_after_the_other_get_their_own_directories(invoke, text_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*TINY, "trainer.max_steps=1", "dataset=text", f"data.path={text_file}"]
    results = [invoke("train.py", *args) for _ in range(2)]  # usually within the same second
    assert [r[0] for r in results] == [0, 0], results
    runs = {p.parents[1] for p in (tmp_path / "outputs" / "runs").rglob("last.ckpt")}
    assert len(runs) == 2
    # named to the microsecond, then by the dataset and model
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-\d{6}_text_tiny", run.name) for run in runs)


# ---- train.py: data ------------------------------------------------------------------------

def corpus_case(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.txt"
    if kind == "empty":
        path.write_text("")
    elif kind == "directory":
        path.mkdir()
    elif kind == "latin1":
        path.write_bytes(("snow and ice\n" * 50).encode() + "caf\xe9\n".encode("latin-1") + b"more text\n" * 50)
    elif kind == "one_char":
        path.write_text("a" * 5000)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist: give an existing UTF-8 file with data.path="),
        ("empty", "is empty"),
        ("directory", "is a directory, not a file"),
        ("latin1", "is not valid UTF-8 (byte 653): convert it to UTF-8, or set data.decode_errors=replace"),
        ("one_char", "only one distinct character"),
    ],
)
def test_bad_corpus_file(invoke, tmp_path, kind, message):
    path = corpus_case(tmp_path, kind)
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, message)


def test_text_dataset_needs_a_path(invoke, tmp_path):
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "data.path has no value")


@pytest.mark.parametrize("script, key", [("train.py", "callbacks.sample_text.prompt"), ("train.py", "model.n_layer"),
                                         ("generate.py", "prompt")])
def test_an_interpolation_of_nothing_names_its_key_and_says_what_it_is(invoke, tmp_path, script, key):
    code, out, err = invoke(script, f"{key}=${{nothing}}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, f"{key}: Interpolation key 'nothing' not found; ${{...}} in a value names "
                                     "another setting (generate.py's prompt writes the characters as \\${)")
    assert out == "" and not (tmp_path / "r" / "checkpoints").exists()


def test_a_removed_trainer_or_paths_is_one_line_without_the_interpolation_hint(invoke, tmp_path):
    code, _, err = invoke("train.py", "~trainer", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "trainer is not set: choose one of its options, trainer=NAME")
    code, _, err = invoke("train.py", "~paths", f"hydra.run.dir={tmp_path / 'r'}")  # conf/'s own ${paths...}
    assert_one_line_error(code, err, "trainer.default_root_dir: Interpolation key 'paths.output_dir' not found")
    assert "names another setting" not in err


@pytest.mark.parametrize("script, key", [("generate.py", "prompt"), ("train.py", "callbacks.sample_text.prompt")])
def test_a_prompt_that_names_a_number_is_not_told_to_quote_it(invoke, text_file, tmp_path, script, key):
    corpus = ["dataset=text", f"data.path={text_file}"] if script == "train.py" else []
    code, _, err = invoke(script, f"{key}=${{seed}}", *corpus, f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, f"{key}=${{seed}} was read as a number, not text: ${{...}} names another "
                                     "setting")


def test_an_interpolation_read_with_get_is_named_by_its_override(invoke, tmp_path):
    code, _, err = invoke("train.py", "threads=${nothing}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "threads: Interpolation key 'nothing' not found; ${...} in a value names")


def test_an_escaped_interpolation_does_not_bring_the_interpolation_hint(invoke, tmp_path):
    code, _, err = invoke("train.py", "~paths", "callbacks.sample_text.prompt=\\${x}", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(code, err, "trainer.default_root_dir: Interpolation key 'paths.output_dir' not found")
    assert "names another setting" not in err


def test_a_callbacks_prompt_cannot_hold_an_escaped_interpolation(invoke, text_file, tmp_path):
    """Hydra's instantiate resolves the callback's config, and then the escaped value's ${x} again: one line."""
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}",
                          "callbacks.sample_text.prompt=a\\${x}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "callbacks.sample_text.prompt: Interpolation key 'x' not found")


def test_a_sweep_jobs_status_records_the_line_the_console_shows():
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError

    from frosty_lm.cli import user_message

    cfg = OmegaConf.create({"seed": 1})
    OmegaConf.set_struct(cfg, True)
    with pytest.raises(ConfigAttributeError) as removed:
        cfg.summary_sample_chars  # noqa: B018 (read, as train.py reads it)
    assert user_message(removed.value) == ("summary_sample_chars is not set: give it a value "
                                           "(summary_sample_chars=...) rather than remove it")


def test_an_override_holding_an_interpolation_does_not_hide_another_error(invoke, tmp_path):
    code, out, err = invoke("generate.py", "prompt=1e5", "device=${nothing}", f"ckpt_path={tmp_path / 'none.ckpt'}")
    assert_one_line_error(code, err, "prompt=1e5 was read as a number, not text: quote it")


def test_invalid_utf8_can_be_replaced(invoke, tmp_path):
    path = corpus_case(tmp_path, "latin1")
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=2", "dataset=text", f"data.path={path}",
                          "data.decode_errors=replace", f"hydra.run.dir={tmp_path / 'r'}")
    assert code == 0, err
    vocab = torch.load(tmp_path / "r/checkpoints/last.ckpt", weights_only=True)["hyper_parameters"]["vocab"]
    assert "\ufffd" in vocab


def test_another_text_given_as_a_named_corpus_is_refused_not_trained_under_its_name(invoke, text_file, tmp_path):
    """dataset=frost data.path=FILE reads FILE as frost (a copy elsewhere): a different text would train, be named
    and be chosen by generate.py's corpus=frost as frost."""
    code, _, err = invoke("train.py", *TINY, "dataset=frost", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, f"data.path={text_file} is not the frost corpus (sha256 ",
                          f"for your own text, use dataset=text data.path={text_file}")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_corpus_that_cannot_be_downloaded(invoke, tmp_path):
    code, _, err = invoke("train.py", *TINY, "dataset=frost", f"data.data_dir={tmp_path / 'corpora'}",
                          f"data.url={(tmp_path / 'nowhere.txt').as_uri()}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "could not download", "FROSTY_DATA_DIR", "frost.txt",
                          "dataset=text data.path=FILE")
    assert not (tmp_path / "corpora" / "frost.txt").exists()
    record = json.loads((tmp_path / "r" / "status.json").read_text())
    assert record["status"] == "failed" and record["training_started"] is False  # the report leaves it out


def test_download_with_wrong_sha256_is_refused_and_not_kept(invoke, tmp_path, text_file):
    code, _, err = invoke("train.py", *TINY, "dataset=frost", f"data.data_dir={tmp_path / 'corpora'}",
                          f"data.url={text_file.as_uri()}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "has sha256", "expected 51b38742")
    assert list((tmp_path / "corpora").iterdir()) == []


def test_local_corpus_with_wrong_sha256_is_refused(invoke, tmp_path, text_file):
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "frost.txt").write_text(text_file.read_text())
    code, _, err = invoke("train.py", *TINY, "dataset=frost", f"data.data_dir={tmp_path / 'corpora'}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "expected 51b38742", "delete it to download it again")


def test_nan_loss_stops_the_run_with_its_step(invoke, text_file, tmp_path):
    code, _, err = invoke("train.py", *TINY, "optim.lr=1e30", "trainer.gradient_clip_val=null", "dataset=text",
                          f"data.path={text_file}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "the training loss is nan at step 2",
                          "start again with a lower learning rate (optim.lr=5e+29)")
    # no validation ran: no checkpoint (the state at the stop would give NaN again, whatever the lr)
    assert not list((tmp_path / "r" / "checkpoints").glob("*.ckpt"))


def test_a_setting_lightning_checks_only_as_it_trains_is_one_line(invoke, text_file, tmp_path):
    code, _, err = invoke("train.py", *TINY, "callbacks.model_checkpoint.monitor=foo", "dataset=text",
                          f"data.path={text_file}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "`ModelCheckpoint(monitor='foo')` could not find the monitored key")
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


class PoisonWeights(L.Callback):
    """Test-only: sets the token embedding to `value` before step `at`: NaN makes the weights themselves NaN, a
    huge finite value makes that step's forward overflow (finite weights, a NaN loss)."""

    def __init__(self, at: int, value: float = float("nan")) -> None:
        self.at, self.value = at, value

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.at:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(self.value)


def test_a_nan_stop_keeps_last_ckpt_at_the_last_validation_and_says_how_to_continue(invoke, text_file, tmp_path):
    run_dir = tmp_path / "r"
    code, _, err = invoke("train.py", *TINY, "+callbacks.poison._target_=test_reliability.PoisonWeights",
                          "+callbacks.poison.at=22", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert_one_line_error(code, err, "the training loss is nan at step 22: training stopped",
                          f"continue from the last validation's {last}",
                          f"python train.py resume={run_dir} optim.lr=0.0015")
    state = torch.load(last, weights_only=True)  # the weights at the stop are NaN: last.ckpt keeps step 15's
    assert state["global_step"] == 15 and all(torch.isfinite(t).all() for t in state["state_dict"].values())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def test_a_nan_stop_with_finite_weights_keeps_the_last_validation_and_its_advice_continues(invoke, text_file,
                                                                                             tmp_path):
    run_dir, checkpoints = tmp_path / "r", tmp_path / "r" / "checkpoints"
    code, _, err = invoke("train.py", *TINY, "+callbacks.poison._target_=test_reliability.PoisonWeights",
                          "+callbacks.poison.at=22", "+callbacks.poison.value=1e30", "dataset=text",
                          f"data.path={text_file}", f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "the training loss is nan at step 22: training stopped",
                          f"python train.py resume={run_dir} optim.lr=0.0015")
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 15  # not the poisoned state
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "failed" and record["steps"] == 15  # as last.ckpt holds it
    # (a run with a test-only callback is not resumed: resume= refuses recorded _target_ overrides) its state goes on
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", "optim.lr=0.0015",
                          f"ckpt_path={checkpoints / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'next'}")
    assert code == 0, err
    last = torch.load(tmp_path / "next" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 30 and last["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 0.0015


# ---- generate.py ---------------------------------------------------------------------------

def malicious_checkpoint(path: Path, marker: Path) -> None:
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "hyper_parameters": {"vocab": "ab", "model": {}}, "payload": RunsCode()}, path)


def bad_checkpoint(tmp_path: Path, trained_run: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "truncated":
        data = (trained_run / "checkpoints" / "best.ckpt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("text", "is not a readable checkpoint"),
        ("truncated", "is not a readable checkpoint (truncated"),
        ("foreign", "is not a Frosty checkpoint"),
    ],
)
def test_generate_refuses_bad_checkpoints(invoke, trained_run, tmp_path, kind, message):
    path = bad_checkpoint(tmp_path, trained_run, kind)
    code, out, err = invoke("generate.py", f"ckpt_path={path}")
    assert_one_line_error(code, err, message)
    assert out == ""


def test_checkpoint_that_would_run_code_is_refused_everywhere(invoke, text_file, tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    malicious_checkpoint(evil, marker)
    code, _, err = invoke("generate.py", f"ckpt_path={evil}")
    assert_one_line_error(code, err, "was refused", "posix.system")
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", f"ckpt_path={evil}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "was refused")
    assert not marker.exists()


def test_generate_without_any_checkpoint(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("generate.py")
    assert_one_line_error(code, err, "no best.ckpt found under outputs (no such directory)", "python train.py")


@pytest.mark.parametrize(
    "option, message",
    [
        ("max_new_tokens=-1", "max_new_tokens=-1 must be an integer >= 0"),
        ("temperature=-0.5", "temperature=-0.5 must be a number >= 0 (0 means greedy decoding)"),
        ("top_p=0", "top_p=0 must be a number in (0, 1]"),
        ("top_p=1.5", "top_p=1.5 must be a number in (0, 1]"),
        ("top_k=0", "top_k=0 must be an integer >= 1"),
        ("num_samples=0", "num_samples=0 must be an integer >= 1"),
        ("temperature=nan", "temperature=nan must be a number >= 0"),
        ("temperature=inf", "temperature=inf must be a number >= 0"),
        ("temperature=warm", "temperature='warm' must be a number >= 0"),
        ("temperature=null", "temperature=null must be a number >= 0"),
        ("top_p=nan", "top_p=nan must be a number in (0, 1]"),
        ("max_new_tokens=1.5", "max_new_tokens=1.5 must be an integer"),
        ("seed=abc", "seed='abc' must be an integer"),
        ("seed=-1", "seed=-1 must be an integer in [0, 2**32)"),
        ("seed=1180591620717411303424", "seed=1180591620717411303424 must be an integer in [0, 2**32)"),
        ("top_k=true", "top_k=true must be an integer"),
        ("device=tpu9000", "device='tpu9000' cannot be used here"),
        ("device=1.5", "device=1.5 was read as a number, not text: quote it"),
        ("ckpt_path=[a,b]", "ckpt_path=[a,b] was read as a list, not text"),
        ("paths.outputs_dir=null", "paths.outputs_dir=null must be a directory"),
        ("prompt={a:1}", "prompt={a:1} was read as a mapping, not text"),
    ],
)
def test_generate_refuses_bad_options(invoke, trained_run, option, message):
    code, out, err = invoke("generate.py", f"ckpt_path={trained_run / 'checkpoints/best.ckpt'}", option)
    assert_one_line_error(code, err, message)
    assert out == ""


def test_generate_clamps_top_k_and_starts_an_empty_prompt_on_a_line_break(invoke, trained_run):
    ckpt = f"ckpt_path={trained_run / 'checkpoints/best.ckpt'}"
    code, clamped, err = invoke("generate.py", ckpt, "top_k=100000", "max_new_tokens=40", "prompt=Snow")
    _, unrestricted, _ = invoke("generate.py", ckpt, "top_k=null", "max_new_tokens=40", "prompt=Snow")
    assert code == 0 and clamped == unrestricted  # top_k above the vocabulary size keeps every character
    code, empty, _ = invoke("generate.py", ckpt, "prompt=", "max_new_tokens=10")
    assert code == 0 and empty.startswith("\n") and len(empty) == 1 + 10 + 1


# ---- interruption, resume, atomic checkpoints -------------------------------------------

@pytest.mark.slow
def test_ctrl_c_saves_a_last_checkpoint_and_exits_cleanly(text_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_training(run_dir, text_file, "trainer.max_steps=100000")
    step = wait_for_checkpoint(run_dir / "checkpoints/last.ckpt", proc, 10)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "interrupted at step" in output and f"resume={run_dir}" in output and "Traceback" not in output
    stopped = int(re.search(r"interrupted at step (\d+)", output).group(1))
    assert stopped > step
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == stopped


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_uninterrupted_weights(text_file, tmp_path):
    run_dir = tmp_path / "killed"
    proc = start_training(run_dir, text_file, "trainer.max_steps=100")
    wait_for_checkpoint(run_dir / "checkpoints/last.ckpt", proc, 20)
    proc.kill()
    proc.wait()
    result = run("train.py", f"resume={run_dir}", cwd=tmp_path)
    assert f"resuming {run_dir}" in result.stdout + result.stderr
    straight = start_training(tmp_path / "straight", text_file, "trainer.max_steps=100")
    assert straight.wait(timeout=300) == 0
    resumed = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    uninterrupted = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)
    assert resumed["global_step"] == uninterrupted["global_step"] == 100
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in uninterrupted["state_dict"].items())
    assert resumed["callbacks"]
    assert float(resumed["state_dict"]["best_val_loss"]) == float(uninterrupted["state_dict"]["best_val_loss"])
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # curves continue in one run


@pytest.mark.slow
def test_resume_latest_picks_the_newest_run_and_keeps_its_config(invoke, text_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train.py", *TINY, "trainer.max_steps=10", "trainer.val_check_interval=5", "dataset=text",
                  f"data.path={text_file}", "model.n_layer=1")[0] == 0
    (original,) = [p.parents[1] for p in (tmp_path / "outputs").rglob("last.ckpt")]
    code, out, err = invoke("train.py", "resume=latest", "trainer.max_steps=20")
    assert code == 0, err
    ckpt = torch.load(original / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 20 and ckpt["hyper_parameters"]["model"]["n_layer"] == 1
    assert ckpt["hyper_parameters"]["scheduler"]["decay_steps"] == 20  # derived keys follow the new max_steps
    assert len(list((tmp_path / "outputs").rglob("last.ckpt"))) == 1  # no second run directory
    code, _, err = invoke("train.py", "resume=latest", "model=small")
    assert_one_line_error(code, err, "a resumed run keeps the config groups it was started with")
    code, _, err = invoke("train.py", "resume=latest", "trainer.max_stepz=30")  # composed as for a new run
    assert code == 1 and "Could not override 'trainer.max_stepz'" in err and "Traceback" not in err, err


def counting_reads(monkeypatch) -> list[str]:
    """Every torch.load from now on, by file name (what read_safely and Lightning's loaders both call)."""
    reads, load = [], torch.load

    def counted(f, *args, **kwargs):
        reads.append(Path(f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))).name)
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    return reads


@pytest.mark.slow
def test_resume_and_a_start_checkpoint_are_read_once(invoke, text_file, tmp_path, monkeypatch):
    args = [*TINY, "trainer.max_steps=10", "trainer.val_check_interval=5", "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *args, f"hydra.run.dir={tmp_path / 'r'}")[0] == 0
    reads = counting_reads(monkeypatch)
    code, _, err = invoke("train.py", f"resume={tmp_path / 'r'}", "trainer.max_steps=15")
    assert code == 0, err
    assert reads == ["last.ckpt", "best.ckpt"]  # the run's start once; then the summary's sample reads best.ckpt
    assert torch.load(tmp_path / "r/checkpoints/last.ckpt", weights_only=True)["global_step"] == 15
    reads.clear()
    start = tmp_path / "r/checkpoints/last.ckpt"
    code, _, err = invoke("train.py", *args, "trainer.max_steps=20", f"ckpt_path={start}",
                          f"hydra.run.dir={tmp_path / 'started'}")
    assert code == 0, err
    assert reads == ["last.ckpt", "best.ckpt"]


def test_a_checkpoint_of_an_older_frosty_starts_a_new_run_and_is_not_resumed(invoke, tmp_path):
    """tests/fixtures/old_layout.ckpt (weights under older names; its run config as run_config and composed_config,
    no config) is refused by resume= in one line that names ckpt_path=, with which a new run starts from it."""
    run_dir = tmp_path / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "fixtures/old_layout.ckpt", run_dir / "checkpoints/last.ckpt")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(poem(), encoding="utf-8")  # the fixture's corpus, at a new path
    code, _, err = invoke("train.py", f"resume={run_dir}", f"data.path={corpus}", "trainer.max_steps=6")
    assert_one_line_error(code, err, "records no run config (an older Frosty's checkpoint)",
                          f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}")
    new = tmp_path / "new"
    code, _, err = invoke("train.py", "dataset=text", f"data.path={corpus}", "model.block_size=16", "model.n_layer=1",
                          "model.n_head=2", "model.n_embd=16", "data.batch_size=4", "trainer.max_steps=6", *QUICK,
                          f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}", f"hydra.run.dir={new}")
    assert code == 0, err
    ckpt = torch.load(new / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    assert set(ckpt["hyper_parameters"]) == {"vocab", "model", "optim", "scheduler", "config", "overrides",
                                             "corpus_sha256"}


def test_a_checkpoint_of_another_corpus_or_shape_is_refused(invoke, trained_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("0123456789 +-*/=\n" * 400)
    ckpt = trained_run / "checkpoints/last.ckpt"
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={other}", f"ckpt_path={ckpt}",
                          f"hydra.run.dir={tmp_path / 'a'}")
    assert_one_line_error(code, err, "was trained on another vocabulary")
    corpus = tmp_path / "same.txt"
    corpus.write_text(poem())
    code, _, err = invoke("train.py", *TINY, "model.n_layer=3", "dataset=text", f"data.path={corpus}",
                          f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'b'}")
    assert_one_line_error(code, err, "has model.n_layer=2, this run model.n_layer=3")


def test_resume_of_a_directory_without_checkpoint(invoke, tmp_path):
    code, _, err = invoke("train.py", f"resume={tmp_path}")
    assert_one_line_error(code, err, f"cannot resume {tmp_path}")


def test_a_failed_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(3)}, target)
    good = target.read_bytes()

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint bytes")
        raise KeyboardInterrupt  # as a kill would, mid-write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_a_run_whose_val_loss_is_never_finite_failed(invoke, text_file, tmp_path):
    """The weights diverged in the first step: the run is not a finished run (a search counts it a failed trial,
    generate.py's choice passes it over), and the line says what to change."""
    run_dir = tmp_path / "run"
    code, _, err = invoke("train.py", "model=tiny", "optim.lr=1e30", "scheduler=constant", "trainer.max_steps=1",
                          "trainer.val_check_interval=1", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "the val loss was never finite: the weights diverged; start again with a lower "
                                     "learning rate (optim.lr=5e+29)")
    record = json.loads((run_dir / "status.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("the val loss was never finite")
