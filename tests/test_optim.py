"""The optimizer group: optim=adamw (AdamW, as stored runs trained) and optim=muon (torch.optim.Muon for the
blocks' weight matrices, AdamW for the rest, as one optimizer that Lightning, the schedule and checkpoints see as
one)."""
import copy

import pytest
import torch

import frosty_lm.optim
from conftest import TINY
from frosty_lm.config import GPTConfig
from frosty_lm.model import GPT
from frosty_lm.optim import MuonWithAdamW, group_settings, make_optimizer, newton_schulz_fp32
from test_reliability import assert_one_line_error

MUON = {"name": "muon", "lr": 0.02, "momentum": 0.95, "weight_decay": 0.01, "adjust_lr_fn": "original",
        "adamw_lr": 1e-3, "adamw_weight_decay": 0.1, "betas": [0.9, 0.99]}
ADAMW = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]}


def tiny_gpt(**options) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, **options))


def train_steps(model: GPT, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, 11, (4, 8), generator=generator)
        _, loss = model(x, x.roll(-1, dims=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("shape", [(48, 16), (16, 64), (32, 32)])
def test_the_fp32_orthogonalisation_is_torchs_up_to_bf16_rounding(shape):
    """newton_schulz_fp32 against torch.optim.Muon's own (bf16) on tall, wide and square updates: the same matrix up
    to bf16's rounding, in fp32, with singular values near 1 (the iteration's 0.5 to 1.5 or so)."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    grad = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = newton_schulz_fp32(grad, (3.4445, -4.775, 2.0315), 5, 1e-7)
    torchs = _zeropower_via_newtonschulz(grad, (3.4445, -4.775, 2.0315), 5, 1e-7).float()
    assert ours.dtype == torch.float32 and ours.shape == grad.shape
    assert (ours - torchs).abs().max() < 0.05 * torchs.abs().max()
    singular = torch.linalg.svdvals(ours)
    assert 0.3 < singular.min() and singular.max() < 1.6


@pytest.mark.parametrize("precision, fp32", [("32-true", True), ("bf16-mixed", False)])
def test_muon_orthogonalises_in_fp32_where_the_cpu_has_no_native_bf16(monkeypatch, precision, fp32):
    """Where trainer=cpu trains in fp32 for want of native bf16, Muon's steps use newton_schulz_fp32 (torch's bf16
    one is emulated there, many times slower); where the CPU has bf16, torch's own, unchanged. torch's is back
    after each step."""
    import torch.optim._muon as torch_muon

    monkeypatch.setattr(frosty_lm.optim, "cpu_precision", lambda: precision)
    calls = []
    monkeypatch.setattr(frosty_lm.optim, "newton_schulz_fp32", lambda *a: calls.append(a[0].shape) or
                        newton_schulz_fp32(*a))
    torch_ns = torch_muon._zeropower_via_newtonschulz
    model = tiny_gpt()
    optimizer = make_optimizer(model, MUON)
    assert optimizer.fp32_orthogonalisation is fp32
    before = [p.detach().clone() for p in model.blocks.parameters()]
    train_steps(model, optimizer, 2)
    assert len(calls) == (2 * 2 * 4 if fp32 else 0)  # 2 steps of 2 layers' 4 matrices
    assert torch_muon._zeropower_via_newtonschulz is torch_ns
    assert all(not torch.equal(a, b) for a, b in zip(before, model.blocks.parameters()) if a.dim() == 2)


@pytest.mark.parametrize("tie", [False, True])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tie):
    model = tiny_gpt(tie_weights=tie)
    optimizer = make_optimizer(model, MUON)
    muon, decay, no_decay = (set(map(id, g["params"])) for g in optimizer.param_groups)
    hidden = {id(layer.weight) for block in model.blocks
              for layer in (block.attn.qkv, block.attn.proj, block.mlp.fc, block.mlp.fc2)}
    assert muon == hidden and {id(p) for g in optimizer.muon.param_groups for p in g["params"]} == hidden
    assert decay == {id(model.tok_emb.weight), id(model.pos_emb.weight), id(model.head.weight)}
    assert all(p.dim() == 1 for g in optimizer.adamw.param_groups[1:] for p in g["params"])  # biases, norm gains
    assert muon | decay | no_decay == set(map(id, model.parameters()))  # every weight once (a tied one too)
    assert len(muon) + len(decay) + len(no_decay) == len(list(model.parameters()))
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.1, 0.0]
    assert optimizer.param_groups[0]["momentum"] == 0.95 and optimizer.param_groups[1]["betas"] == (0.9, 0.99)


def test_adamw_is_todays_optimizer():
    model = tiny_gpt()
    optimizer = make_optimizer(model, ADAMW)
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["foreach"] is True
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert all(p.dim() >= 2 for p in optimizer.param_groups[0]["params"])
    assert group_settings({k: v for k, v in ADAMW.items() if k != "name"}) == group_settings(ADAMW)  # no name: adamw


def test_the_groups_are_shared_with_muon_and_adamw():
    """An lr set on the composite's groups (the schedule, on_train_start) is the lr that Muon and AdamW step with."""
    model = tiny_gpt()
    optimizer = make_optimizer(model, MUON)
    before = [p.detach().clone() for p in model.parameters()]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        group["weight_decay"] = 0.0
    train_steps(model, optimizer, 2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # lr 0 everywhere: nothing moved
    assert optimizer.muon.param_groups[0] is optimizer.param_groups[0]
    assert optimizer.muon.state is optimizer.adamw.state is optimizer.state


def test_a_state_dict_round_trip_continues_bit_for_bit():
    """Stopped after 3 steps, saved, loaded into a new optimizer of a copy of the model: 3 more steps give the
    weights of 6 steps without a stop."""
    straight = tiny_gpt()
    optimizer = make_optimizer(straight, MUON)
    train_steps(straight, optimizer, 3)
    stopped = copy.deepcopy(straight)
    saved = copy.deepcopy(optimizer.state_dict())
    assert {"momentum_buffer"} <= set(saved["state"][0]) and {"exp_avg", "exp_avg_sq"} <= set(saved["state"][8])
    train_steps(straight, optimizer, 3, seed=2)
    restored = make_optimizer(stopped, MUON)
    restored.load_state_dict(saved)
    assert isinstance(restored, MuonWithAdamW) and restored.muon.state is restored.state
    assert restored.muon.param_groups[0] is restored.param_groups[0]
    train_steps(stopped, restored, 3, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), stopped.parameters()))


