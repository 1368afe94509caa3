"""A bad config or a missing corpus is reported before torch and Lightning load (they take seconds): train.py
checks the composed config and looks for the corpus first, with no module of torch's or Lightning's imported.
(Not timed: bench/startup.py measures how long it takes.)"""
import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF, ROOT, TINY, split_import_times
from frosty_lm import config_checks, corpus
from frosty_lm.arguments import command_arg, read_command_line, read_overrides, skip_hydra_mode_probe
from frosty_lm.data import CharDataModule
from frosty_lm.errors import FrostyError
from frosty_lm.machine import NATIVE_BF16, cpu_flags, torch_native_bf16
from frosty_lm.model import GPTConfig
from test_reliability import assert_one_line_error

HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric")


def train_importing(*args: str, cwd: Path) -> tuple[int, str, set[str]]:
    """Run train.py in a fresh interpreter with `-X importtime` -> (exit status, its stderr without the import
    lines, the top-level packages it imported)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "FROSTY_DEBUG": "0"}
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    rest, packages = split_import_times(result.stderr)
    return result.returncode, rest, packages


def test_a_bad_config_is_reported_before_torch_and_lightning_load(text_file, tmp_path):
    code, err, packages = train_importing(*TINY, "dataset=text", f"data.path={text_file}", "model.n_layer=0",
                                          f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert_one_line_error(code, err, "model.n_layer=0 must be a positive integer")
    assert "frosty_lm" in packages and "hydra" in packages  # the import lines were read
    assert not packages & set(HEAVY), f"train.py imported {sorted(packages & set(HEAVY))} before its error"


@pytest.mark.parametrize("data", [["dataset=text", "data.path=/nonexistent"],
                                  ["dataset=frost", "data.name=poems", "data.url=null", "data.data_dir=corpora"]],
                         ids=["path", "name-without-url"])
def test_a_missing_corpus_is_reported_before_torch_loads_in_the_real_paths_words(tmp_path, monkeypatch, data):
    code, err, packages = train_importing(*TINY, *data, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    keys = dict(arg.split("=", 1) for arg in data if arg.startswith("data."))
    name, data_dir, path = keys.get("data.name", "text"), keys.get("data.data_dir", "data"), keys.get("data.path")
    monkeypatch.chdir(tmp_path)  # data_dir is relative, as train.py sees it from its working directory
    with pytest.raises(FrostyError) as training_says:  # what training itself reports
        CharDataModule(name, data_dir, block_size=8, path=path).prepare_data()
    assert_one_line_error(code, err)
    assert err.strip().splitlines()[-1] == f"error: {training_says.value}"
    assert not packages & set(HEAVY), f"train.py imported {sorted(packages & set(HEAVY))} before its error"


@pytest.mark.parametrize("arg, message", [
    ("prompt=☃", "cannot read prompt=☃: quote a value with characters beyond letters, digits and punctuation"),
    ("model.dropout=0.1,0.2", "model.dropout=0.1,0.2 gives several values: add -m to run a job for each"),
])
def test_an_argument_hydra_cannot_read_is_one_line_before_torch_loads(tmp_path, arg, message):
    code, err, packages = train_importing(arg, cwd=tmp_path)
    assert_one_line_error(code, err, message, "e.g. '" + arg.split("=")[0] + "=\"...\"'")
    assert not packages & set(HEAVY) and not list(tmp_path.iterdir())  # no run directory either


def test_the_grid_sampler_with_a_search_preset_is_one_line_that_names_the_plain_sweep():
    """The presets seed their sampler, and Optuna's grid sampler config has no seed: Hydra's report of several lines."""
    with pytest.raises(FrostyError, match=r"^hydra/sweeper/sampler=grid: Optuna's grid sampler takes no seed, .*: "
                       r"e\.g\. python train\.py -m model\.n_layer=2,4,6 model\.dropout=0\.0,0\.2$"):
        read_overrides(["-m", "+search=optuna", "hydra/sweeper/sampler=grid"])
    read_overrides(["-m", "+search=optuna", "hydra/sweeper/sampler=random"])  # another sampler: Hydra's to compose
    read_overrides(["-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid"])  # the plugin's own sweeper


def test_an_option_that_does_not_exist_is_one_line_before_torch_loads(tmp_path):
    code, err, packages = train_importing("model=smal", cwd=tmp_path)
    assert_one_line_error(code, err, "model=smal is not an option: did you mean model=small?")
    assert not packages & set(HEAVY) and not list(tmp_path.iterdir())  # no run directory either


def test_the_argument_check_leaves_alone_what_composes_or_is_hydras():
    for argv in (["+trainer.profiler=simple", "~dropout", "+search=speedrun", "+my_tag=a"],  # a key of the user's
                 ["logger=[csv,tensorboard]"],  # two options of a group
                 ["-m", "trainer=ddp,ddp_cpu", "trainer.strategy=ddp_spawn"],  # a setting of the options varied
                 ["-m", "optim=adamw,muon", "optim.momentum=0.9"],  # muon's: the sweeper refuses adamw's job alone
                 ["hydra.searchpath=[file:///elsewhere]", "model=mine"],  # options outside conf/: Hydra's to find
                 ["hydra.run.dir=/tmp/x", "hydra/launcher=submitit_local", "hydra.sweeper.params.x=1"],  # Hydra's
                 ["--cfg", "job", "model=smal"],  # Hydra's flags: Hydra's own report
                 ["-m", "model=tiny,nosuch"],  # Frosty's sweeper refuses the job alone
                 ["-m", "model.dropout=0.1,0.2", "model.tie_weights=true,false"]):
        read_command_line(argv, "train")
    read_command_line(["prompt=Whose woods", "top_k=5"], "generate")
    with pytest.raises(FrostyError, match="logger=wandb is not an option: choose one of csv, tensorboard"):
        read_command_line(["logger=[csv,wandb]"], "train")
    with pytest.raises(FrostyError, match="dropout=null is not an option: choose one of heavy, none, seed"):
        read_command_line(["dropout=null"], "train")  # Hydra's report: "must be a string or a list"
    with pytest.raises(FrostyError, match="model.colour is not a setting of model"):
        read_command_line(["-m", "model.dropout=0.1,0.2", "model.colour=1,2"], "train")  # fails every job: at once


def test_a_command_composes_the_config_twice_and_hydras_mode_probe_runs_only_for_hydra_mode(
        invoke, tmp_path, monkeypatch):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    composed = []
    load = ConfigLoaderImpl.load_configuration
    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", lambda self, *a, **k: composed.append(1) or load(
        self, *a, **k))
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("train.py", "model.n_layer=0")  # refused by check_early, in Hydra's run
    assert code == 1 and "n_layer" in err
    assert len(composed) == 2  # Frosty's argument check, and Hydra's run: not Hydra's probe for hydra.mode
    skip_hydra_mode_probe()  # (invoke did too: again adds nothing)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        hydra = GlobalHydra.instance().hydra
        for argv, overrides, mode, compositions in [
            (["-m"], ["model.dropout=0.1,0.2"], None, 2),  # a sweep: -m alone says so, as Hydra then reads it
            ([], ["hydra.mode=MULTIRUN"], RunMode.MULTIRUN, 3),  # named: Hydra's probe reads it
            ([], ["+hydra.mode=MULTIRUN"], RunMode.MULTIRUN, 4),
            ([], ["hydra.searchpath=[file:///elsewhere]"], None, 5),  # configs outside conf/ might set it: probed
            (["--config-dir", str(tmp_path)], ["model=tiny"], None, 6),  # other configs: probed
        ]:
            monkeypatch.setattr(sys, "argv", ["train.py", *argv, *overrides])
            assert Hydra.get_mode(hydra, "train", overrides) == mode and len(composed) == compositions, argv + overrides


@pytest.mark.parametrize("key, value", [
    ("resume", "outputs/sweeps/2026-11-26/10-00-00-000000/dropout=0.2,n_layer=4"),  # a sweep job's directory
    ("resume", "/runs/a b/c"), ("ckpt_path", "outputs/runs/x_frost_small/checkpoints/best.ckpt"),
    ("prompt", 'Whose woods, "these" are'), ("prompt", "a,b\\c"), ("prompt", "ends in a backslash\\"),
    ("prompt", "☃ and snow"),
])
def test_a_printed_command_gives_its_value_back_to_hydra(key, value):
    for quoted in (False, True):
        arg = command_arg(key, value, quoted=quoted)
        assert read_overrides(shlex.split(arg)) == {key: value}, arg  # as the shell, then Hydra, read it


def test_a_sweep_of_resumes_is_refused_before_any_job():
    for argv in (["-m", "resume=latest", "trainer.max_steps=1800,1900"], ["-m", "resume=a,b"]):
        with pytest.raises(FrostyError, match="resume= continues one run in its own directory, and a sweep"):
            read_command_line(argv, "train")
    read_command_line(["-m", "resume=null", "model.dropout=0.1,0.2"], "train")  # no resume: a sweep


def test_a_sweep_jobs_signal_that_reached_it_twice_is_one():
    """A terminal's Ctrl-C, or `timeout`'s SIGTERM to the process group, reaches a sweep's job directly and again
    from the sweep's main process: one stop, not an abort."""
    import signal
    import time

    from frosty_lm.interrupts import same_press

    now = time.monotonic()
    for signum in (signal.SIGINT, signal.SIGTERM):
        assert same_press(signum, signum, now) and not same_press(signum, signum, now - 60)
    assert not same_press(signal.SIGTERM, signal.SIGINT, now)


