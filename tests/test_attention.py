"""Attention maps: the weights the model computes, rows that sum to 1, nothing above the diagonal; the PNG of
python -m frosty_lm.attention, and the image in TensorBoard (every few validations and at the last)."""
import errno

import pytest
import torch
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from frosty_lm.attention import attention_maps, main, parse
from frosty_lm.config import GPTConfig
from frosty_lm.model import GPT

VOCAB = "\n ,.Tabcdefghijklmnopqrstuvwxyz"


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(VOCAB), block_size=64, n_layer=2, n_head=3, n_embd=24, dropout=0.0))


def test_each_row_of_the_weights_sums_to_one_and_nothing_is_above_the_diagonal():
    model, prompt = tiny_model(), "The woods are lovely, dark and deep."
    maps = attention_maps(model, VOCAB, prompt)
    T = len(prompt)
    assert maps.shape == (2, 3, T, T)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 3, T), atol=1e-5)
    below = torch.ones(T, T, dtype=torch.bool).tril()
    assert (maps[..., ~below] == 0).all() and (maps[..., below] > 0).all()  # causal: only the past, all of it
    assert maps[:, :, 0, 0].eq(1).all()  # the first character can only look at itself
    assert not torch.allclose(maps[0, 0], maps[1, 2])  # layers and heads differ


def test_watching_leaves_the_model_and_its_output_unchanged():
    model = tiny_model().train()
    idx = torch.tensor([[VOCAB.index(c) for c in "deep woods"]])
    before = model.eval()(idx)[0]
    maps = attention_maps(model.train(), VOCAB, "deep woods")
    assert model.training and torch.equal(model.eval()(idx)[0], before)
    assert torch.equal(attention_maps(model, VOCAB, "deep woods"), maps)  # the hooks are gone: one map per layer


def test_tensorboards_pixels_are_the_png_that_the_command_writes():
    import io

    from frosty_lm.attention import png_bytes, rgb_pixels

    prompt = "deep woods"
    maps = attention_maps(tiny_model(), VOCAB, prompt)
    png = imread(io.BytesIO(png_bytes(maps, prompt)), format="png")[..., :3]
    pixels = rgb_pixels(maps, prompt)
    assert pixels.dtype.name == "uint8" and pixels.shape == png.shape
    assert (pixels == (png * 255).round()).all()


def test_every_label_is_inside_the_picture():  # the queries down the left, the keys along the bottom
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from frosty_lm.attention import draw

    prompt = "deep woods"
    fig = draw(attention_maps(tiny_model(), VOCAB, prompt), prompt)
    FigureCanvasAgg(fig).draw()
    texts = fig.axes[0].texts
    picture = fig.bbox
    assert len(texts) == 2 * 3 + 2 * len(prompt) + 3 * len(prompt)  # titles, queries per layer, keys per head
    for text in texts:
        box = text.get_window_extent()
        assert picture.x0 <= box.x0 and box.x1 <= picture.x1 and picture.y0 <= box.y0 and box.y1 <= picture.y1, text


def test_the_command_writes_a_png_per_layer_and_head(trained_run, tmp_path, capsys):
    out = tmp_path / "attention.png"
    prompt = "Snow woods road dark deep miles sleep keep horse lake stop ice."  # 63: more than block_size (32)
    assert main([f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"prompt={prompt}", f"out={out}"]) == 0
    image = imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 300
    err = capsys.readouterr().err
    assert "2 layers x 2 heads over the last 32 characters (the model sees at most model.block_size=32)" in err


@pytest.mark.parametrize("args, message", [
    (["prompt=x"], "ckpt_path= is missing"),
    (["ckpt_path=a.ckpt", "prompt=" + "x" * 65], "give at most 64"),
    (["ckpt_path=a.ckpt", "prompt=x", "colour=red"], "'colour=red': give ckpt_path=FILE prompt=TEXT"),
    (["ckpt_path=a.ckpt", "prompt=x", "out=a.ckpt"], "out=a.ckpt: the image is a PNG: give a file name ending in .png"),
])
def test_bad_arguments_are_one_line(args, message, capsys):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_out_never_writes_over_a_checkpoint(trained_run, capsys):
    best = trained_run / "checkpoints" / "best.ckpt"
    before = best.read_bytes()
    assert main([f"ckpt_path={best}", "prompt=Snow", f"out={best}"]) == 1
    assert best.read_bytes() == before and "give a file name ending in .png" in capsys.readouterr().err


def test_a_full_disk_keeps_the_earlier_image_whole(trained_run, tmp_path, capsys, monkeypatch):
    """The image is written beside its name and renamed over it: a write that fails (here the flush to disk, as on a
    full disk) leaves the earlier image as it was, and no temporary file."""
    import frosty_lm.cli

    out = tmp_path / "attention.png"
    out.write_bytes(b"the earlier image")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frosty_lm.cli.os, "fsync", full)
    assert main([f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "prompt=Snow", f"out={out}"]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write {out}: No space left on device")
    assert out.read_bytes() == b"the earlier image" and [p.name for p in tmp_path.iterdir()] == ["attention.png"]


def test_the_last_validation_puts_the_maps_in_tensorboards_images(trained_run):
    events = EventAccumulator(str(trained_run), size_guidance={"images": 0})
    events.Reload()
    # TINY: validations at 15 and 30; the maps at every 4th validation (by default) and at the last
    assert [e.step for e in events.Images("attention")] == [30]
    assert all(e.width > 300 and e.height > 300 for e in events.Images("attention"))


def test_a_checkpoint_with_nan_weights_is_one_line(tmp_path, capsys):
    import dataclasses

    model = tiny_model()
    settings = {k: v for k, v in dataclasses.asdict(model.cfg).items() if k != "vocab_size"}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["model.blocks.0.attn.qkv.weight"][0, 0] = float("nan")  # every map after it is NaN: a blank image
    path, out = tmp_path / "nan.ckpt", tmp_path / "attention.png"
    torch.save({"hyper_parameters": {"vocab": VOCAB, "model": settings}, "state_dict": state}, path)
    assert main([f"ckpt_path={path}", "prompt=deep woods", f"out={out}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "holds NaN or infinite weights" in err
    assert not out.exists()


def test_help_and_hydra_style_quotes(capsys):
    assert main(["--help"]) == 0 and "ckpt_path=" in capsys.readouterr().out
    assert parse(["ckpt_path=a.ckpt", 'prompt="Hi"'])["prompt"] == "Hi"  # Hydra's quotes, as generate.py reads them
    assert parse(["ckpt_path=a.ckpt", 'prompt="'])["prompt"] == '"'  # a quote character itself
