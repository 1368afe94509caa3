import signal


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


class Stopped(Exception):
    """Training stopped at a step boundary on Ctrl-C (signum): Lightning's exception path (as for its SIGTERMException)
    runs every callback's on_exception, where BestAndLastCheckpoint saves last.ckpt, and then re-raises it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