def test_a_sweep_job_that_starts_after_the_stop_finds_it_in_the_sweep_directory(tmp_path, monkeypatch, capsys):
    """The sweep's main process passes a signal on to the workers there are; one that starts later reads it from
    the sweep's directory, and its job does not run."""
    import signal
    from types import SimpleNamespace

    from frosty_lm import cli

    monkeypatch.setattr(cli.SweepStop, "signum", None)
    monkeypatch.setattr(cli.SweepStop, "main_pid", None)
    monkeypatch.setattr(cli, "child_processes", lambda: [])  # (this test's process is not a sweep's)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        cli.stop_sweep_on_signals(main_of=tmp_path)
        main_handler = signal.getsignal(signal.SIGTERM)
        cli.stop_sweep_on_signals()  # a job run in the sweep's main process (hydra/launcher=basic) keeps its handler
        assert signal.getsignal(signal.SIGTERM) is main_handler
        signal.raise_signal(signal.SIGTERM)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert "SIGTERM: stopping the sweep" in capsys.readouterr().err
    monkeypatch.setattr(cli.SweepStop, "signum", None)  # a worker: it has had no signal
    # a relative sweep directory, read by a job whose working directory is its own (hydra.job.chdir=true)
    job_config = SimpleNamespace(sweep=SimpleNamespace(dir=tmp_path.name),
                                 runtime=SimpleNamespace(cwd=str(tmp_path.parent)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "HydraConfig", SimpleNamespace(initialized=lambda: True, get=lambda: job_config))
    assert cli.sweep_stopped() == signal.SIGTERM
    (tmp_path / cli.STOP_FILE).unlink()
    monkeypatch.setattr(cli.SweepStop, "signum", None)
    assert cli.sweep_stopped() is None


def test_a_signal_put_off_before_the_sweep_took_over_stops_the_sweep(tmp_path, monkeypatch, capsys):
    """A Ctrl-C to train.py -m that the entry point's handler put off (a library's code ran) is the sweep's first:
    sent again, it would find the sweep's handler installed instead, and wait for ever."""
    import signal

    from frosty_lm import cli, interrupts

    monkeypatch.setattr(cli.SweepStop, "signum", None)
    monkeypatch.setattr(cli.SweepStop, "main_pid", None)
    monkeypatch.setattr(cli, "child_processes", lambda: [])
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupts._put_off(signal.SIGINT, handlers[signal.SIGINT])
        cli.stop_sweep_on_signals(main_of=tmp_path)
    finally:
        interrupts.take_put_off()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert cli.SweepStop.signum == signal.SIGINT and (tmp_path / cli.STOP_FILE).read_text() == str(signal.SIGINT)
    assert "SIGINT: stopping the sweep" in capsys.readouterr().err


def test_a_sweep_starts_afresh_whatever_an_earlier_sweep_left(tmp_path, monkeypatch, capsys):
    import signal

    from omegaconf import OmegaConf

    from frosty_lm import status
    from frosty_lm.cli import STOP_FILE, SweepStop
    from frosty_lm.status import SweepSummary

    monkeypatch.setattr(status, "JOBS", [7])  # an earlier sweep in this process: 7 jobs, 1 refused,
    monkeypatch.setattr(status, "REFUSED", ["model=nosuch is not an option"])
    monkeypatch.setattr(SweepStop, "signum", signal.SIGTERM)  # stopped by SIGTERM
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / STOP_FILE).write_text("15")  # an aborted sweep's, the rest of its directory cleared
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        SweepSummary().on_multirun_start(config)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert SweepStop.signum is None and not (tmp_path / "sweep" / STOP_FILE).exists()
    SweepSummary().on_multirun_end(config)
    err = capsys.readouterr().err
    assert "0 of 0 runs finished;" in err and "refused" not in err, err


