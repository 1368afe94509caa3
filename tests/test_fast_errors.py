"""A bad config or a missing corpus is reported before torch and Lightning load (they take seconds): train.py
checks the composed config and looks for the corpus first, with no module of torch's or Lightning's imported.
(Not timed: bench/startup.py measures how long it takes.)"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF, ROOT, TINY, split_import_times
from frosty_lm import corpus
from frosty_lm.cli import command_arg
from frosty_lm.config import FrostyError
from frosty_lm.data import CharDataModule
from frosty_lm.machine import NATIVE_BF16, cpu_flags
from test_reliability import assert_one_line_error
from train import check_early

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
        CharDataModule(name, data_dir, block_size=8, path=path).setup()
    assert_one_line_error(code, err)
    assert err.strip().splitlines()[-1] == f"error: {training_says.value}"
    assert not packages & set(HEAVY), f"train.py imported {sorted(packages & set(HEAVY))} before its error"


def assert_hydras_own_error(code: int, err: str, *fragments: str) -> None:
    """Hydra's own report of a command line it cannot compose: exit status 1, its message, no Python traceback."""
    assert code == 1, err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR=1" in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("arg, message", [
    ("model=smal", "Could not find 'model/smal'"),  # Hydra lists the options of the group
    ("model.colour=1", "Could not override 'model.colour'"),
    ("model.dropout=0.1,0.2", "Ambiguous value for argument 'model.dropout=0.1,0.2'"),  # a sweep's values without -m
])
def test_a_command_line_that_does_not_compose_is_hydras_own_message_before_torch_loads(tmp_path, arg, message):
    code, err, packages = train_importing(arg, cwd=tmp_path)
    assert_hydras_own_error(code, err, message)
    assert not packages & set(HEAVY) and not list(tmp_path.iterdir())  # no run directory either


def test_a_group_set_to_null_is_hydras_error_with_its_stack_trace(tmp_path):
    """Hydra does not take null for a group (docs/troubleshooting.md says so, and what to write instead)."""
    code, err, packages = train_importing("callbacks=null", cwd=tmp_path)
    assert code == 1 and err.rstrip().endswith("ValueError: Config group override must be a string or a list. "
                                               "Got NoneType"), err
    assert not packages & set(HEAVY) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("key, value", [
    ("resume", "outputs/sweeps/2026-11-26/10-00-00-000000/dropout=0.2,n_layer=4"),  # a sweep job's directory
    ("resume", "/runs/a b/c"), ("ckpt_path", "outputs/runs/x_frost_small/checkpoints/best.ckpt"),
    ("prompt", 'Whose woods, "these" are'), ("prompt", "a,b\\c"), ("prompt", "ends in a backslash\\"),
    ("prompt", "☃ and snow"),
])
def test_a_printed_command_gives_its_value_back_to_hydra(key, value):
    for quoted in (False, True):
        arg = command_arg(key, value, quoted=quoted)
        [override] = OverridesParser.create().parse_overrides(shlex.split(arg))  # as the shell, then Hydra, read it
        assert (override.key_or_group, override.value()) == (key, value), arg


def test_a_corpus_to_download_is_only_located_early(tmp_path):
    url = "https://example.invalid/frost.txt"
    assert corpus.locate("frost", str(tmp_path), url=url) == tmp_path / "frost.txt"
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


def composed(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=["paths.output_dir=/tmp/frosty-compose", *overrides])


def test_the_early_check_refuses_what_check_config_refuses():
    with pytest.raises(FrostyError, match="model.n_layer=0 must be a positive integer"):
        check_early(composed("model.n_layer=0"))


@pytest.mark.parametrize("case", ["resume", "ckpt_path"])
def test_the_early_check_leaves_to_training_what_it_checks_in_another_order(case):
    """resume=: the config is the checkpoint's; ckpt_path=: training reads the checkpoint before it looks for the
    corpus. (A sweep's job skips it: run_training records its failure in status.json, test_experiments.)"""
    if case == "ckpt_path":
        cfg = composed("dataset=text", "data.path=/nonexistent", "ckpt_path=/nonexistent.ckpt")
    else:
        cfg = composed("model.n_layer=0", "resume=latest")
    check_early(cfg)  # no error here: training reports it


def test_the_config_checks_import_no_torch():
    """check_config checks the model.* keys with GPTConfig itself: importing it, and the checks, loads no torch."""
    code = f"import sys, frosty_lm.config; print(sorted(set(sys.modules) & {set(HEAVY)}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux's /proc/cpuinfo")
def test_cpu_precision_from_the_cpu_flags_agrees_with_torch():
    flags = cpu_flags()
    assert flags is not None
    native = [getattr(torch.cpu, check)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    assert any(flag in flags for flag in NATIVE_BF16) == any(native)  # torch's own checks (private to torch)
