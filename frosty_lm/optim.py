"""The optimizer a run trains with (conf/optim/): AdamW for every weight (optim=adamw), or torch.optim.Muon for the
blocks' weight matrices and AdamW for the rest (optim=muon, one optimizer for Lightning's automatic optimization:
its schedule, gradient clipping and checkpoints); and its learning-rate schedule (conf/scheduler/)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from frosty_lm.config import FrostyError
from frosty_lm.machine import cpu_precision


def optim_name(optim: dict) -> str:
    """optim.name; an older Frosty's checkpoint records optim settings without one: AdamW's."""
    return optim.get("name") or "adamw"


def group_settings(optim: dict) -> list[dict]:
    """The settings of each param group, in the optimizer's order. adamw: matrices and embeddings, then biases and
    norm gains (no weight decay). muon: the blocks' matrices (Muon), then those two groups (AdamW)."""
    if optim_name(optim) == "adamw":
        return [{"lr": optim["lr"], "betas": tuple(optim["betas"]), "weight_decay": decay}
                for decay in (optim["weight_decay"], 0.0)]
    adamw = [{"lr": optim["adamw_lr"], "betas": tuple(optim["betas"]), "weight_decay": decay}
             for decay in (optim["adamw_weight_decay"], 0.0)]
    muon = {"lr": optim["lr"], "momentum": optim["momentum"], "weight_decay": optim["weight_decay"],
            "adjust_lr_fn": optim["adjust_lr_fn"]}
    return [muon, *adamw]


def make_optimizer(model: nn.Module, optim: dict) -> torch.optim.Optimizer:
    """The optimizer of a GPT's parameters (model: the GPT) as `optim` sets it."""
    if optim_name(optim) == "adamw":  # as stored AdamW runs trained: their checkpoints resume, results reproduce
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]  # matrices and embeddings
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]  # biases and norm gains
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": optim["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=optim["lr"], betas=tuple(optim["betas"]), foreach=True,
        )
    blocks = model.blocks.parameters() if hasattr(model, "blocks") else []  # model=bigram has none
    hidden = [p for p in blocks if p.requires_grad and p.dim() == 2]  # qkv, proj, fc, fc2
    if not hidden:  # Muon would train nothing: the run would be AdamW's under optim=muon's name
        kind = getattr(getattr(model, "cfg", None), "kind", "this model")
        raise FrostyError(f"optim=muon has nothing to train in model={kind} (no weight matrices in blocks): "
                          "use optim=adamw")
    taken = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]  # embeddings, head, 1-D
    groups = [hidden, [p for p in rest if p.dim() >= 2], [p for p in rest if p.dim() < 2]]
    muon, *adamw = [{"params": params, **settings} for params, settings in zip(groups, group_settings(optim))]
    on_cpu = all(p.device.type == "cpu" for p in hidden)
    return MuonWithAdamW([muon], adamw, fp32_orthogonalisation=on_cpu and cpu_precision() != "bf16-mixed")


def newton_schulz_fp32(grad: torch.Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int,
                       eps: float) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz orthogonalisation of a 2-D update, in fp32: torch's runs in bf16,
    which a CPU without native bf16 emulates, slower than the rest of a step (bench/orthogonalisation.py)."""
    a, b, c = ns_coefficients
    wide = grad.size(0) <= grad.size(1)
    x = grad.float() if wide else grad.float().T  # (rows, columns), rows <= columns: the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)  # singular values at most 1, where the iteration converges
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


@contextmanager
def orthogonalising_in_fp32(enabled: bool) -> Iterator[None]:
    """While enabled, torch.optim.Muon's steps orthogonalise with newton_schulz_fp32. The function replaced is
    private to torch, which has no option for this: tests/test_optim.py fails if torch changes it."""
    if not enabled:
        yield
        return
    import torch.optim._muon as torch_muon  # torch.optim.Muon's module

    torch_ns = torch_muon._zeropower_via_newtonschulz
    torch_muon._zeropower_via_newtonschulz = newton_schulz_fp32
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = torch_ns


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon for its first param groups (2-D weights) and torch.optim.AdamW for the others, as one
    optimizer: param_groups are both optimizers' groups (the same dicts, so a new lr reaches the one that uses it)
    and state the one dict both keep their state in, so state_dict() and load_state_dict() are torch's own."""

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], fp32_orthogonalisation: bool = False) -> None:
        self.fp32_orthogonalisation = fp32_orthogonalisation
        self.muon = torch.optim.Muon(muon_groups)
        self.adamw = torch.optim.AdamW(adamw_groups, foreach=True)
        self.muon_groups = len(self.muon.param_groups)
        super().__init__([*self.muon.param_groups, *self.adamw.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        """Point Muon and AdamW at this optimizer's groups and state (again after load_state_dict replaced them)."""
        self.muon.param_groups = self.param_groups[:self.muon_groups]
        self.adamw.param_groups = self.param_groups[self.muon_groups:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()

    def step(self, closure=None):
        """The closure (forward, backward, gradient clipping) once, then Muon's and AdamW's updates."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with orthogonalising_in_fp32(self.fp32_orthogonalisation):
            self.muon.step()
        self.adamw.step()
        return loss


def lr_lambda(name: str = "constant", warmup_steps: int = 0, decay_steps: int | None = None,
              min_lr_ratio: float = 0.1) -> Callable[..., float]:
    """The lr multiplier (for torch's LambdaLR). constant: linear warm-up, then the base lr. cosine: warm-up (at
    most half of decay_steps, so that short runs still decay), then cosine decay to min_lr_ratio at decay_steps. A
    cosine run limited by time also gives `at`, where timed() places it: warm-up counts steps but ends by half the
    budget; decay follows it."""
    if name == "cosine":
        warmup_steps = min(warmup_steps, decay_steps // 2)

    def factor(step: float, at: float | None = None) -> float:
        at = step if at is None else at  # where the schedule stands: the step, or timed()'s place when time is ahead
        warm = min(1.0, (step + 1) / warmup_steps) if step < warmup_steps else 1.0
        if name == "constant":
            return warm
        if at > step:  # a time budget ahead of the steps: the warm-up ends by half of it at the latest
            warm = max(warm, min(1.0, (at + 1) / max(1, decay_steps // 2)))
        progress = min(1.0, max(0.0, (at - warmup_steps) / (decay_steps - warmup_steps)))
        return min(warm, min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return factor


def timed(factor: Callable[..., float], max_steps: int, max_time: float,
          clock: Callable[[], float]) -> Callable[[int], float]:
    """factor (an lr_lambda) where a run limited by time stands in a schedule laid out in steps: the larger of the
    steps done and the share of its time budget spent (clock(): seconds of training), in steps of max_steps, so that
    the decay follows whichever runs out first. A function, not an object: LambdaLR keeps an object's attributes in
    checkpoints, and the clock is no data to keep."""

    def timed_factor(step: int) -> float:
        return factor(step, max(step, clock() / max_time * max_steps))

    return timed_factor
