import pytest
import torch

import frosty_lm.model as model_module
from frosty_lm.config import GPTConfig
from frosty_lm.generation import generate, sample_next
from frosty_lm.model import GPT
from frosty_lm.model import attend as real_attend


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    return GPT(GPTConfig(**{**cfg, **overrides})).eval()


def test_shapes_and_loss():
    model = tiny()
    idx = torch.randint(11, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 11)
    assert loss.shape == () and 2.0 < loss.item() < 3.0  # about ln(11) = 2.4 at initialisation
    cache = model.new_cache()
    model(idx[:, :10], cache=cache)
    assert len(cache) == 2  # one per layer
    assert cache[0].k.shape == cache[1].v.shape == (3, 2, 16, 8)  # B, nh, block_size, hs


def test_causal_a_later_character_changes_no_earlier_logit():
    model = tiny()
    a = torch.randint(11, (1, 16))
    b = a.clone()
    b[0, 9] = (a[0, 9] + 1) % 11
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[:, :9], lb[:, :9], atol=1e-6)
    assert not torch.allclose(la[:, 9:], lb[:, 9:], atol=1e-4)


def test_parameter_count_matches_the_formula():
    V, T, L, C = 11, 16, 2, 16
    model = tiny()
    per_block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    assert model.num_params() == V * C + T * C + L * per_block + 2 * C + C * V


def test_flops_per_char_is_nanogpts_estimate():
    V, T, L, C = 11, 16, 2, 16
    matrices = L * (3 * C * C + C * C + 4 * C * C + 4 * C * C) + C * V  # attention, feed-forward, head
    assert tiny().flops_per_char() == 6 * matrices + 12 * L * C * T


def test_cached_logits_equal_full_forward():
    model = tiny()
    idx = torch.randint(11, (2, 12))
    full = model(idx)[0]
    cache = model.new_cache()
    model(idx[:, :5], cache=cache)
    steps = [model(idx[:, 5:8], cache=cache, input_pos=5)[0]]  # several new positions at once, after a cache
    for t in range(8, 12):
        steps.append(model(idx[:, t : t + 1], cache=cache, input_pos=t)[0])
    assert torch.allclose(full[:, 5:], torch.cat(steps, dim=1), atol=1e-5)
    # a new context from position 0: the cache serves it (as generation refills it after cropping)
    assert torch.allclose(model(idx[:, 3:7], cache=cache)[0], model(idx[:, 3:7])[0], atol=1e-6)


@pytest.mark.parametrize("overrides", [dict(), dict(bias=False, n_head=4)])
def test_one_position_at_a_time_agrees_with_forward(overrides):
    model = tiny(**overrides)
    with torch.no_grad():  # weights far from their small initial values, so that any difference in the math shows
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    idx = torch.randint(11, (2, 16))
    full = model(idx)[0]
    cache = model.new_cache()
    model(idx[:, :6], cache=cache)
    steps = [model(idx[:, t : t + 1], cache=cache, input_pos=t)[0] for t in range(6, 16)]  # as generation does
    assert torch.allclose(full[:, 6:], torch.cat(steps, dim=1), atol=1e-4)
    with pytest.raises(ValueError, match="sequence of 17 characters is longer than block_size=16"):
        model(idx[:, :1], cache=cache, input_pos=16)


def test_the_positions_are_the_callers():
    model = tiny()
    idx = torch.randint(11, (2, 8))
    cache = model.new_cache()
    model(idx[:, :5], cache=cache)
    # forward moves nothing: the same position fed again is stored again, and gives the same logits
    first, again = (model(idx[:, 5:6], cache=cache, input_pos=5)[0] for _ in range(2))
    assert torch.equal(first, again)
    assert torch.allclose(first, model(idx[:, :6])[0][:, 5:], atol=1e-5)
    with pytest.raises(ValueError, match="the cache holds no context: start one at input_pos=0"):
        model(idx[:, :1], cache=model.new_cache(), input_pos=3)


def test_a_cache_cannot_grow_past_block_size():
    model = tiny()
    cache = model.new_cache()
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="sequence of 17 characters is longer than block_size=16"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache, input_pos=16)


