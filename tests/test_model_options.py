"""The model options (model.position, norm, qk_norm, activation, zero_init_proj, logit_softcap, tie_weights): with
their defaults the model is the seed's, bit for bit; each option alone, and all of them together, generates the same
with and without the key/value cache, trains, and goes through a checkpoint; bad values are one-line errors."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import frosty_lm.generation as generation
from conftest import CONF, TINY
from frosty_lm.checkpoint import load_checkpoint, model_from_checkpoint
from frosty_lm.config import FrostyError, GPTConfig, check_config
from frosty_lm.model import GPT
from test_reliability import assert_one_line_error

ALL = dict(position="rope", norm="rmsnorm", qk_norm=True, activation="relu2", zero_init_proj=True, logit_softcap=5.0,
           tie_weights=True)
OPTIONS = {key: {key: value} for key, value in ALL.items()} | {"all": ALL}
VOCAB = "".join(sorted(set("\n abcdefghij")))  # 12 characters
V, BLOCK = len(VOCAB), 16


def tiny(**options) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, dropout=0.0, **options)).eval()


def shaken(model: GPT, std: float = 0.1) -> GPT:
    """model with every weight moved a little (a zero projection too), so that every path of the math counts."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


# ---- the defaults are the seed's architecture, bit for bit -----------------------------------------------------

# Recorded from frosty_lm/model.py without the options (the seed's architecture alone), with
# torch.manual_seed(0) and GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0) plus
# the overrides; idx = (arange(32).view(2, 16) * 7) % 11; 5 AdamW steps (lr 1e-2, torch.manual_seed(1) first) on
# idx -> idx. With the options at their defaults, the weights, logits and trained weights hash the same (sha256).
RECORDED = {
    "defaults": dict(
        overrides=dict(),
        rand_after_init=0.3604159951210022,  # the next draw after building: the same RNG consumption
        weight_sums=(78.64638506601341, 168.06202811244793),  # sum, sum of |w|
        logit_sums=(-0.7996583137428388, 23.202129062381573), loss=2.3807263374328613,
        train_losses=[2.3807263374328613, 2.223999261856079, 2.1000025272369385, 1.9607224464416504,
                      1.8457210063934326], loss_after=1.7242095470428467),
    "no bias, dropout": dict(
        overrides=dict(bias=False, dropout=0.1),
        rand_after_init=0.16269993782043457,
        weight_sums=(79.89002839080831, 168.8110920356844),
        logit_sums=(-4.572632816853002, 24.78056367742829), loss=2.4258739948272705,
        train_losses=[2.425708532333374, 2.205695390701294, 2.0803780555725098, 1.9682011604309082,
                      1.8652067184448242], loss_after=1.7474952936172485),
}
BLOCK_KEYS = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
              "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
DEFAULT_KEYS = ["tok_emb.weight", "pos_emb.weight", *(f"blocks.{i}.{k}" for i in (0, 1) for k in BLOCK_KEYS),
                "ln_f.weight", "ln_f.bias", "head.weight"]


def sums(tensors) -> tuple[float, float]:
    tensors = [t.detach().double() for t in tensors]
    return sum(t.sum().item() for t in tensors), sum(t.abs().sum().item() for t in tensors)


@pytest.mark.parametrize("name", RECORDED)
def test_the_defaults_give_the_weights_logits_and_training_of_the_code_before_the_options(name):
    r = RECORDED[name]
    torch.manual_seed(0)
    cfg = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    model = GPT(GPTConfig(**{**cfg, **r["overrides"]}))
    assert torch.rand(1).item() == r["rand_after_init"]
    state = model.state_dict()
    keys = DEFAULT_KEYS if model.cfg.bias else [k for k in DEFAULT_KEYS if not k.endswith("bias")]
    assert list(state) == keys
    assert sums(state.values()) == pytest.approx(r["weight_sums"], rel=1e-6)
    idx = (torch.arange(32).view(2, 16) * 7) % 11
    logits, loss = model.eval()(idx, idx)
    assert sums([logits]) == pytest.approx(r["logit_sums"], abs=1e-4)
    assert loss.item() == pytest.approx(r["loss"], abs=1e-6)
    model.train()
    torch.manual_seed(1)
    losses = adamw_steps(model, idx, idx, 5)
    assert losses == pytest.approx(r["train_losses"], abs=1e-5)
    assert model(idx, idx)[1].item() == pytest.approx(r["loss_after"], abs=1e-5)


