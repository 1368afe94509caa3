"""Resume: continue a run from its last checkpoint with the config it was started with, and check that a
checkpoint to start from fits this run. (Which run `resume=latest|RUN_DIR` names is decided with the run
directory, by run_dirs.run_to_resume, before this code runs.)"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from frosty_lm.checkpoint import load_checkpoint
from frosty_lm.errors import FrostyError
from frosty_lm.run_dirs import LAST

log = logging.getLogger("frosty")

CONF = Path(__file__).resolve().parents[1] / "conf"
# classes that configs of earlier Frosty versions named, beside those that conf/ names today
EARLIER_TARGETS = {"frosty_lm.callbacks.Throughput", "lightning.pytorch.callbacks.ModelCheckpoint",
                   "frosty_lm.callbacks.StepProgressBar"}
# the only resolvers a stored value may call: Frosty's own, as conf/train.yaml uses them
OWN_RESOLVERS = {"hydra:runtime.output_dir", "oc.env:FROSTY_DATA_DIR,data", "frosty_cpu_precision:"}
WRITE_LOCATIONS = ("dirpath", "save_dir", "default_root_dir")  # keys whose value says where files are written


def own_targets() -> set[str]:
    """Every class that the project's own config tree instantiates."""
    found = set()
    for file in CONF.rglob("*.yaml"):
        found |= set(re.findall(r"^\s*_target_:\s*(\S+)", file.read_text(), flags=re.MULTILINE))
    return found | EARLIER_TARGETS


def own_downloads() -> set[tuple[str, str]]:
    """The (url, sha256) pairs of the project's own corpora."""
    pairs = set()
    for file in (CONF / "dataset").glob("*.yaml"):
        text = file.read_text()
        url, sha = (re.search(rf"^{key}:\s*(\S+)", text, flags=re.MULTILINE) for key in ("url", "sha256"))
        if url and sha and url.group(1) != "null":
            pairs.add((url.group(1), sha.group(1)))
    return pairs


def check_stored_config(stored: dict, source: Path) -> None:
    """A stored config is data from a file that may come from someone else: it must not make resume run code,
    read the environment or write outside the run. Every _target_ must be a class that Frosty's own configs
    name; other keys starting with _ (Hydra's _args_, _partial_, ...) are refused; an interpolation may
    reference another key (${trainer.max_steps}) or call Frosty's own resolvers, nothing else; files are
    written under the run's directory only (${paths.output_dir}, no ..); a corpus is downloaded only from
    one of Frosty's own URLs, under a plain name."""
    targets = own_targets()

    def refuse(key: str, why: str) -> None:
        raise FrostyError(f"{source} was refused: its stored config {why} at {key}; resume only runs written by "
                          f"train.py (or start a new run from its weights with ckpt_path={source})")

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                path = f"{key}.{name}" if key else str(name)
                if name == "_target_" and value not in targets:
                    refuse(path, f"names {value!r}, which is not one of Frosty's configured classes")
                if str(name).startswith("_") and name != "_target_":
                    refuse(path, f"sets Hydra's {name}")
                walk(value, path)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{key}[{i}]")
        elif isinstance(node, str):
            for inner in re.findall(r"\$\{([^}]*)\}?", node):
                if "${" in inner or not (re.fullmatch(r"[A-Za-z_][\w.]*", inner) or inner in OWN_RESOLVERS):
                    refuse(key, f"interpolates ${{{inner}}}")
            if key == "paths.output_dir" and node != "${hydra:runtime.output_dir}":
                refuse(key, f"moves the run's directory to {node!r}")
            if key.endswith(WRITE_LOCATIONS) and not node.startswith("${paths.output_dir}"):
                refuse(key, f"writes files to {node!r}, outside the run's directory")
            if key.startswith(("callbacks.", "logger.", "trainer.")) and re.search(r"(^|/)\.\.(/|$)|^/", node):
                if key.endswith(("name", "version", "filename")) or re.search(r"(^|/)\.\.(/|$)", node):
                    refuse(key, f"writes files to {node!r}, outside the run's directory")

    walk(stored, "")
    data = stored.get("data") or {}
    name, url, sha256 = (OmegaConf.select(OmegaConf.create(stored), f"data.{k}") for k in ("name", "url", "sha256"))
    if data and name is not None and not re.fullmatch(r"[\w-]+|\$\{[\w.]+\}", str(name)):
        refuse("data.name", f"names its corpus {name!r}")
    if url is not None and (url, sha256) not in own_downloads():
        refuse("data.url", f"downloads from {url!r}, which is not one of Frosty's corpora")


def stored_config(hparams: dict) -> dict | None:
    """The run config kept in a checkpoint's hyper_parameters, with its interpolations: `config`; checkpoints
    written before it kept `composed_config` (and a resolved `run_config`, which the oldest kept alone)."""
    return hparams.get("composed_config") or hparams.get("config") or hparams.get("run_config")


