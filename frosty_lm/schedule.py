"""Learning-rate schedules as multipliers of the base lr, for torch's LambdaLR: by step, and in a run limited by time
(trainer.max_time) by the share of its time budget spent too."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from frosty_lm.value_checks import is_int, is_number, must


def lr_lambda(name: str = "constant", warmup_steps: int = 0, decay_steps: int | None = None,
              min_lr_ratio: float = 0.1) -> Callable[..., float]:
    """constant: linear warm-up, then the base lr. cosine: warm-up (at most half of decay_steps, so that
    short runs still decay), then cosine decay to min_lr_ratio * lr at decay_steps, constant after that.

    The multiplier takes the steps done and, in a run limited by time, where its budget has got to (budget_step).
    The warm-up counts steps done (it is there to steady the first updates, however long they take), a cosine's
    ending by half the budget at the latest; the decay follows the budget."""
    check_scheduler(dict(name=name, warmup_steps=warmup_steps, decay_steps=decay_steps, min_lr_ratio=min_lr_ratio))
    if name == "cosine":
        warmup_steps = min(warmup_steps, decay_steps // 2)

    def factor(step: float, at: float | None = None) -> float:
        at = step if at is None else at  # where the schedule stands: the step, or budget_step when time is ahead
        warm = min(1.0, (step + 1) / warmup_steps) if step < warmup_steps else 1.0
        if name == "constant":
            return warm
        if at > step:  # a time budget ahead of the steps: the warm-up ends by half of it at the latest
            warm = max(warm, min(1.0, (at + 1) / max(1, decay_steps // 2)))
        progress = min(1.0, max(0.0, (at - warmup_steps) / (decay_steps - warmup_steps)))
        return min(warm, min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return factor


def check_scheduler(scheduler: Mapping) -> None:
    """scheduler.* (conf/scheduler/): a known schedule, a warm-up of >= 0 steps, a cosine's decay_steps (default:
    trainer.max_steps) positive and its min_lr_ratio a share of the lr in [0, 1] (below 0 the lr would turn
    negative, above 1 the schedule would not decay)."""
    name = scheduler.get("name")
    must(name in ("constant", "cosine"), "scheduler.name", name, "constant or cosine (scheduler=constant | cosine)")
    warmup = scheduler.get("warmup_steps", 0)
    must(is_int(warmup) and warmup >= 0, "scheduler.warmup_steps", warmup, "an integer >= 0, e.g. 100")
    if name == "cosine":
        decay, ratio = scheduler.get("decay_steps"), scheduler.get("min_lr_ratio", 0.1)
        must(is_int(decay) and decay > 0, "scheduler.decay_steps", decay,
             "a positive integer (it defaults to trainer.max_steps)")
        must(is_number(ratio) and 0 <= ratio <= 1, "scheduler.min_lr_ratio", ratio,
             "a number in [0, 1]: the share of the lr that the decay ends at, e.g. 0.1")


def budget_step(step: int, max_steps: int, elapsed: float, max_time: float) -> float:
    """Where a run limited by time stands in a schedule laid out in steps: the larger of the steps done and the
    share of its time budget spent (elapsed of max_time seconds) in steps of max_steps, so that the decay follows
    whichever budget runs out first. The step itself (the same number) while steps are ahead."""
    return max(step, elapsed / max_time * max_steps)


def timed(factor: Callable[..., float], max_steps: int, max_time: float,
          clock: Callable[[], float]) -> Callable[[int], float]:
    """factor (an lr_lambda) by step and at budget_step, from the seconds of training that clock() returns, of
    max_time. A function, not an object with attributes: LambdaLR keeps an object's attributes in checkpoints, and
    the clock is no data to keep."""

    def timed_factor(step: int) -> float:
        return factor(step, budget_step(step, max_steps, clock(), max_time))

    return timed_factor
