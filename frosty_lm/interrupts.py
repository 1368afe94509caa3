"""Ctrl-C and SIGTERM outside training (training stops on them itself: callbacks.StopOnInterrupt): one line and exit
status 128 + the signal's number (130, 143), never a traceback, from an entry point's first line on. The standard
library only, so that it is in place before the heavy imports. Also when a sweep's job takes two Ctrl-C for one.

A signal that comes while a module is being imported is acted on once the import is done (after_import): an
exception raised inside an import can pass through a C extension's initialisation, which may swallow it (torch,
interrupted while it imports numpy, goes on without numpy, and the run trained to its end), abort the process, or
leave a module half-loaded."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM outside training; signum: which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self):  # (pickled from a sweep's worker to its main process)
        return Interrupted, (self.signum,)


class _EntryPoint:
    when = ""        # what the line says after "interrupted by SIGINT", e.g. "before training started"
    running = False  # main() has started: signals raise Interrupted, for the code on the way out to record it


def exit_interrupted(signum: int) -> None:
    logging.disable(logging.INFO)  # nothing after this line (torch, stopped while it loads, logs statistics at exit)
    print(f"\ninterrupted by {signal.Signals(signum).name} {_EntryPoint.when}".rstrip(), file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def interrupt_on_signals(when: str) -> None:
    """From now on Ctrl-C and SIGTERM end the process with one line, "interrupted by SIGINT <when>", and 128 + the
    signal's number (SIGTERM would otherwise end it without a word): at once while the entry point is still
    importing (there is nothing to clean up), and through Interrupted once exit_when_interrupted runs its main()."""
    _EntryPoint.when = when

    def handler(signum, frame) -> None:
        if after_import(signum, frame):
            return
        if _EntryPoint.running:
            raise Interrupted(signum)
        exit_interrupted(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, handler)


AGAIN_AFTER_S = 0.05  # how soon a signal that came during an import comes again


def after_import(signum: int, frame) -> bool:
    """Whether the main thread (at `frame`) is importing a module; if so, this process gets `signum` again
    AGAIN_AFTER_S later, until the import is done, and the handler that called this returns without acting."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            timer = threading.Timer(AGAIN_AFTER_S, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return True
        frame = frame.f_back
    return False


def interrupted_while(when: str) -> None:
    """What the line says from now on, after "interrupted by SIGINT" (e.g. that a sweep was aborted)."""
    _EntryPoint.when = when


def exit_when_interrupted(main) -> None:
    """Run an entry point's main(); Ctrl-C or SIGTERM that reaches here ends it as interrupt_on_signals says."""
    _EntryPoint.running = True
    try:
        main()
    except KeyboardInterrupt as err:
        exit_interrupted(getattr(err, "signum", signal.SIGINT))


SAME_PRESS_S = 2.0  # a sweep job's second Ctrl-C this soon after its first is the same press (same_press)


def same_press(signum: int, first: int | None, first_at: float) -> bool:
    """Whether a sweep job's Ctrl-C (or SIGTERM) repeats the one it already has: a terminal sends Ctrl-C to every
    process of the sweep, as `timeout` and batch schedulers send SIGTERM to the whole process group, and the sweep's
    main process passes it on to its workers as well (for `kill -INT` to it alone), so that each worker may get one
    signal twice. Only a later one aborts."""
    return signum == first and signum in (signal.SIGINT, signal.SIGTERM) and time.monotonic() - first_at < SAME_PRESS_S