@pytest.mark.parametrize("kwargs", [dict(temperature=1.0), dict(temperature=0.7, top_k=4), dict(top_p=0.8),
                                    dict(temperature=0)])
def test_cached_generation_equals_uncached(kwargs):
    model = tiny()
    prompt = torch.randint(11, (1, 5))
    # 60 new characters with block_size 16: the context is cropped several times on the way
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(123)
        runs.append(torch.stack(list(generate(model, prompt, 60, generator=g, use_cache=use_cache, **kwargs)), dim=1))
    assert runs[0].shape == (1, 60)
    assert torch.equal(runs[0], runs[1])


def test_generation_is_reproducible_and_seed_dependent():
    model = tiny()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    draw = lambda seed: torch.stack(list(generate(model, prompt, 40, generator=torch.Generator().manual_seed(seed))))
    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_a_whole_sample_is_the_streamed_characters_and_leaves_the_mode_as_it_was():
    from frosty_lm.generation import sample_text, stream_text

    model, vocab = tiny(block_size=8).train(), "\n abcdefgh."  # 40 characters: past block_size, the crop too
    streamed = "".join(stream_text(model, vocab, "ab", 40, temperature=0.8, seed=3))
    assert model.training and sample_text(model, vocab, "ab", 40, temperature=0.8, seed=3) == "ab" + streamed
    assert model.training and len(streamed) == 40 and sample_text(model, vocab, "ab", 0) == "ab"


def test_sampling_draws_what_torch_multinomial_draws():
    probs = torch.rand(300, 11) ** 4  # uneven rows, some characters nearly impossible
    logits = probs.log()
    ours = sample_next(logits, generator=torch.Generator().manual_seed(5))
    torch_draws = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours, torch_draws.squeeze(-1))
    assert len(set(ours.tolist())) > 5  # a real sample, not one favourite


def test_a_sample_leaves_onednn_and_train_mode_as_they_were():
    from frosty_lm.generation import sampled_ids

    model, before = tiny().train(), torch.backends.mkldnn.enabled
    first, second = sampled_ids(model, "abcdefghijk", "a", 3), sampled_ids(model, "abcdefghijk", "b", 3)
    next(first), next(second)  # two samples open at once
    assert torch.backends.mkldnn.enabled == before and not model.training  # between characters: the caller's flag
    list(second)
    first.close()
    assert torch.backends.mkldnn.enabled == before and model.training


def test_a_sample_reads_the_modules_own_attributes_and_leaves_no_copy():
    from frosty_lm.generation import sampled_ids

    model = tiny(tie_weights=True)
    before = {name: dict(m.__dict__) for name, m in model.named_modules()}
    steps = sampled_ids(model, "abcdefghijk", "a", 40)
    ids = [next(steps)]
    block = model.blocks[0]
    assert block.__dict__["attn"] is dict(block.named_children())["attn"]  # found without nn.Module.__getattr__
    assert model.head.__dict__["weight"] is model.tok_emb.weight  # tied: one tensor
    ids += list(steps)
    assert {name: dict(m.__dict__) for name, m in model.named_modules()} == before
    reference = generate(model, torch.zeros(1, 1, dtype=torch.long), 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat(ids), torch.cat(list(reference)))  # the same characters as without the copies


def test_a_module_attribute_set_during_a_sample_is_the_one_read():
    from frosty_lm.generation import plain_attributes

    model = tiny()
    with plain_attributes(model):
        new = torch.nn.Parameter(torch.zeros_like(model.head.weight))
        model.head.weight = new  # nn.Module's own __setattr__: the copy goes, the new parameter is read
        assert model.head.weight is new and dict(model.head.named_parameters())["weight"] is new
    assert model.head.weight is new and "weight" not in model.head.__dict__