def test_an_old_checkpoint_loads_with_the_default_options_and_computes_what_it_did():
    ckpt = load_checkpoint(Path(__file__).parent / "fixtures/old_layout.ckpt")
    assert "position" not in ckpt["hyper_parameters"]["model"]  # written before the options
    model, vocab = model_from_checkpoint(ckpt)
    defaults = GPTConfig(vocab_size=2)
    assert all(getattr(model.cfg, key) == getattr(defaults, key) for key in ALL)
    idx = (torch.arange(32).view(2, 16) * 7) % len(vocab)
    with torch.no_grad():
        logits, loss = model(idx, idx)
    # recorded from model.py without the options
    assert sums([logits]) == pytest.approx((-2.7641838861454744, 58.73932195341331), abs=1e-4)
    assert loss.item() == pytest.approx(3.364602565765381, abs=1e-6)


# ---- every option: generation, training, checkpoints ------------------------------------------------------------

real_sample_next = generation.sample_next


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS)
def test_cached_generation_equals_uncached_past_the_block(options, monkeypatch):
    model = shaken(tiny(**options))
    seen = []  # the logits of every step, as sample_next gets them
    monkeypatch.setattr(generation, "sample_next",
                        lambda logits, *a: seen.append(logits) or real_sample_next(logits, *a))
    prompt = torch.tensor([[1, 4, 2, 7, 3]])
    runs, logits = [], []
    for use_cache in (True, False):
        seen.clear()
        g = torch.Generator().manual_seed(123)
        # 50 new characters with block_size 16: the context is cropped (and the cache rebuilt) several times
        runs.append(torch.stack(list(generation.generate(model, prompt, 50, generator=g, use_cache=use_cache)), dim=1))
        logits.append(torch.cat(seen))
    assert runs[0].shape == (1, 50)
    assert torch.equal(runs[0], runs[1])
    assert torch.allclose(logits[0], logits[1], atol=1e-4)