def ckpt(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
def test_a_resumed_muon_run_reaches_the_weights_of_an_uninterrupted_one(invoke, text_file, tmp_path):
    """optim=muon, stopped midway down a cosine and resumed (resume=): the weights, optimizer state and lrs of a
    run that was never stopped, bit for bit."""
    common = [*TINY, "optim=muon", "model.dropout=0.1", "scheduler=cosine", "scheduler.warmup_steps=4",
              "scheduler.decay_steps=30", "trainer.val_check_interval=10", "dataset=text", f"data.path={text_file}"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert invoke("train.py", *common, "trainer.max_steps=30", f"hydra.run.dir={straight}")[0] == 0
    assert invoke("train.py", *common, "trainer.max_steps=12", f"hydra.run.dir={resumed}")[0] == 0
    first = ckpt(resumed)
    code, _, err = invoke("train.py", f"resume={resumed}", "trainer.max_steps=30")
    assert code == 0, err
    a, b = ckpt(straight), ckpt(resumed)
    assert b["global_step"] == 30 and b["hyper_parameters"]["optim"]["name"] == "muon"
    assert a["optimizer_states"][0]["param_groups"] == b["optimizer_states"][0]["param_groups"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert not all(torch.equal(a["state_dict"][k], first["state_dict"][k]) for k in a["state_dict"])
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(state_a[i][k], state_b[i][k]) for i in state_a for k in state_a[i])


@pytest.mark.slow
def test_muon_settings_given_on_resume_train(invoke, text_file, tmp_path):
    """The resuming command is composed with the default optim=adamw before the run's own config is read: Muon's own
    keys take a + (+optim.adamw_lr=...), the keys both options have do not (optim.lr=...); the run then resumes again
    with those settings recorded."""
    run_dir = tmp_path / "r"
    common = [*TINY, "optim=muon", "scheduler=constant", "dataset=text", f"data.path={text_file}"]
    assert invoke("train.py", *common, "trainer.max_steps=10", f"hydra.run.dir={run_dir}")[0] == 0
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=20", "optim.lr=0.05",
                          "+optim.adamw_lr=2e-3", "+optim.momentum=0.9", "+optim.adamw_weight_decay=0.2")
    assert code == 0, err
    c = ckpt(run_dir)
    groups = c["optimizer_states"][0]["param_groups"]
    assert [g["lr"] for g in groups] == [0.05, 2e-3, 2e-3] == c["lr_schedulers"][0]["base_lrs"]
    assert groups[0]["momentum"] == 0.9 and [g["weight_decay"] for g in groups] == [0.01, 0.2, 0.0]
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=25")
    assert code == 0, err
    assert ckpt(run_dir)["optimizer_states"][0]["param_groups"][1]["lr"] == 2e-3
    code, _, err = invoke("train.py", f"resume={run_dir}", "trainer.max_steps=30", "optim=adamw")
    assert_one_line_error(code, err, "a resumed run keeps the config groups it was started with")


@pytest.mark.parametrize("overrides, message", [
    (["optim.name=sgd"], "optim.name='sgd' must be adamw or muon"),
    (["optim=muon", "optim.lr=0"], "optim.lr=0.0 must be a positive number"),
    (["optim=muon", "optim.adamw_lr=-1e-3"], "optim.adamw_lr=-0.001 must be a positive number"),
    (["optim=muon", "optim.adamw_weight_decay=-1"], "optim.adamw_weight_decay=-1.0 must be a number >= 0"),
    (["optim=muon", "optim.momentum=1.0"], "optim.momentum=1.0 must be a number in [0, 1)"),
    (["optim=muon", "optim.adjust_lr_fn=other"], "optim.adjust_lr_fn='other' must be original or match_rms_adamw"),
    (["optim=muon", "optim.betas=[0.9]"], "optim.betas=[0.9] must be two numbers in [0, 1)"),
])
def test_bad_optim_settings_are_one_error_line(invoke, text_file, tmp_path, overrides, message):
    code, _, err = invoke("train.py", *TINY, "dataset=text", f"data.path={text_file}", *overrides,
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_an_adamw_checkpoint_is_not_started_from_with_muon(invoke, trained_run, tmp_path):
    corpus = trained_run.parent / "corpus.txt"
    code, _, err = invoke("train.py", *TINY, "optim=muon", "dataset=text", f"data.path={corpus}",
                          f"ckpt_path={trained_run / 'checkpoints/last.ckpt'}", "trainer.max_steps=40",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "was trained with optim=adamw, this run asks for optim=muon")


def test_muon_with_the_bigram_is_refused_in_one_line(invoke, text_file, tmp_path):
    """The bigram has no weight matrices in blocks: optim=muon would train it with AdamW alone, under muon's name."""
    from frosty_lm.config import FrostyError
    from frosty_lm.model import Bigram

    with pytest.raises(FrostyError, match="optim=muon has nothing to train in model=bigram"):
        make_optimizer(Bigram(GPTConfig(vocab_size=11, block_size=8, kind="bigram")), MUON)
    code, _, err = invoke("train.py", *TINY, "model=bigram", "optim=muon", "dataset=text", f"data.path={text_file}",
                          f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line_error(code, err, "optim=muon has nothing to train in model=bigram", "use optim=adamw")
    assert not (tmp_path / "r" / "checkpoints").exists()
