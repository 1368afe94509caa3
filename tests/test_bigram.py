"""model=bigram: the seed's starting point as a baseline, trained, checkpointed and sampled through the GPT's
pipeline, and a sweep that holds it beside the GPT."""
import json
import math

import pytest
import torch

from conftest import TINY
from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
from frosty_lm.config import GPTConfig
from frosty_lm.generation import stream_text
from frosty_lm.model import Bigram, build


def test_the_bigram_predicts_from_the_current_character_only():
    model = build(GPTConfig(vocab_size=5, block_size=8, kind="bigram"))
    assert isinstance(model, Bigram) and model.num_params() == 25
    with torch.no_grad():
        model.tok_emb.weight.copy_(torch.arange(25.0).view(5, 5))
    logits, loss = model(torch.tensor([[3, 1, 4]]), torch.tensor([[1, 4, 0]]))
    assert torch.equal(logits[0], torch.arange(25.0).view(5, 5)[[3, 1, 4]])  # row of each character
    assert loss is not None and torch.isfinite(loss)


def test_cached_and_uncached_sampling_agree_past_the_block():
    torch.manual_seed(0)
    model = build(GPTConfig(vocab_size=6, block_size=8, kind="bigram"))
    torch.nn.init.normal_(model.tok_emb.weight)
    vocab = "abcdef"
    cached = "".join(stream_text(model, vocab, "ab", 40, seed=3))
    uncached = "".join(stream_text(model, vocab, "ab", 40, seed=3, use_cache=False))
    assert cached == uncached and len(cached) == 40


def test_model_bigram_trains_checkpoints_and_generates_through_the_pipeline(invoke, text_file, tmp_path):
    run_dir = tmp_path / "bigram"
    code, out, err = invoke("train.py", *TINY, "model=bigram", "trainer.max_steps=60", "trainer.val_check_interval=30",
                            "optim.lr=0.1", "dataset=text", f"data.path={text_file}", f"hydra.run.dir={run_dir}")
    assert code == 0, err
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    model, vocab = model_from_checkpoint(ckpt)
    assert isinstance(model, Bigram) and ckpt["hyper_parameters"]["model"]["kind"] == "bigram"
    best = json.loads((run_dir / "status.json").read_text())["best_val_loss"]
    assert best < 0.75 * math.log(len(vocab))  # well below a uniform guess: it learned the character pairs
    code, out, err = invoke("generate.py", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "prompt=Snow",
                            "max_new_tokens=30")
    assert code == 0 and out.startswith("Snow") and len(out.strip()) >= 30, err
    from frosty_lm.attention import main as attention_main

    assert attention_main([f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "prompt=Snow"]) == 1


@pytest.mark.slow
def test_a_sweep_holds_the_bigram_beside_the_gpt(text_file, tmp_path):
    from conftest import run

    sweep = tmp_path / "sweep"
    result = run("train.py", "-m", *TINY, "trainer.max_steps=20", "trainer.val_check_interval=10", "dataset=text",
                 f"data.path={text_file}", "model=bigram,tiny", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert "2 of 2 runs finished" in result.stderr
    from conftest import job_dir

    kinds = {model: load_checkpoint(job_dir(sweep, f"model={model}") / "checkpoints/best.ckpt")["hyper_parameters"]
             ["model"]["kind"] for model in ("bigram", "tiny")}
    assert kinds == {"bigram": "bigram", "tiny": "gpt"}
