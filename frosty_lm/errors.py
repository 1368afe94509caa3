"""User errors: FrostyError, which the entry points print as one `error:` line (exit status 1, no traceback), and
the rule for a setting's value. The standard library only: every layer imports it."""
from __future__ import annotations

import math
import signal


class FrostyError(Exception):
    """A problem with the user's input (config, corpus, checkpoint, prompt). Its message names the fix."""


class NonFiniteLoss(FrostyError):
    """The training loss became NaN or infinite at `step` (counted from 1): training stopped before that step's
    update, so no weights of it were saved."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"the training loss is {loss} at step {step}: training stopped")
        self.step = step


class Stopped(Exception):
    """Training stopped at a step boundary on Ctrl-C (signum): Lightning's exception path (as for its SIGTERMException)
    runs every callback's on_exception, where BestAndLastCheckpoint saves last.ckpt, and then re-raises it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def must(fine: bool, key: str, value, what: str) -> None:
    if not fine:
        raise FrostyError(f"{key}={'null' if value is None else repr(value)} must be {what}")  # as Hydra spells it


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
