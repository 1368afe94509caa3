"""Reading Frosty checkpoints: safely (weights_only: loading never runs code from the file), with the weight names
of older versions brought up to date, and the model one describes. Torch only, so generate.py starts without
Lightning; checkpoint_saving.py writes them in training."""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from frosty_lm.config import FrostyError, GPTConfig
from frosty_lm.model import GPT, Bigram, build

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
    """The model (the GPT, or the bigram baseline) with the checkpoint's weights (in eval mode), and its
    vocabulary; a FrostyError if the file's contents disagree with themselves (an edited vocabulary, model
    settings or weights)."""
    hparams = ckpt["hyper_parameters"]
    vocab = hparams["vocab"]
    if not isinstance(vocab, str) or len(vocab) < 2 or list(vocab) != sorted(set(vocab)):
        raise FrostyError(f"{path} is damaged: its vocabulary is not the sorted, distinct characters train.py "
                          "stores; use a checkpoint written by train.py")
    try:
        model = build(GPTConfig(vocab_size=len(vocab), **hparams["model"]))
        state = {k.removeprefix("model."): v for k, v in current_names(ckpt["state_dict"]).items()
                 if k.startswith("model.")}
        model.load_state_dict(state)  # strict: the names and shapes the options give (no pos_emb with rope, ...)
        if isinstance(model, GPT) and model.cfg.tie_weights and not torch.equal(state["head.weight"],
                                                                                state["tok_emb.weight"]):
            raise ValueError("model.tie_weights=true, but head.weight and tok_emb.weight differ")
    except (TypeError, ValueError, RuntimeError, AttributeError) as err:
        reason = " ".join(str(err).split())[:200]
        raise FrostyError(f"{path} is damaged: its weights do not fit its model settings or vocabulary ({reason}); "
                          "use a checkpoint written by train.py") from None
    return model.eval(), vocab
