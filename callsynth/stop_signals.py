"""Who takes Ctrl-C and SIGTERM: a call ends its side on either (on Ctrl-C's SIGINT unless the process was
started ignoring it), and the worker processes a command starts leave them to the command.

A shell starts a background job (`callsynth receive ... &` in a script) with SIGINT ignored, so that the
Ctrl-C meant for the command in the foreground leaves it running; a handler installed regardless undid that
and ended the call with it."""

from __future__ import annotations

import asyncio
import signal
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def sigint_ignored() -> bool:
    """Whether this process was started (or set) to ignore Ctrl-C, as a shell's background job is."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def end_on_stop_signals(loop: asyncio.AbstractEventLoop, callback, *args) -> list:
    """Call `callback(*args)` in `loop` on SIGTERM, and on SIGINT unless it is ignored; where the loop cannot
    handle signals (not the main thread, or not POSIX) the process's own defaults stand. Returns the signals
    it took."""
    taken = []
    for sig in STOP_SIGNALS:
        if sig == signal.SIGINT and sigint_ignored():
            continue
        try:
            loop.add_signal_handler(sig, callback, *args)
            taken.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return taken


@contextmanager
def stop_signals_end(loop: asyncio.AbstractEventLoop, callback, *args):
    """end_on_stop_signals for a stretch of a run (a sender's streaming and hang-up); before and after it the
    process's own handling stands (asyncio.run's Ctrl-C, which cancels the run)."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    taken = end_on_stop_signals(loop, callback, *args)
    try:
        yield
    finally:
        for sig in taken:
            loop.remove_signal_handler(sig)
            signal.signal(sig, before[sig] if before[sig] is not None else signal.SIG_DFL)


def leave_ctrl_c_to_the_parent() -> None:
    """For a worker process its parent starts and ends (the still's repairer, the call's window, a pool's
    workers): a terminal's Ctrl-C reaches every process of the command, and each of them printed its own
    KeyboardInterrupt traceback, or closed the window, before the parent had ended the call."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
