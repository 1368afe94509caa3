"""The numbers a run produces, pinned bit for bit: the losses of a few AdamW steps and a sample that generate.py
prints from the trained weights (cached generation, past the context, with a fixed seed), for model=small's options
at a tiny size, for every architecture option at once, and for the bigram. Refactoring the model or the sampler
must leave every one of them exactly as recorded (floats compared with ==, samples as strings)."""
import pytest
import torch

from frosty_lm.config import GPTConfig
from frosty_lm.model import build

TEXT = ("Whose woods these are I think I know.\nHis house is in the village though;\n"
        "He will not see me stopping here\nTo watch his woods fill up with snow.\n")
VOCAB = "".join(sorted(set(TEXT)))
SMALL = dict(block_size=32, n_layer=2, n_head=4, n_embd=32, dropout=0.0)  # model=small's options (conf/model/)
EVERY_OPTION = dict(SMALL, dropout=0.1, bias=False, position="rope", norm="rmsnorm", qk_norm=True, activation="relu2",
                    zero_init_proj=True, logit_softcap=5.0, tie_weights=True)
MODELS = {"small": SMALL, "every option": EVERY_OPTION, "bigram": dict(SMALL, kind="bigram")}

# Recorded from the code before the model became modules with a forward each (the same numbers since).
RECORDED = {
    "small": dict(
        losses=[3.352240562438965, 3.195056438446045, 3.1050076484680176, 3.0339818000793457, 2.9902701377868652,
                2.9310784339904785],
        eval_loss=2.920879602432251,
        sample="Whose woodsrnrug..ggaIiigHnawouuupeptsHisow.vhaehn cuis.nnIvwwsoiav\nhpi flhHHs s isHHlpp.h I wWa "
               "IpIsiawTW;Hs.t\n",
    ),
    "every option": dict(
        losses=[3.354050636291504, 3.219801902770996, 3.1219136714935303, 3.064497947692871, 3.0325729846954346,
                2.9615020751953125],
        eval_loss=2.9620168209075928,
        sample="Whose woodshnnuna..mcIiiglHawo ukIoutvc\nHow.vhclpH siii.fWIvdssoiaiIhie gwiHHs   ikHHlppvh u gaa "
               "IiItiawwHnHs.t\n",
    ),
    "bigram": dict(
        losses=[3.3322036266326904, 3.3271048069000244, 3.3224010467529297, 3.318063497543335, 3.3150689601898193,
                3.3119189739227295],
        eval_loss=3.3108911514282227,
        sample="Whose woodsrnrrw..goaIiwglHawouuHpoptvcdHmw.vhclpnkcfki.fWIvwwsoiav\nhpe gwiHTs;mTikHHlpp.hlpogWWm"
               "IpIsiawTW;Hswt\n",
    ),
}


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.tensor([VOCAB.index(c) for c in TEXT])
    starts = [[(7 * s + 13 * b) % (len(TEXT) - 33) for b in range(4)] for s in range(steps)]
    return [(torch.stack([ids[i : i + 32] for i in row]), torch.stack([ids[i + 1 : i + 33] for i in row]))
            for row in starts]


def train(name: str) -> tuple[torch.nn.Module, list[float], float]:
    """The model of MODELS[name], seed 0, after 6 AdamW steps: (model, the steps' losses, the eval loss after)."""
    torch.manual_seed(0)
    model = build(GPTConfig(vocab_size=len(VOCAB), **MODELS[name])).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for x, y in batches(6):
        loss = model(x, y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    x, y = batches(7)[-1]
    with torch.no_grad():
        eval_loss = model.eval()(x, y)[1].item()
    return model, losses, eval_loss


@pytest.mark.parametrize("name", MODELS)
def test_the_same_seed_gives_the_same_losses_and_sample(name, invoke, tmp_path):
    model, losses, eval_loss = train(name)
    assert losses == RECORDED[name]["losses"]
    assert eval_loss == RECORDED[name]["eval_loss"]
    settings = {k: v for k, v in vars(model.cfg).items() if k != "vocab_size"}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"vocab": VOCAB, "model": settings}, "state_dict": state}, tmp_path / "m.ckpt")
    code, out, err = invoke("generate.py", f"ckpt_path={tmp_path / 'm.ckpt'}", "prompt=Whose woods",
                            "max_new_tokens=100", "temperature=0.9", "top_k=20", "top_p=0.95", "seed=5", "device=cpu")
    assert code == 0, err
    assert out == RECORDED[name]["sample"]
