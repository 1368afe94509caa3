"""Checkpoints written by earlier versions of Frosty still load."""
from pathlib import Path

import torch

from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
OLD = FIXTURES / "old_layout.ckpt"


def test_an_old_checkpoint_generates_what_it_generated_before(invoke):
    code, out, err = invoke("generate.py", f"ckpt_path={OLD}", "prompt=Snow", "max_new_tokens=60", "seed=3")
    assert code == 0, err
    assert out == (FIXTURES / "old_layout_sample.txt").read_text()


def test_old_weight_names_load_into_the_new_modules():
    state = torch.load(OLD, weights_only=True)["state_dict"]
    assert any(".attn.qkv." in k for k in state) and any(".ffwd.net.2." in k for k in state)  # really the old names
    model, _ = model_from_checkpoint(load_checkpoint(OLD))  # as every caller reads one
    assert torch.equal(model.blocks[0].mlp.fc2.weight, state["model.blocks.0.ffwd.net.2.weight"])
    assert torch.equal(model.blocks[0].attn.qkv.bias, state["model.blocks.0.attn.qkv.bias"])


def test_an_old_checkpoint_fits_a_run_with_the_default_model_options():
    import dataclasses

    import pytest

    from frosty_lm.checkpoint import check_compatible
    from frosty_lm.config import FrostyError, GPTConfig

    hparams = torch.load(OLD, weights_only=True)["hyper_parameters"]
    assert "position" not in hparams["model"]  # written before the model options existed
    today = {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size"}
    run = {**today, **hparams["model"]}
    adamw = {"name": "adamw"}
    check_compatible(str(OLD), hparams, hparams["vocab"], run, adamw)  # ckpt_path=old.ckpt in a new run: accepted
    with pytest.raises(FrostyError, match="has model.position=learned, this run model.position=rope"):
        check_compatible(str(OLD), hparams, hparams["vocab"], {**run, "position": "rope"}, adamw)
    with pytest.raises(FrostyError, match="was trained with optim=adamw, this run asks for optim=muon"):
        check_compatible(str(OLD), hparams, hparams["vocab"], run, {"name": "muon"})