def test_a_sample_during_training_does_not_recompile_the_compiled_forward():
    from frosty_lm.generation import sample_text

    compiles = []

    def counting_backend(graph, example_inputs):  # torch.compile's backend API: count, then run the graph as is
        compiles.append(graph)
        return graph.forward

    model = tiny().train()
    forward = torch.compile(model.forward, backend=counting_backend)
    x = torch.randint(0, 11, (2, 16))
    forward(x, x)[1].backward()
    sample_text(model, "abcdefghijk", "a", 20)
    forward(x, x)[1].backward()
    assert len(compiles) == 1


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_k=2, generator=g).tolist()) == {0, 1}
    # probabilities ~ .64 .24 .09 .03 .01: top_p=0.8 keeps the first two, top_p=0.5 only the first
    assert set(sample_next(logits, top_p=0.8, generator=g).tolist()) == {0, 1}
    assert set(sample_next(logits, top_p=0.5, generator=g).tolist()) == {0}
    assert set(sample_next(logits, temperature=0).tolist()) == {0}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=30, n_head=4), "not divisible by model.n_head=4"),
        (dict(n_layer=0), "model.n_layer=0 must be a positive integer"),
        (dict(block_size=-8), "model.block_size=-8"),
        (dict(dropout=1.0), "model.dropout=1.0 must be a number in [0, 1)"),
        (dict(dropout=-0.1), "model.dropout=-0.1"),
    ],
)
def test_config_is_validated_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError) as err:
        tiny(**overrides)
    assert message in str(err.value)


def test_context_longer_than_block_size_is_refused_by_forward():
    with pytest.raises(ValueError, match="longer than block_size=16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_bf16_autocast_on_the_cpu_attends_in_fp32_and_keeps_the_loss(monkeypatch):
    model = tiny(n_embd=32).train()
    idx = torch.randint(11, (4, 16))
    loss32 = model(idx, idx)[1]
    seen = []  # the dtypes attention computes in (the CPU's bf16 attention backward is slow)
    monkeypatch.setattr(model_module, "attend", lambda q, k, v: seen.append(q.dtype) or real_attend(q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss16 = model(idx, idx)
    assert seen == [torch.float32, torch.float32]  # both layers
    assert logits.dtype == torch.bfloat16 and loss16.dtype == torch.float32
    assert abs(loss16.item() - loss32.item()) < 0.02
    loss16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_forward_hooks_see_each_module():
    from frosty_lm.model import MLP, Block, CausalSelfAttention

    model = tiny()
    seen = []
    for name, module in model.named_modules():
        if isinstance(module, (CausalSelfAttention, MLP, Block)):
            module.register_forward_hook(lambda m, args, out, name=name: seen.append((name, tuple(out.shape))))
    model(torch.zeros(1, 5, dtype=torch.long))
    order = ["blocks.0.attn", "blocks.0.mlp", "blocks.0", "blocks.1.attn", "blocks.1.mlp", "blocks.1"]
    assert seen == [(name, (1, 5, 16)) for name in order]


def test_the_weight_names_of_older_checkpoints_are_read_as_todays():
    import re

    from frosty_lm.checkpoint import current_names

    model = tiny(qk_norm=True)
    state = model.state_dict()
    assert "blocks.0.attn.qkv.weight" in state and "blocks.1.mlp.fc2.bias" in state  # the modules' own names
    older = {re.sub(r"\.(attn|mlp)\.", ".", key): value for key, value in state.items()}  # blocks.0.qkv.weight
    assert "blocks.0.q_norm.weight" in older and "blocks.1.fc.weight" in older
    assert list(current_names(older)) == list(state)  # same names, same order
    other = tiny(qk_norm=True)
    other.load_state_dict(current_names(older))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_a_compiled_model_is_kept_out_of_the_module_tree():
    from frosty_lm.lit_module import FrostyLM

    settings = dict(block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    adamw = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]}
    plain = FrostyLM("abcdefghijk", settings, adamw, {"name": "constant"})
    compiled = FrostyLM("abcdefghijk", {**settings, "compile": True}, adamw, {"name": "constant"})
    plain.configure_model()
    compiled.configure_model()  # torch.compile is lazy: nothing compiles until the first call
    assert plain.compiled is None and callable(compiled.compiled)
    assert list(compiled.state_dict()) == list(plain.state_dict())  # the weights once, under their own names
    assert [name for name, _ in compiled.named_modules()] == [name for name, _ in plain.named_modules()]