def adamw_steps(model, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """The losses of `steps` AdamW steps (lr 1e-2) on the batch x -> y."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(x, y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS)
def test_a_tiny_model_with_the_option_trains(options):
    model = tiny(**options).train()
    torch.manual_seed(1)
    idx = torch.randint(V, (1, 8)).repeat(4, 3)[:, : BLOCK + 1]  # (4, 17): a pattern to learn
    losses = adamw_steps(model, idx[:, :-1], idx[:, 1:], 8)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5, losses


def test_all_options_train_under_bf16_autocast():
    model = tiny(**ALL).train()
    idx = torch.randint(V, (4, BLOCK))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def checkpoint(model: GPT) -> dict:
    """What train.py writes for model, as far as model_from_checkpoint reads it."""
    cfg = {k: v for k, v in vars(model.cfg).items() if k != "vocab_size"}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    return {"hyper_parameters": {"vocab": VOCAB, "model": cfg}, "state_dict": state}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS)
def test_a_checkpoint_round_trip(options, tmp_path):
    model = shaken(tiny(**options))
    torch.save(checkpoint(model), tmp_path / "m.ckpt")
    loaded, vocab = model_from_checkpoint(torch.load(tmp_path / "m.ckpt", weights_only=True))
    assert vocab == VOCAB and loaded.cfg == model.cfg
    idx = torch.randint(V, (2, BLOCK))
    assert torch.equal(loaded(idx)[0], model(idx)[0])
    if model.cfg.tie_weights:
        assert loaded.head.weight is loaded.tok_emb.weight


@pytest.mark.parametrize("edit, reason", [
    (lambda c: c["state_dict"].update({"model.pos_emb.weight": torch.zeros(BLOCK, 32)}), "pos_emb"),  # rope: no table
    (lambda c: c["hyper_parameters"]["model"].update(position="learned"), "pos_emb"),  # a table it does not have
    (lambda c: c["hyper_parameters"]["model"].update(qk_norm=False), "q_norm"),
    (lambda c: c["hyper_parameters"]["model"].update(norm="layernorm"), "bias"),
    (lambda c: c["state_dict"]["model.head.weight"].add_(1.0), "head.weight and tok_emb.weight differ"),
    (lambda c: c["hyper_parameters"]["model"].update(position="sine"), "model.position='sine'"),
], ids=["rope-with-a-table", "learned-without-one", "qk-norm-weights-left", "norm", "untied", "bad-option"])
def test_a_checkpoint_whose_weights_do_not_follow_its_options_is_damaged(edit, reason):
    ckpt = checkpoint(tiny(**ALL))
    ckpt["state_dict"] = {k: v.clone() for k, v in ckpt["state_dict"].items()}  # the tied tensor, twice
    edit(ckpt)
    with pytest.raises(FrostyError, match="is damaged") as err:
        model_from_checkpoint(ckpt)
    assert reason in str(err.value)


def test_train_py_records_the_options_and_generate_py_uses_them(invoke, text_file, tmp_path):
    run_dir = tmp_path / "run"
    options = [f"model.{key}={str(value).lower()}" for key, value in ALL.items()]
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "dataset=text",
                          f"data.path={text_file}", *options, f"hydra.run.dir={run_dir}")
    assert code == 0, err
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert {k: ckpt["hyper_parameters"]["model"][k] for k in ALL} == ALL
    code, out, err = invoke("generate.py", f"ckpt_path={run_dir / 'checkpoints/last.ckpt'}", "prompt=Snow",
                            "max_new_tokens=40", "seed=1")
    assert code == 0, err
    assert out.startswith("Snow") and len(out.rstrip("\n")) >= 40


# ---- what each option does ---------------------------------------------------------------------------------------


def test_tied_weights_are_one_parameter_counted_once():
    tied, untied = tiny(tie_weights=True), tiny()
    assert tied.head.weight is tied.tok_emb.weight
    assert len(list(tied.parameters())) == len(list(untied.parameters())) - 1
    assert tied.num_params() == untied.num_params() - V * 32
    assert tied.flops_per_char() == untied.flops_per_char()  # the head is still a matmul
    state = tied.state_dict()
    assert state["head.weight"].data_ptr() == state["tok_emb.weight"].data_ptr()
    tied.train()
    loss = tied(torch.randint(V, (2, BLOCK)), torch.randint(V, (2, BLOCK)))[1]
    loss.backward()
    torch.optim.AdamW(tied.parameters(), lr=1e-2).step()
    assert tied.head.weight is tied.tok_emb.weight  # and after a step


def test_rope_has_no_position_table_and_its_tables_are_not_kept():
    model = tiny(position="rope")
    assert model.pos_emb is None
    assert not any("pos" in k or "rope" in k for k in model.state_dict())
    assert model.num_params() == tiny().num_params() - BLOCK * 32
    assert model.rope_cos.shape == model.rope_sin.shape == (BLOCK, 8)  # (block_size, hs / 2)


def test_rope_turns_the_new_positions_by_their_position_and_sees_order():
    model = shaken(tiny(position="rope"))
    idx = torch.randint(V, (1, 12))
    cache = model.new_cache()
    model(idx[:, :7], cache=cache)
    assert torch.allclose(model(idx[:, 7:], cache=cache, input_pos=7)[0], model(idx)[0][:, 7:], atol=1e-5)
    with torch.no_grad():  # without a position table, only rope tells "1 2 3 4" from "2 1 3 4" at the last character
        a, b = model(torch.tensor([[1, 2, 3, 4], [2, 1, 3, 4]]))[0][:, -1]
    assert not torch.allclose(a, b, atol=1e-4)


def test_zero_init_projections_start_at_zero_and_the_rest_as_by_default():
    zero, default = tiny(zero_init_proj=True), tiny()
    for name, p in zero.named_parameters():
        if name.endswith(("proj.weight", "fc2.weight")):
            assert not p.any(), name
        else:
            assert torch.equal(p, default.get_parameter(name)), name  # the same random stream


def test_norms_and_qk_norm_have_the_weights_they_name():
    rms = tiny(norm="rmsnorm", qk_norm=True)
    assert isinstance(rms.ln_f, torch.nn.RMSNorm)
    assert rms.blocks[0].attn.q_norm.weight.shape == (16,)  # one per head size
    norms = [k for k in rms.state_dict() if "ln" in k or "_norm" in k]
    assert norms and all(k.endswith("weight") for k in norms)  # RMSNorm has no bias
    layer = tiny(qk_norm=True, bias=False)
    assert isinstance(layer.blocks[1].attn.k_norm, torch.nn.LayerNorm) and layer.blocks[1].attn.k_norm.bias is None
    assert tiny().blocks[0].attn.q_norm is None


def test_relu2_and_the_soft_cap():
    mlp = tiny(activation="relu2").blocks[0].mlp
    x = torch.randn(2, 3, 32)
    assert torch.equal(mlp(x), mlp.fc2(torch.relu(mlp.fc(x)).square()))
    model = shaken(tiny(logit_softcap=2.0), std=0.5)
    idx = torch.randint(V, (2, BLOCK))
    capped = model(idx)[0]
    model.cfg.logit_softcap = None
    raw = model(idx)[0]
    assert raw.abs().max() > 2.0 and capped.abs().max() <= 2.0
    assert torch.allclose(capped, 2.0 * torch.tanh(raw / 2.0))


# ---- bad values ------------------------------------------------------------------------------------------------


def composed(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=["paths.output_dir=/tmp/frosty-compose", *overrides])


BAD = [
    (["model.position=sine"], "model.position='sine' must be one of: learned, rope"),
    (["model.norm=batchnorm"], "model.norm='batchnorm' must be one of: layernorm, rmsnorm"),
    (["model.activation=swish"], "model.activation='swish' must be one of: gelu, relu2"),
    (["model.logit_softcap=0"], "model.logit_softcap=0.0 must be a positive number (e.g. 30; at most 3.4e38), or "
                                "null for no cap"),
    (["model.logit_softcap=-15.0"], "model.logit_softcap=-15.0 must be a positive number"),
    (["model.position=rope", "model.n_embd=30", "model.n_head=2"], "model.position=rope needs an even head size, "
                                                                    "model.n_embd / model.n_head = 15"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_option_is_refused_naming_the_key_the_value_and_the_choices(overrides, message):
    with pytest.raises(FrostyError) as err:
        check_config(composed(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("model.qk_norm=maybe", "Value 'maybe' is not a valid bool"),
    ("model.logit_softcap=true", "Value 'True' of type 'bool' could not be converted to Float"),
    ("model.n_layer=2.5", "Value '2.5' of type 'float' could not be converted to Integer")])
def test_a_value_of_the_wrong_type_is_refused_by_the_schema_as_the_config_composes(invoke, override, message, tmp_path):
    """conf/model/ composes onto config.ModelConfig: Hydra refuses the value in its own message, naming the value
    and its key, before any run directory."""
    code, _, err = invoke("train.py", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1 and message in err and f"full_key: {override.split('=')[0]}" in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_the_schema_reads_booleans_as_yaml_does():
    cfg = composed("model.tie_weights=1", "model.zero_init_proj=yes", "model.bias=off", "model.dropout=0")
    assert (cfg.model.tie_weights, cfg.model.zero_init_proj, cfg.model.bias) == (True, True, False)
    assert isinstance(cfg.model.dropout, float)


def test_train_py_refuses_a_bad_option_in_one_line(invoke, text_file, tmp_path):
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", "model.norm=batchnorm",
                          f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, "model.norm='batchnorm' must be one of: layernorm, rmsnorm")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.ckpt"))
