"""generate.py refuses what it cannot honour with one line (numbers, devices, damaged checkpoints) and stops
quietly when its reader goes away."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, split_import_times
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
    del ckpt["state_dict"]["model.blocks.0.mlp.fc.weight"]


def longer_vocabulary(ckpt):
    ckpt["hyper_parameters"]["vocab"] += "\u2603"


@pytest.mark.parametrize("edit, message", [
    (nan_weights, "holds NaN or infinite weights: use another checkpoint"),
    (shuffled_vocabulary, "its vocabulary is not the sorted, distinct characters"),
    (wider_model, "its weights do not fit its model settings"),
    (missing_tensor, "its weights do not fit its model settings"),
    (longer_vocabulary, "its weights do not fit its model settings or vocabulary"),
])
def test_a_checkpoint_that_disagrees_with_itself_is_refused(invoke, trained_run, tmp_path, edit, message):
    code, out, err = invoke("generate.py", f"ckpt_path={damaged(trained_run, tmp_path, edit)}", "prompt=Snow")
    assert_one_line_error(code, err, "damaged.ckpt", message)
    assert out == ""


def test_generate_py_samples_without_lightning_and_stops_quietly_when_its_pipe_closes(trained_run, tmp_path):
    """generate.py, a process of its own as a user runs it, reads checkpoints with torch alone (Lightning's import is
    most of a start: docs/performance.md), and `generate.py | head -c 10` ends it without a traceback (exit
    status 0). The imports are checked up to that end; the other tests of generate.py run it in the pytest process."""
    command = [sys.executable, "-X", "importtime", str(ROOT / "generate.py"),
               f"ckpt_path={trained_run}/checkpoints/best.ckpt", "prompt=Snow", "max_new_tokens=100000"]
    with open(tmp_path / "stderr", "w+") as stderr:  # a file: the import lines would fill a pipe nobody reads yet
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr, text=True)
        sampled = proc.stdout.read(10)  # (fewer only if generate.py ended first)
        assert len(sampled) == 10 and sampled.startswith("Snow")
        proc.stdout.close()  # as `generate.py | head -c 10` does
        proc.wait(timeout=120)
        err = (tmp_path / "stderr").read_text()
    rest, packages = split_import_times(err)
    assert proc.returncode == 0, rest[-2000:]
    assert "Traceback" not in rest and "Error" not in rest
    assert "torch" in packages  # the import lines were read
    assert not packages & {"lightning", "pytorch_lightning", "lightning_fabric"}, sorted(packages)


@pytest.mark.slow
@pytest.mark.parametrize("stdout, message", [
    ("closed", "error: standard output is closed: generate.py writes its samples there"),
    ("/dev/full", "error: cannot write to standard output: No space left on device"),
])
def test_an_output_that_cannot_be_written_is_one_line(trained_run, tmp_path, stdout, message):
    command = [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={trained_run}/checkpoints/best.ckpt",
               "max_new_tokens=50"]
    if stdout == "closed":  # generate.py >&-
        done = subprocess.run(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, timeout=120,
                              preexec_fn=lambda: os.close(1))
    else:
        with open(stdout, "w") as out:
            done = subprocess.run(command, cwd=tmp_path, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


@pytest.mark.parametrize("device, reason", [("meta", "(a meta device holds no data)"), ("hpu", "(No module named")])
def test_a_device_torch_cannot_use_here_is_refused(invoke, trained_run, device, reason):
    code, _, err = invoke("generate.py", f"ckpt_path={trained_run}/checkpoints/best.ckpt", f"device={device}")
    assert_one_line_error(code, err, f"device='{device}' cannot be used here {reason}")


def test_settings_that_disagree_with_the_weights_are_refused_before_the_model_takes_memory(
        invoke, trained_run, tmp_path, monkeypatch):
    """A small file whose settings ask for a huge model: refused from the shapes alone (the meta device), before a
    model of that size is built; the line names the first weight that differs."""
    import frosty_lm.checkpoint

    built, build = [], frosty_lm.checkpoint.build
    monkeypatch.setattr(frosty_lm.checkpoint, "build", lambda cfg: built.append(torch.get_default_device().type)
                        or build(cfg))
    vocab = len(torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["vocab"])
    huge = damaged(trained_run, tmp_path, lambda ckpt: ckpt["hyper_parameters"]["model"].update(n_embd=2**14))
    code, _, err = invoke("generate.py", f"ckpt_path={huge}", "prompt=Snow")
    assert_one_line_error(code, err, "its weights do not fit its model settings or vocabulary (tok_emb.weight: "
                          f"({vocab}, 32) in the file, ({vocab}, 16384) for its settings)")
    assert built == ["meta"]


@pytest.mark.slow
def test_with_its_standard_error_closed_only_samples_reach_standard_output(trained_run, tmp_path):
    """generate.py 2>&-: the lines meant for standard error (here the second sample's heading) go nowhere, not into
    the samples (Python's print would fall back to standard output)."""
    command = [sys.executable, str(ROOT / "generate.py"), f"ckpt_path={trained_run}/checkpoints/best.ckpt",
               "prompt=Snow", "max_new_tokens=20", "num_samples=2"]
    done = subprocess.run(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=lambda: os.close(2))
    assert done.returncode == 0
    assert done.stdout.count("Snow") >= 2 and "sample" not in done.stdout, done.stdout


def test_a_temperature_too_small_to_divide_by_decodes_greedily(invoke, trained_run):
    texts = []
    for temperature in ("0", "1e-40"):
        code, out, err = invoke("generate.py", f"ckpt_path={trained_run}/checkpoints/best.ckpt", "max_new_tokens=40",
                                f"temperature={temperature}")
        assert code == 0, err
        texts.append(out)
    assert texts[0] == texts[1]
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert (logits / 1e-40).softmax(-1).isnan().all()  # what dividing would give: no probabilities at all
    from frosty_lm.generation import sample_next
    assert sample_next(logits, temperature=1e-40).tolist() == [1]


def test_an_escaped_interpolation_in_generate_pys_prompt_is_its_characters(invoke, trained_run):
    code, _, err = invoke("generate.py", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "prompt=a\\${x}")
    assert_one_line_error(code, err, "prompt characters not in the checkpoint's vocabulary: '$', '{'")


def test_ctrl_c_while_generate_py_samples_is_one_line_and_exit_status_130(invoke, trained_run, monkeypatch):
    from frosty_lm import generation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation, "sample_next", interrupted)  # the first character, as a Ctrl-C would stop it
    code, _, err = invoke("generate.py", f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}")
    assert code == 130 and err.strip().endswith("interrupted: nothing more was saved") and "Traceback" not in err


@pytest.mark.parametrize("typed, what", [("1e5", "a number"), ("42", "a number"), ("true", "a boolean")])
def test_a_prompt_read_as_a_number_or_boolean_is_refused_before_a_checkpoint_loads(invoke, tmp_path, typed, what):
    """Hydra reads prompt=1e5 as 100000.0 and prompt=true as True: sampling from their text is not what was asked."""
    code, out, err = invoke("generate.py", f"prompt={typed}", f"ckpt_path={tmp_path / 'none.ckpt'}")
    assert_one_line_error(code, err, f"prompt={typed} was read as {what}, not text: quote it, 'prompt=\"{typed}\"'")
    assert out == ""


@pytest.mark.parametrize("key", ["callbacks.sample_text.prompt", "callbacks.attention_image.prompt"])
def test_a_callbacks_prompt_read_as_a_number_is_refused_before_training(invoke, text_file, tmp_path, key):
    code, _, err = invoke("train.py", f"{key}=1e5", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, f"{key}=1e5 was read as a number, not text")
    assert not (tmp_path / "r" / "checkpoints").exists()
