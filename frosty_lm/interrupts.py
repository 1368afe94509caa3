"""Ctrl-C and SIGTERM outside training (training stops on them itself: callbacks.StopOnInterrupt): one line and exit
status 128 + the signal's number (130, 143), never a traceback, from an entry point's first line on. The standard
library only, so that it is in place before the heavy imports. Also when a sweep's job takes two Ctrl-C for one.

A signal that comes while a module is being imported is acted on once the import is done (after_import): an
exception raised inside an import can pass through a C extension's initialisation, which may swallow it (torch,
interrupted while it imports numpy, goes on without numpy, and the run trains to its end), abort the process, or
leave a module half-loaded. In train.py outside training (its library_patience_s), a signal is also acted on only in
Frosty's own code (in_own_code): raised in a library's, it can be swallowed (by a bare `except:`, or in a `__del__`,
where Python only prints it) or masked (Hydra's config reader, interrupted inside `try: f = open(...)`, fails in its
`finally: f.close()` with UnboundLocalError). A signal still put off when the entry point's work ends is acted on
then (exit_when_interrupted)."""
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
    library_patience_s = 0.0  # how long a signal is put off while a library's code runs (in_library)


def exit_interrupted(signum: int) -> None:
    logging.disable(logging.INFO)  # nothing after this line (torch, stopped while it loads, logs statistics at exit)
    print(f"\ninterrupted by {signal.Signals(signum).name} {_EntryPoint.when}".rstrip(), file=sys.stderr, flush=True)
    sys.exit(128 + signum)


def interrupt_on_signals(when: str, library_patience_s: float = 0.0) -> None:
    """From now on Ctrl-C and SIGTERM end the process with one line, "interrupted by SIGINT <when>", and 128 + the
    signal's number (SIGTERM would otherwise end it without a word): at once while the entry point is still
    importing (there is nothing to clean up), and through Interrupted once exit_when_interrupted runs its main().
    library_patience_s: put off for that long while a library's code runs (train.py: LIBRARY_PATIENCE_S; the
    report and generate.py, whose work is mostly a library's, act at once)."""
    _EntryPoint.when, _EntryPoint.library_patience_s = when, library_patience_s

    def handler(signum, frame) -> None:
        if in_library(signum, frame, handler):
            return
        if _EntryPoint.running:
            raise Interrupted(signum)
        exit_interrupted(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, handler)


AGAIN_AFTER_S = 0.05  # how soon a signal that is put off comes again
LIBRARY_PATIENCE_S = 2.0  # how long a signal waits for a library's code to return to Frosty's before it acts there


class _PutOff:
    signum: int | None = None  # the signal put off (None: none is)
    handler = None  # the handler that put it off: the signal comes again only while that handler is installed
    timer: threading.Timer | None = None
    since = 0.0  # when the signal was first put off because the main thread was in a library's code


def _put_off(signum: int, handler) -> None:
    """This process gets `signum` again AGAIN_AFTER_S from now, through `handler` (one signal put off at a time)."""
    if _PutOff.signum is None:
        _PutOff.signum, _PutOff.handler = signum, handler
        _wait()


def _wait() -> None:
    _PutOff.timer = threading.Timer(AGAIN_AFTER_S, _again)
    _PutOff.timer.daemon = True
    _PutOff.timer.start()


def _again() -> None:
    """The put-off signal comes again if the handler that put it off is still installed. If another is (Lightning's
    SIGTERM handler, which calls the one it replaced; StopOnInterrupt's; the sweep's), it waits: that one takes
    it when it starts (take_put_off), and sent again it would go through that one's own work (Lightning's
    notifier, a broadcast in a multi-process run)."""
    signum = _PutOff.signum
    if signum is None:
        return
    if signal.getsignal(signum) == _PutOff.handler:
        _PutOff.signum = None
        os.kill(os.getpid(), signum)
    else:
        _wait()


def take_put_off() -> int | None:
    """The signal put off, if one is (None if not): the caller, a handler that has just replaced the one that put it
    off, acts on it, and it does not come again."""
    signum = _PutOff.signum
    _acting()
    return signum


def _acting() -> None:
    """The handler acts on a signal now: none put off comes again (it would interrupt the way out)."""
    if _PutOff.timer is not None:
        _PutOff.timer.cancel()
    _PutOff.signum, _PutOff.handler, _PutOff.timer, _PutOff.since = None, None, None, 0.0


def after_import(signum: int, frame, handler) -> bool:
    """Whether the main thread (at `frame`) is importing a module; if so, this process gets `signum` again
    AGAIN_AFTER_S later, through `handler` (the caller), until the import is done, and the caller returns without
    acting."""
    return _put_off_while(signum, frame, handler, in_library=False)


def in_library(signum: int, frame, handler) -> bool:
    """after_import, and also whether the main thread runs a library's code (not in_own_code), for at most the
    entry point's library_patience_s since the signal first came there; past that (a library call that takes long:
    a download) the handler acts where it is."""
    return _put_off_while(signum, frame, handler, in_library=True)


def _put_off_while(signum: int, frame, handler, in_library: bool) -> bool:
    while frame is not None and frame.f_code.co_filename == __file__:  # a signal during a handler of this module's:
        frame = frame.f_back  # where the handler itself interrupted
    now = time.monotonic()
    importing = any(f.f_code.co_filename.startswith("<frozen importlib") for f in _frames(frame))
    patience = _EntryPoint.library_patience_s
    waiting = (in_library and patience > 0 and frame is not None and not in_own_code(frame)
               and (not _PutOff.since or now - _PutOff.since < patience))
    if not (importing or waiting):
        _acting()
        return False
    if waiting and not importing and not _PutOff.since:
        _PutOff.since = now
    _put_off(signum, handler)
    return True


def _frames(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_DIRS = tuple(os.path.join(_ROOT, name) + os.sep for name in ("frosty_lm", "hydra_plugins"))


def in_own_code(frame) -> bool:
    """Whether `frame` runs Frosty's code: its package, its Hydra plugin or an entry point (train.py, generate.py);
    not the standard library's frozen modules, nor code made by exec ("<string>": a dataclass's __init__)."""
    filename = frame.f_code.co_filename
    return os.path.isabs(filename) and (filename.startswith(_OWN_DIRS) or os.path.dirname(filename) == _ROOT)


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
    except SystemExit as done:
        if done.code not in (None, 0):
            raise
    put_off = take_put_off()  # a signal put off while a library's code ran, and the work ended first: it came
    if put_off is not None:
        exit_interrupted(put_off)
    _EntryPoint.running = False  # a signal in the last instants: its one line at once (nothing is raised into)


SAME_PRESS_S = 2.0  # a sweep job's second Ctrl-C this soon after its first is the same press (same_press)


def same_press(signum: int, first: int | None, first_at: float) -> bool:
    """Whether a sweep job's Ctrl-C (or SIGTERM) repeats the one it already has: a terminal sends Ctrl-C to every
    process of the sweep, as `timeout` and batch schedulers send SIGTERM to the whole process group, and the sweep's
    main process passes it on to its workers as well (for `kill -INT` to it alone), so that each worker may get one
    signal twice. Only a later one aborts."""
    return signum == first and signum in (signal.SIGINT, signal.SIGTERM) and time.monotonic() - first_at < SAME_PRESS_S
