"""The run config a checkpoint stores (for resume=): reading it, bringing an earlier Frosty's up to date, and checking
that it is data only, since a run directory may come from someone else (no code run, no environment read, nothing
written outside the run)."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from frosty_lm.errors import FrostyError

CONF = Path(__file__).resolve().parents[1] / "conf"
# classes that configs of earlier Frosty versions named, beside those that conf/ names today
EARLIER_TARGETS = {"frosty_lm.callbacks.Throughput", "lightning.pytorch.callbacks.ModelCheckpoint",
                   "frosty_lm.callbacks.StepProgressBar", "frosty_lm.callbacks.BestAndLastCheckpoint",
                   "frosty_lm.checkpoint.BestAndLastCheckpoint"}
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


def upgraded(cfg: DictConfig) -> DictConfig:
    """A config stored by an earlier Frosty, in today's terms: its checkpoints were Lightning's ModelCheckpoint
    (later BestAndLastCheckpoint in frosty_lm.callbacks, then in frosty_lm.checkpoint), its throughput callback
    frosty_lm.callbacks.Throughput (peak_flops), its progress bar in frosty_lm.callbacks, its optim node no name
    (it was AdamW's), and it may lack callbacks (progress lines, the HPARAMS end status,
    memorisation, attention maps, early stopping): today's conf/callbacks/default.yaml gives them. A callback's node
    that lacks a key of today's (the extras' every_n_validations) gets its constructor's default."""
    checkpoint = OmegaConf.select(cfg, "callbacks.model_checkpoint")
    if checkpoint is not None and checkpoint.get("_target_") in ("lightning.pytorch.callbacks.ModelCheckpoint",
                                                                 "frosty_lm.callbacks.BestAndLastCheckpoint",
                                                                 "frosty_lm.checkpoint.BestAndLastCheckpoint"):
        checkpoint._target_ = "frosty_lm.checkpoint_saving.BestAndLastCheckpoint"  # last.ckpt always the last state
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
