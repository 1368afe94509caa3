"""What attention looks at: the attention weights of every layer and head over a prompt, one panel each, with the
prompt's characters on both axes. The weights are the model's own: a forward pre-hook on each CausalSelfAttention
asks it for them over its input. callbacks.AttentionImage puts the same picture in TensorBoard's IMAGES tab.

    python -m frosty_lm.attention ckpt_path=outputs/runs/.../best.ckpt prompt="Whose woods" [out=attention.png]
"""
import io
import sys
import warnings
from pathlib import Path

import torch

from frosty_lm.cli import replace_file, run_entry_point
from frosty_lm.config import FrostyError
from frosty_lm.corpus import CharTokenizer
from frosty_lm.generation import check_prompt
from frosty_lm.model import GPT, CausalSelfAttention

MAX_PROMPT = 64  # characters: beyond this the panels are unreadable
SHOWN = {"\n": "⏎", " ": "␣", "\t": "⇥"}  # characters drawn as a symbol
warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # drawn as a box: a warning per character


def attention_maps(model: GPT, vocab: str, prompt: str) -> torch.Tensor:
    """The attention weights over prompt (its last block_size characters): (n_layer, n_head, T, T)."""
    layers = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    if not layers:
        raise FrostyError("this model has no attention (model.kind=bigram): nothing to draw")
    idx = torch.tensor([CharTokenizer(vocab).encode(prompt)[-model.cfg.block_size:]],
                       device=next(model.parameters()).device)
    maps = []

    def keep(attention: CausalSelfAttention, args: tuple) -> None:  # args: forward's (x, rope, ...)
        maps.append(attention.attention_weights(*args[:2])[0])

    hooks = [layer.register_forward_pre_hook(keep) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(idx)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return torch.stack(maps)


def draw(maps: torch.Tensor, prompt: str):
    """A matplotlib figure: a panel per layer (rows) and head (columns), queries down, keys across, the prompt's
    characters along the left and bottom edges. The panels are one image in one axes: ticks on each would be slow."""
    import numpy as np
    from matplotlib.figure import Figure

    n_layer, n_head, T, _ = maps.shape
    gap = 3  # cells between panels, room for the characters
    size = T + gap
    panels = np.pad(maps.cpu().double().numpy(), ((0, 0), (0, 0), (gap, 0), (gap, 0)), constant_values=np.nan)
    mosaic = panels.transpose(0, 2, 1, 3).reshape(n_layer * size, n_head * size)  # layers down, heads across
    mosaic = np.pad(mosaic, ((0, gap), (0, 0)), constant_values=np.nan)  # room below for the keys' characters
    inches = 0.12 * mosaic.shape[1] + 0.5, 0.12 * mosaic.shape[0] + 0.5  # 11 pixels per character at 90 dpi
    fig = Figure(figsize=inches, dpi=90)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.imshow(mosaic, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    labels = [SHOWN.get(ch, ch) for ch in prompt[-T:]]
    text = {"fontsize": 6, "family": "monospace", "ha": "center", "va": "center"}
    for layer in range(n_layer):
        top = layer * size + gap
        for head in range(n_head):
            ax.text(head * size + gap, top - 1.6, f"layer {layer + 1}, head {head + 1}", fontsize=8, va="bottom")
        for i, ch in enumerate(labels):  # the queries, down the left edge of each row
            ax.text(gap - 1.5, top + i, ch, **text)
    for head in range(n_head):
        for i, ch in enumerate(labels):  # the keys, along the bottom of each column
            ax.text(head * size + gap + i, n_layer * size + 1, ch, **text)
    return fig


def png_bytes(maps: torch.Tensor, prompt: str) -> bytes:
    buffer = io.BytesIO()
    draw(maps, prompt).savefig(buffer, format="png")
    return buffer.getvalue()


def rgb_pixels(maps: torch.Tensor, prompt: str):
    """The drawing as pixels (H, W, 3) uint8, as TensorBoard takes them: no PNG written and read back (slow)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(draw(maps, prompt))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def parse(argv: list[str]) -> dict[str, str]:
    args = {"out": "attention.png"}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("ckpt_path", "prompt", "out"):
            raise FrostyError(f"{arg!r}: give ckpt_path=FILE prompt=TEXT [out=FILE.png]")
        quoted = len(value) > 1 and value[0] == value[-1] == '"'  # as Hydra's 'prompt="..."' (generate.py)
        args[key] = value[1:-1] if quoted else value
    for key in ("ckpt_path", "prompt"):
        if not args.get(key):
            raise FrostyError(f"{key}= is missing: python -m frosty_lm.attention ckpt_path=FILE prompt=TEXT")
    if not args["out"].lower().endswith(".png"):  # never written over a checkpoint or any other file by mistake
        raise FrostyError(f"out={args['out']}: the image is a PNG: give a file name ending in .png")
    if len(args["prompt"]) > MAX_PROMPT:
        raise FrostyError(f"the prompt has {len(args['prompt'])} characters: give at most {MAX_PROMPT}, or the "
                          "panels are unreadable")
    return args


def main(argv: list[str] | None = None) -> int:
    from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint

    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    try:
        args = parse(argv)
        model, vocab = model_from_checkpoint(load_checkpoint(args["ckpt_path"]), args["ckpt_path"])
        check_prompt(vocab, args["prompt"])
        maps = attention_maps(model, vocab, args["prompt"])
        image = png_bytes(maps, args["prompt"])
        replace_file(Path(args["out"]).resolve(), lambda f: f.write(image))  # whole, or the old one stays
    except FrostyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write {args['out']}: {err.strerror}: give a writable out=FILE.png", file=sys.stderr)
        return 1
    n_layer, n_head, T = maps.shape[:3]
    over = (f"the last {T} characters (the model sees at most model.block_size={T})"
            if T < len(args["prompt"]) else f"{T} characters")
    print(f"wrote {args['out']}: {n_layer} layers x {n_head} heads over {over}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_entry_point(lambda: sys.exit(main()))
