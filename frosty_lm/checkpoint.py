"""Reading Frosty checkpoints: safely (weights_only: loading never runs code from the file), with the weight names
of older versions brought up to date; the model one describes; whether one fits a run that starts from it; the
overrides of an older one's run. Torch only, so generate.py starts without Lightning; checkpoint_saving.py writes
them in training."""
from __future__ import annotations

import dataclasses
import pickle
import re
import warnings
from pathlib import Path

import torch
import yaml

from frosty_lm.config import FrostyError, GPTConfig, is_int, max_time_seconds
from frosty_lm.model import GPT, Bigram, build
from frosty_lm.optim import optim_name

# Older checkpoints name some block weights otherwise: by the modules that once held them (ffwd.net.0), or without
# the attn. or mlp. of the module that holds them (blocks.0.qkv). Their names today, in this order:
OLD_NAMES = [(r"\.ffwd\.net\.0\.", ".mlp.fc."), (r"\.ffwd\.net\.2\.", ".mlp.fc2."),
             (r"(blocks\.\d+)\.(qkv|q_norm|k_norm|proj)\.", r"\1.attn.\2."),
             (r"(blocks\.\d+)\.(fc|fc2)\.", r"\1.mlp.\2.")]


def load_checkpoint(path: str | Path) -> dict:
    """A Frosty checkpoint's contents as plain data, or a FrostyError that says what is wrong with the file."""
    ckpt = read_safely(path)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not {"vocab", "model"} <= hparams.keys() or "state_dict" not in ckpt:
        raise FrostyError(f"{path} is not a Frosty checkpoint (no vocabulary or model config in it): "
                          "give a .ckpt file written by train.py")
    if isinstance(ckpt["state_dict"], dict):  # (Lightning restores this dict too: ckpt_path=, resume=)
        ckpt["state_dict"] = current_names(ckpt["state_dict"])
    return ckpt


def current_names(state_dict: dict) -> dict:
    """state_dict with the weight names of older checkpoints (OLD_NAMES) replaced by today's, in the same order."""
    renamed = {}
    for key, value in state_dict.items():
        for old, new in OLD_NAMES:
            key = re.sub(old, new, key)
        renamed[key] = value
    return renamed


def read_safely(path: str | Path):
    """torch.load with weights_only=True (nothing in the file can run code), and clear errors."""
    file = Path(path).expanduser()
    if not file.exists():
        raise FrostyError(f"checkpoint {file} does not exist: give the path of a .ckpt file written by train.py")
    if file.is_dir():
        raise FrostyError(f"checkpoint {file} is a directory: give the path of a .ckpt file inside it")
    if not file.is_file():  # a FIFO or a device would block or never end
        raise FrostyError(f"checkpoint {file} is not a regular file: give the path of a .ckpt file written by train.py")
    try:
        with warnings.catch_warnings():  # torch warns about some foreign files before failing on them
            warnings.simplefilter("ignore")
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = re.search(r"GLOBAL (\S+)", str(err))
        if blocked:  # the weights-only unpickler met a reference to code
            raise FrostyError(
                f"checkpoint {file} was refused: it refers to code ({blocked.group(1)}) that loading would run; "
                "only load checkpoints written by train.py"
            ) from None
        raise FrostyError(f"{file} is not a readable checkpoint (not a torch file): "
                          "give a .ckpt file written by train.py") from None
    except Exception as err:  # torch raises many kinds for a truncated or foreign file
        raise FrostyError(f"{file} is not a readable checkpoint "
                          f"(truncated, or not a torch file: {type(err).__name__}): "
                          "give a .ckpt file written by train.py") from None
    return ckpt