def test_what_hydra_reads_passes_the_argument_check():
    read_overrides(['prompt="☃, and more"', "prompt=Whose woods", "model.dropout=0.1,0.2", "-m", "x=[1,2]",
                     'hydra.run.dir="/a b"', "--cfg", "job", "--config-dir=/x", "+experiment=speedrun",
                     "paths.outputs_dir=${oc.env:HOME}/runs"])
    read_overrides(["model.dropout=0.1,0.2", "hydra.mode=MULTIRUN"])  # Hydra's other way to ask for a sweep
    with pytest.raises(FrostyError, match="gives several values"):
        read_overrides(["model.dropout=0.1,0.2"])  # without -m


@pytest.mark.slow
def test_generate_reads_its_arguments_as_train_does(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "FROSTY_DEBUG": "0"}
    result = subprocess.run([sys.executable, str(ROOT / "generate.py"), "prompt=☃"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert_one_line_error(result.returncode, result.stderr, "cannot read prompt=☃")


def test_a_corpus_to_download_is_only_located_early(tmp_path):
    url = "https://example.invalid/frost.txt"
    assert corpus.locate("frost", str(tmp_path), url=url) == tmp_path / "frost.txt"
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


def composed(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=["paths.output_dir=/tmp/frosty-compose", *overrides])


def test_the_early_check_refuses_what_check_config_refuses():
    with pytest.raises(FrostyError, match="model.n_layer=0 must be a positive integer"):
        config_checks.check_early(composed("model.n_layer=0"))


@pytest.mark.parametrize("case", ["resume", "sweep", "ckpt_path"])
def test_the_early_check_leaves_to_training_what_it_checks_in_another_order(monkeypatch, case):
    """resume=: the config is the checkpoint's; a sweep's job: run_training records its failure in status.json;
    ckpt_path=: training reads the checkpoint before it looks for the corpus."""
    monkeypatch.setattr(config_checks, "in_sweep", lambda: case == "sweep")
    if case == "ckpt_path":
        cfg = composed("dataset=text", "data.path=/nonexistent", "ckpt_path=/nonexistent.ckpt")
    else:
        cfg = composed("model.n_layer=0", *(["resume=latest"] if case == "resume" else []))
    config_checks.check_early(cfg)  # no error here: training reports it


def test_the_model_check_without_torch_is_gptconfig_itself():
    built = config_checks.class_from_source(config_checks.MODEL_PY, "GPTConfig")
    assert built is not GPTConfig
    fields = [(f.name, f.default) for f in dataclasses.fields(GPTConfig)]
    assert [(f.name, f.default) for f in dataclasses.fields(built)] == fields
    for bad in [{"n_layer": 0}, {"n_embd": 30, "n_head": 4}, {"dropout": 1.0}, {"block_size": True}, {"colour": 3}]:
        assert refusal(built, **bad) == refusal(GPTConfig, **bad) != (None, None)
    assert dataclasses.asdict(built(vocab_size=3)) == dataclasses.asdict(GPTConfig(vocab_size=3))


def refusal(config_class: type, **model) -> tuple[type | None, str | None]:
    """The type and message of the error config_class(vocab_size=1, **model) raises; (None, None) if none."""
    try:
        config_class(vocab_size=1, **model)
    except (TypeError, ValueError) as err:
        return type(err), str(err)
    return None, None


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux's /proc/cpuinfo")
def test_cpu_precision_from_the_cpu_flags_agrees_with_torch():
    flags = cpu_flags()
    assert flags is not None
    assert any(flag in flags for flag in NATIVE_BF16) == torch_native_bf16()


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["n_jobs=0", "n_jobs=-1", "n_trials=0"])
def test_a_search_of_no_trials_or_none_at_a_time_is_one_line(setting, tmp_path):
    """hydra.sweeper.n_jobs below 1 would make the search launch empty batches for ever (as Optuna's plugin
    does); n_trials below 1 would run nothing and exit 0."""
    code, err, packages = train_importing("-m", "+search=optuna", f"hydra.sweeper.{setting}",
                                          f"hydra.sweep.dir={tmp_path / 'search'}", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    assert f"error: hydra.sweeper.{setting} must be a positive integer" in err
    assert not packages & set(HEAVY)


@pytest.mark.slow
def test_a_study_that_cannot_be_opened_is_one_line(tmp_path):
    storage = f"sqlite:///{tmp_path / 'no such directory' / 'study.db'}"
    code, err, _ = train_importing("-m", "+search=optuna", f"hydra.sweeper.storage='{storage}'",
                                   f"hydra.sweep.dir={tmp_path / 'search'}", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    assert f"error: cannot open Optuna's study frosty in {storage}: " in err and "unable to open database" in err


def stored_study(path: Path, **params) -> str:
    """A stored study named frosty (the search preset's) with one finished trial that drew params: name ->
    distribution. -> its storage URL."""
    import optuna

    storage = f"sqlite:///{path}"
    study = optuna.create_study(study_name="frosty", storage=storage, direction="minimize")
    study.add_trial(optuna.trial.create_trial(params={name: d.choices[0] if hasattr(d, "choices") else d.low
                                                      for name, d in params.items()},
                                              distributions=params, value=2.0))
    return storage


@pytest.mark.slow
def test_a_search_space_that_a_stored_study_cannot_take_is_one_line_before_any_trial(tmp_path):
    """Optuna would raise its ValueError with a traceback at the first trial (after a sweep directory and a failed
    trial were written) when a continued study's parameter has other choices."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    storage = stored_study(tmp_path / "study.db", **{"model.n_layer": CategoricalDistribution((2, 4, 6))})
    code, err, _ = train_importing("-m", "+search=optuna", f"hydra.sweeper.storage='{storage}'",
                                   "model.n_layer=choice(1,2)", f"hydra.sweep.dir={tmp_path / 'search'}", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    assert (f"error: model.n_layer is searched over choice(1, 2), but the stored study frosty in {storage} drew it "
            "from choice(2, 4, 6)") in err and "another hydra.sweeper.study_name" in err
    assert len(optuna.load_study(study_name="frosty", storage=storage).trials) == 1  # no trial asked
    assert not (tmp_path / "search" / "multirun.yaml").exists()


def test_a_stored_study_takes_a_changed_range_but_not_other_choices_or_another_kind(tmp_path, capsys):
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        DiscreteUniformDistribution,
        IntUniformDistribution,
        LogUniformDistribution,
        UniformDistribution,
    )

    from hydra_plugins.frosty_sweeper import check_space_matches_study

    storage = stored_study(tmp_path / "study.db", **{"model.n_layer": CategoricalDistribution((2, 4)),
                                                     "optim.lr": LogUniformDistribution(1e-4, 3e-3)})
    study = optuna.load_study(study_name="frosty", storage=storage)
    capsys.readouterr()  # (Optuna's own log lines: a study created, loaded)
    check_space_matches_study(study, {"model.n_layer": CategoricalDistribution((2, 4)),  # the same
                                      "optim.lr": LogUniformDistribution(1e-5, 1e-2),  # a wider range
                                      "model.dropout": UniformDistribution(0.0, 0.4)}, storage)  # a new parameter
    assert capsys.readouterr().err == ""
    for space, said in [({"model.n_layer": CategoricalDistribution((2, 4, 6))},
                         "model.n_layer is searched over choice(2, 4, 6), but the stored study frosty in "
                         f"{storage} drew it from choice(2, 4)"),
                        ({"optim.lr": IntUniformDistribution(1, 3)},
                         "optim.lr is searched over integers 1 to 3, but the stored study frosty in "
                         f"{storage} drew it from 0.0001 to 0.003 on a log scale"),
                        ({"optim.lr": DiscreteUniformDistribution(1e-4, 3e-3, 1e-4)},
                         "optim.lr is searched over 0.0001 to 0.003 in steps of 0.0001, but the stored study "
                         f"frosty in {storage} drew it from 0.0001 to 0.003 on a log scale")]:
        with pytest.raises(SystemExit) as stop:
            check_space_matches_study(study, space, storage)
        assert stop.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {said}: ") and err.count("\n") == 1, err
