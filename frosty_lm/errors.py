class FrostyError(Exception):
    """A problem with the user's input (config, corpus, checkpoint, prompt). Its message names the fix.

    The entry points print it as one line and exit with status 1, without a traceback.
    """
