"""Every option of every config group composes, resolves and builds what it describes."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

from conftest import CONF
from frosty_lm import machine
from frosty_lm.config import GPTConfig
from frosty_lm.machine import BELOW_BF16, cpu_precision

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("[!_]*.yaml"))]  # _base: not one
ADDED = {"experiment", "sweep", "search"}  # not in train.yaml's defaults: chosen with +group=option


def compose_train(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/frosty-compose", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def test_every_group_has_options():
    assert {"model", "dataset", "dropout", "trainer", "logger", "callbacks", "scheduler"} <= set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes(group, option, tmp_path):
    extra = [f"data.path={tmp_path / 'x.txt'}"] if (group, option) == ("dataset", "text") else []
    cfg = compose_train(f"{'+' if group in ADDED else ''}{group}={option}", *extra)
    GPTConfig(vocab_size=10, **cfg.model)  # a valid model config
    if group in ("logger", "callbacks"):
        assert all(isinstance(instantiate(node), (Callback, Logger)) for node in cfg[group].values())
    if group == "trainer":
        expected = {"cpu": ("cpu", None), "gpu": ("gpu", None), "ddp": ("gpu", "ddp"), "ddp_cpu": ("cpu", "ddp"),
                    "default": ("auto", None)}
        assert (cfg.trainer.accelerator, cfg.trainer.get("strategy")) == expected[option]
    if group == "dataset" and option != "text":
        assert cfg.data.url.startswith("https://") and len(cfg.data.sha256) == 64


def test_dropout_group_sets_model_dropout_and_a_key_still_overrides_it():
    assert compose_train("dropout=none").model.dropout == 0.0
    assert compose_train("dropout=seed").model.dropout == 0.2
    assert compose_train("dropout=heavy").model.dropout == 0.4
    assert compose_train("dropout=heavy", "model.dropout=0.15").model.dropout == 0.15
    assert compose_train("model.dropout=0.15").model.dropout == 0.15
    for experiment in ("seed_frosty", "speedrun", "yoda_dropout"):  # a preset leaves the dropout group its say
        assert compose_train(f"+experiment={experiment}", "dropout=heavy").model.dropout == 0.4
    assert compose_train("+experiment=speedrun", "model=medium").model.dropout == 0.0  # its own, not medium's




def test_decay_follows_max_steps_and_data_dir_follows_the_environment(monkeypatch):
    monkeypatch.setenv("FROSTY_DATA_DIR", "/corpora")
    cfg = compose_train("trainer.max_steps=700")
    assert cfg.scheduler.decay_steps == 700  # the cosine decays over the run, however long
    assert cfg.data.data_dir == "/corpora"
    monkeypatch.delenv("FROSTY_DATA_DIR")
    assert compose_train().data.data_dir == "data"


def test_data_and_model_share_block_size_and_seed():
    cfg = compose_train("model.block_size=48", "seed=7")
    assert cfg.data.block_size == 48 and cfg.data.seed == 7


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"),
                                                         (False, False, "32-true")])
def test_cpu_trainer_uses_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, expected):
    for name in BELOW_BF16:  # no instruction-set cap (the variables that approximate an AVX2 CPU)
        monkeypatch.delenv(name, raising=False)
    flags = {"avx512f"} | ({"avx512_bf16"} if avx512_bf16 else set()) | ({"amx_tile"} if amx else set())
    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    assert cpu_precision() == expected
    assert compose_train().trainer.precision == expected
    assert compose_train("trainer.precision=32-true").trainer.precision == "32-true"


@pytest.mark.parametrize("native_bf16, trainer, gpu", [(True, "cpu", False), (False, "cpu", False),
                                                      (False, "default", True), (True, "gpu", True)])
def test_a_model_preset_is_the_same_model_on_every_machine(monkeypatch, native_bf16, trainer, gpu):
    """model=small (and every preset) builds one architecture whatever the CPU or accelerator; only the
    precision may follow the machine."""
    for name in BELOW_BF16:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512_bf16"} if native_bf16 else set())
    for preset in ("tiny", "small", "medium", "large"):
        model = OmegaConf.to_container(compose_train(f"model={preset}", f"trainer={trainer}").model, resolve=True)
        monkeypatch.setattr(machine, "cpu_flags", lambda: set() if native_bf16 else {"avx512_bf16"})
        other = OmegaConf.to_container(compose_train(f"model={preset}", "trainer=cpu").model, resolve=True)
        monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512_bf16"} if native_bf16 else set())
        assert model == other, preset
    assert compose_train(f"trainer={trainer}").model.n_layer == 2


def test_the_benchmarks_build_the_model_that_train_py_builds():
    from bench.common import model_preset

    assert model_preset("small", block_size=64) == {**dict(compose_train("model=small").model), "block_size": 64}


def test_each_entry_points_help_names_what_it_takes():
    """generate.py's --help lists its own keys, not train.py's config groups (which it does not take)."""
    import subprocess
    import sys

    from conftest import ROOT

    helps = {script: subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                    timeout=120).stdout for script in ("train.py", "generate.py")}
    assert helps["train.py"].startswith("train.py: train a character GPT") and "model: " in helps["train.py"]
    assert helps["generate.py"].startswith("generate.py: sample text") and "prompt: ''" in helps["generate.py"]
    assert "Configuration groups" not in helps["generate.py"] and "model:" not in helps["generate.py"]