def same_file(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def model_from_checkpoint(ckpt: dict, path: str | Path = "the checkpoint") -> tuple[GPT | Bigram, str]:
    """The model (the GPT, or the bigram baseline) with the weights of a checkpoint that load_checkpoint read, in eval
    mode, and its vocabulary; a FrostyError if the file's contents disagree with themselves (an edited vocabulary,
    model settings or weights) or its weights are not finite."""
    hparams = ckpt["hyper_parameters"]
    vocab = hparams["vocab"]
    if not isinstance(vocab, str) or len(vocab) < 2 or list(vocab) != sorted(set(vocab)):
        raise FrostyError(f"{path} is damaged: its vocabulary is not the sorted, distinct characters train.py "
                          "stores; use a checkpoint written by train.py")
    try:
        cfg = GPTConfig(vocab_size=len(vocab), **hparams["model"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        with torch.device("meta"):  # the names and shapes its settings give, before any memory is taken for them
            shapes = {k: v.shape for k, v in build(cfg).state_dict().items()}
        keys = [*shapes, *(k for k in state if k not in shapes)]  # (no pos_emb with rope, ...)
        if wrong := next((k for k in keys if k not in state or k not in shapes or state[k].shape != shapes[k]), None):
            raise ValueError(f"{wrong}: {'missing' if wrong not in state else tuple(state[wrong].shape)} in the "
                             f"file, {tuple(shapes[wrong]) if wrong in shapes else 'none'} for its settings")
        model = build(cfg)
        model.load_state_dict(state)
        if isinstance(model, GPT) and model.cfg.tie_weights and not torch.equal(state["head.weight"],
                                                                                state["tok_emb.weight"]):
            raise ValueError("model.tie_weights=true, but head.weight and tok_emb.weight differ")
    except (TypeError, ValueError, RuntimeError, AttributeError) as err:
        reason = " ".join(str(err).split())[:200]
        raise FrostyError(f"{path} is damaged: its weights do not fit its model settings or vocabulary ({reason}); "
                          "use a checkpoint written by train.py") from None
    if not all(torch.isfinite(p).all() for p in model.parameters()):  # its samples and maps would be NaN
        raise FrostyError(f"{path} holds NaN or infinite weights: use another checkpoint, e.g. the run's best.ckpt")
    return model.eval(), vocab


def check_compatible(ckpt_path: str, hparams: dict, vocab: str, model: dict, optim: dict,
                     corpus_sha256: str | None = None) -> None:
    """A checkpoint to start from (hparams: its hyper_parameters) must share this run's vocabulary, model shape and
    optimizer, and to resume, its corpus's text (corpus_sha256; a checkpoint that records none passes). A setting it
    does not record (written before the setting existed) was GPTConfig's default."""
    if hparams["vocab"] != vocab:
        raise FrostyError(f"{ckpt_path} was trained on another vocabulary ({len(hparams['vocab'])} characters, this "
                          f"corpus has {len(vocab)}): start from a checkpoint of the same corpus")
    if corpus_sha256 and hparams.get("corpus_sha256") not in (None, corpus_sha256):
        raise FrostyError(f"{ckpt_path} was trained on other text than its corpus file holds now (its sha256 differs): "
                          "a resume would go on with another train/val split; put the file back as it was, or start a "
                          f"new run from the checkpoint with ckpt_path={ckpt_path}")
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    stored, wanted = {**defaults, **hparams["model"]}, {**defaults, **model}
    keys = ("kind", "block_size", "n_layer", "n_head", "n_embd", "bias", "position", "norm", "qk_norm", "activation",
            "logit_softcap", "tie_weights")
    if differ := [key for key in keys if stored.get(key) != wanted.get(key)]:  # every one, to fix in one go
        theirs, ours = (" ".join(f"model.{key}={side.get(key)}" for key in differ) for side in (stored, wanted))
        raise FrostyError(f"{ckpt_path} has {theirs}, this run {ours}: use the checkpoint's model settings ({theirs})")
    trained, asked = optim_name(hparams.get("optim") or {}), optim_name(optim)
    if trained != asked:
        raise FrostyError(f"{ckpt_path} was trained with optim={trained}, this run asks for optim={asked}: start from "
                          f"it with optim={trained}")


def check_start_state(ckpt_path: str, ckpt: dict, module) -> None:
    """A checkpoint to start from, before Lightning restores it: its weights fit this run's LightningModule (loaded
    into it, as Lightning would) and are finite, and its optimizer and random states are well formed."""
    state = ckpt["state_dict"]
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise FrostyError(f"{ckpt_path} holds weights that do not fit its model ({detail}): the file was edited or "
                          "damaged; start from another checkpoint") from None
    if missing or unexpected:
        what = f"lacks {', '.join(missing[:3])}" if missing else f"has unknown {', '.join(unexpected[:3])}"
        raise FrostyError(f"{ckpt_path} {what}: the file was edited or damaged; start from another checkpoint")
    weights = (t for name, t in state.items() if t.is_floating_point() and name != "best_val_loss")  # inf: none yet
    if not all(torch.isfinite(t).all() for t in weights):
        raise FrostyError(f"{ckpt_path} holds NaN or infinite weights: training cannot go on from them; start from "
                          "an earlier checkpoint (e.g. its run's best.ckpt), or anew")
    optimizers = ckpt.get("optimizer_states")
    if not (isinstance(optimizers, list) and len(optimizers) == 1 and isinstance(optimizers[0], dict)
            and {"state", "param_groups"} <= optimizers[0].keys()):
        raise FrostyError(f"{ckpt_path} holds no optimizer state to go on with: give a checkpoint written by train.py")
    rng = ckpt.get("torch_rng_state")
    if rng is not None and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
                                and rng.shape == torch.get_rng_state().shape):
        raise FrostyError(f"{ckpt_path} holds a damaged random state (torch_rng_state): give a checkpoint written "
                          "by train.py")


def check_more_to_train(ckpt: dict, cfg, run: Path) -> None:
    """A run already at its step or time limit is refused with the key to raise, rather than ending without a step."""
    step, max_steps = ckpt.get("global_step"), cfg.trainer.max_steps
    if not (is_int(step) and step >= 0):
        raise FrostyError(f"{run} holds a damaged step count (global_step={step!r}): give a checkpoint written by "
                          "train.py")
    if isinstance(max_steps, int) and step >= max_steps:
        raise FrostyError(f"{run} is at step {step} and trainer.max_steps={max_steps}: nothing to train; give a larger "
                          f"trainer.max_steps (e.g. trainer.max_steps={2 * max_steps})")
    max_time = cfg.trainer.get("max_time")
    elapsed = ckpt.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {}).get("train")
    if max_time and elapsed is not None and elapsed >= max_time_seconds(max_time):
        raise FrostyError(f"{run} has trained {elapsed:.0f} s and trainer.max_time={max_time}: nothing to train; "
                          "give a longer trainer.max_time (DD:HH:MM:SS), or trainer.max_time=null")


def recorded_overrides(run: Path, this_subdir: str | None) -> list[str]:
    """An older checkpoint records no overrides: those its run was started with, then those of each of its resumes
    but this one, oldest first (Hydra's .hydra/ records)."""
    first = run / ".hydra" / "overrides.yaml"
    if not first.is_file():
        raise FrostyError(f"cannot resume {run}: it has no .hydra/overrides.yaml (not a run of train.py): start a new "
                          f"run from it with ckpt_path={run / 'checkpoints' / 'last.ckpt'} and the run's overrides")
    overrides = []
    resumes = [file for file in sorted((run / ".hydra").glob("resumed-*/overrides.yaml"))
               if not this_subdir or file.parent != run / this_subdir]
    for file in [first, *resumes]:
        try:
            listed = yaml.safe_load(file.read_bytes())  # plainly: YAML's aliases stay shared, nothing resolves
        except Exception:  # not YAML, not UTF-8, unreadable: the same answer
            listed = None
        if not (isinstance(listed, list) and all(isinstance(o, str) for o in listed)):
            raise FrostyError(f"{file} is not a list of overrides (damaged or edited): resume only runs of train.py")
        overrides += listed
    return overrides
