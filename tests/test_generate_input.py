"""generate.py refuses what it cannot honour with one line (numbers, devices, damaged checkpoints) and stops
quietly when its reader goes away."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from test_reliability import assert_one_line_error


def damaged(trained_run: Path, tmp_path: Path, edit) -> Path:
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    edit(ckpt)
    path = tmp_path / "damaged.ckpt"
    torch.save(ckpt, path)
    return path


def nan_weights(ckpt):
    ckpt["state_dict"]["model.head.weight"][0, 0] = float("nan")


def shuffled_vocabulary(ckpt):
    vocab = ckpt["hyper_parameters"]["vocab"]
    ckpt["hyper_parameters"]["vocab"] = vocab[1:] + vocab[0]


def wider_model(ckpt):
    ckpt["hyper_parameters"]["model"]["n_embd"] = 64


def missing_tensor(ckpt):
    del ckpt["state_dict"]["model.blocks.0.fc.weight"]


def longer_vocabulary(ckpt):
    ckpt["hyper_parameters"]["vocab"] += "\u2603"


@pytest.mark.parametrize("edit, message", [
    (nan_weights, "gives non-finite predictions"),
    (shuffled_vocabulary, "its vocabulary is not the sorted, distinct characters"),
    (wider_model, "its weights do not fit its model settings"),
    (missing_tensor, "its weights do not fit its model settings"),
    (longer_vocabulary, "its weights do not fit its model settings or vocabulary"),
])
def test_a_checkpoint_that_disagrees_with_itself_is_refused(invoke, trained_run, tmp_path, edit, message):
    code, out, err = invoke("generate.py", f"ckpt_path={damaged(trained_run, tmp_path, edit)}", "prompt=Snow")
    assert_one_line_error(code, err, "damaged.ckpt", message)
    assert out == ""


def test_a_closed_pipe_stops_generation_quietly(trained_run, tmp_path):
    command = [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={trained_run}/checkpoints/best.ckpt",
               "prompt=Snow", "max_new_tokens=100000"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10).startswith(b"Snow")
    proc.stdout.close()  # as `generate.py | head -c 10` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"Error" not in err