def resumed_config(stored: dict, overrides: list[str], groups: set[str]) -> DictConfig:
    """The config a run was started with (kept in its checkpoint), with the resuming command's key=value
    overrides applied (e.g. trainer.max_steps=5000 to train longer). Changing a config group is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = upgraded(OmegaConf.create(stored))
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if key in groups:
            raise FrostyError(f"{override.input_line}: a resumed run keeps its config groups; "
                              "override single keys instead (e.g. trainer.max_steps=5000)")
        OmegaConf.update(cfg, key, override.value(), force_add=True)
    return cfg


def upgraded(cfg: DictConfig) -> DictConfig:
    """A config stored by an earlier Frosty, in today's terms: its checkpoints were Lightning's ModelCheckpoint,
    its throughput callback frosty_lm.callbacks.Throughput(peak_flops), its progress bar in frosty_lm.callbacks,
    its optim node no name (it was AdamW's), and it lacked the callbacks added since (progress lines, the HPARAMS
    end status, memorisation, attention maps, early stopping): today's conf/callbacks/default.yaml gives them."""
    checkpoint = OmegaConf.select(cfg, "callbacks.model_checkpoint")
    if checkpoint is not None and checkpoint.get("_target_") == "lightning.pytorch.callbacks.ModelCheckpoint":
        checkpoint._target_ = "frosty_lm.callbacks.BestAndLastCheckpoint"  # last.ckpt always the last state
    throughput = OmegaConf.select(cfg, "callbacks.throughput")
    if throughput is not None and throughput.get("_target_") == "frosty_lm.callbacks.Throughput":
        cfg.callbacks.throughput = {"_target_": "frosty_lm.callbacks.CharThroughput",
                                    "available_flops": throughput.get("peak_flops")}
    bar = OmegaConf.select(cfg, "callbacks.progress_bar")
    if bar is not None and bar.get("_target_") == "frosty_lm.callbacks.StepProgressBar":
        bar._target_ = "frosty_lm.progress.StepProgressBar"
    if OmegaConf.select(cfg, "callbacks") is not None:  # a callback set to null by the run stays off
        for name, node in OmegaConf.load(CONF / "callbacks" / "default.yaml").items():
            if name not in cfg.callbacks:
                cfg.callbacks[name] = node
    if OmegaConf.select(cfg, "optim") is not None and "name" not in cfg.optim:
        cfg.optim.name = "adamw"  # before optim became a config group (adamw | muon), every run trained AdamW
    return cfg


def resume_if_asked(cfg: DictConfig) -> tuple[DictConfig, dict | None]:
    """resume=latest|RUN_DIR: Hydra has already put this job in that run's directory; continue it with
    the config it was started with (plus this command's key=value overrides) from its last checkpoint.
    Returns the config to run and the checkpoint read (None without resume=), which training hands on
    rather than reading the file again."""
    if not cfg.get("resume"):
        return cfg, None
    hydra = HydraConfig.get()
    last = Path(hydra.runtime.output_dir) / LAST
    ckpt = load_checkpoint(last)
    stored = stored_config(ckpt["hyper_parameters"])
    if not stored:
        raise FrostyError(f"{last} holds no run config to resume with: use ckpt_path={last} and the run's overrides")
    check_stored_config(stored, last)
    cfg = resumed_config(stored, list(hydra.overrides.task), set(hydra.runtime.choices))
    cfg.ckpt_path = str(last)
    check_more_to_train(ckpt, cfg, last.parents[1])
    log.info("resuming %s from step %d", last.parents[1], ckpt["global_step"])
    return cfg, ckpt


def check_more_to_train(ckpt: dict, cfg: DictConfig, run: Path) -> None:
    """A resumed run that would stop at once (its step or its training time already at the limit) is refused
    with the key to raise, rather than finishing without a step."""
    from lightning.pytorch.callbacks import Timer

    step, max_steps = ckpt["global_step"], cfg.trainer.max_steps
    if isinstance(max_steps, int) and step >= max_steps:
        raise FrostyError(f"{run} is at step {step} and trainer.max_steps={max_steps}: nothing to train; give a larger "
                          f"trainer.max_steps (e.g. trainer.max_steps={2 * max_steps})")
    max_time = cfg.trainer.get("max_time")
    elapsed = ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train")
    if max_time and elapsed is not None:
        try:
            limit = Timer(duration=OmegaConf.to_container(max_time) if OmegaConf.is_config(max_time) else max_time)
        except Exception:  # noqa: BLE001  Lightning reports a bad max_time itself, with the run
            return
        if elapsed >= limit._duration:
            raise FrostyError(f"{run} has trained {elapsed:.0f} s and trainer.max_time={max_time}: nothing to train; "
                              "give a longer trainer.max_time (DD:HH:MM:SS), or trainer.max_time=null")


def check_compatible(ckpt_path: str, hparams: dict, vocab: str, model: dict, optim: dict) -> None:
    """A checkpoint to start from (hparams: its hyper_parameters) must share this run's vocabulary, model shape
    and optimizer (vocab, model, optim: this run's). A setting a checkpoint does not record (written before it
    existed) is GPTConfig's default, which is what that checkpoint was trained with."""
    import dataclasses

    from frosty_lm.model import GPTConfig
    from frosty_lm.optim import optim_name

    if hparams["vocab"] != vocab:
        raise FrostyError(f"{ckpt_path} was trained on another vocabulary ({len(hparams['vocab'])} characters, this "
                          f"corpus has {len(vocab)}): start from a checkpoint of the same corpus")
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    stored, wanted = {**defaults, **hparams["model"]}, {**defaults, **model}
    for key in ("kind", "block_size", "n_layer", "n_head", "n_embd", "bias", "position", "norm", "qk_norm",
                "activation", "logit_softcap", "tie_weights"):
        if stored.get(key) != wanted.get(key):
            raise FrostyError(f"{ckpt_path} has model.{key}={stored.get(key)}, this run "
                              f"model.{key}={wanted.get(key)}: use the checkpoint's model settings")
    trained, asked = optim_name(hparams.get("optim") or {}), optim_name(optim)
    if trained != asked:
        raise FrostyError(f"{ckpt_path} was trained with optim={trained}, this run asks for optim={asked}: start from "
                          f"it with optim={trained}")
