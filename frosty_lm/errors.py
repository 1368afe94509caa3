class FrostyError(Exception):
    """A problem with the user's input (config, corpus, checkpoint, prompt). Its message names the fix.

    The entry points print it as one line and exit with status 1, without a traceback.
    """


class NonFiniteLoss(FrostyError):
    """The training loss became NaN or infinite at `step` (counted from 1): training stopped before that step's
    update, so no weights of it were saved."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"the training loss is {loss} at step {step}: training stopped")
        self.step = step


class Aborted(FrostyError):
    """A run aborted by a second Ctrl-C or SIGTERM (signum): one line, exit status 1, status.json "interrupted" with
    `what` (what happened; the line adds what was saved)."""

    def __init__(self, what: str, saved: str, signum: int) -> None:
        super().__init__(f"{what}; {saved}")
        self.what = what
        self.signum = signum
