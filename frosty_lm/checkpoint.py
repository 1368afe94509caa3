"""Finding and safely loading Frosty checkpoints (weights_only: loading never runs code from the file)."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from frosty_lm.errors import FrostyError
from frosty_lm.model import GPT, GPTConfig


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents as plain data, or a FrostyError that says what is wrong with the file."""
    file = Path(path).expanduser()
    if not file.exists():
        raise FrostyError(f"checkpoint {file} does not exist: give the path of a .ckpt file written by train.py")
    if file.is_dir():
        raise FrostyError(f"checkpoint {file} is a directory: give the path of a .ckpt file inside it")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported object"
        raise FrostyError(
            f"checkpoint {file} was refused: it holds objects other than plain data, which could run code "
            f"when loaded ({first_line}); only load checkpoints written by train.py"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise FrostyError(f"{file} is not a readable checkpoint (truncated or not a torch file: {type(err).__name__}): "
                          "give a .ckpt file written by train.py") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or not {"vocab", "model"} <= hparams.keys() or "state_dict" not in ckpt:
        raise FrostyError(f"{file} is not a Frosty checkpoint (no vocabulary or model config in it): "
                          "give a .ckpt file written by train.py")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> tuple[GPT, str]:
    """The GPT with the checkpoint's weights (in eval mode), and its vocabulary."""
    hparams = ckpt["hyper_parameters"]
    model = GPT(GPTConfig(vocab_size=len(hparams["vocab"]), **hparams["model"]))
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hparams["vocab"]


def latest_checkpoint(root: str | Path, name: str = "best.ckpt") -> Path:
    """The most recently written checkpoint called name anywhere under root (a run or sweep directory)."""
    found = [p for p in Path(root).rglob(name) if p.is_file()]
    if not found:
        raise FrostyError(f"no {name} found under {root}/: train a model first with `python train.py`, "
                          "or give ckpt_path=PATH")
    return max(found, key=lambda p: p.stat().st_mtime)
