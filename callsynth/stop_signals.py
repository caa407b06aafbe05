"""The signals that end a call: SIGTERM, and Ctrl-C's SIGINT unless the process was started ignoring it.

A shell starts a background job (`callsynth receive ... &` in a script) with SIGINT ignored, so that the
Ctrl-C meant for the command in the foreground leaves it running; a handler installed regardless undid that
and ended the call with it."""

from __future__ import annotations

import asyncio
import signal


def sigint_ignored() -> bool:
    """Whether this process was started (or set) to ignore Ctrl-C, as a shell's background job is."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def end_on_stop_signals(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """Call `callback(*args)` in `loop` on SIGTERM, and on SIGINT unless it is ignored; where the loop cannot
    handle signals (not the main thread, or not POSIX) the process's own defaults stand."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if sig == signal.SIGINT and sigint_ignored():
            continue
        try:
            loop.add_signal_handler(sig, callback, *args)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


def leave_ctrl_c_to_the_parent() -> None:
    """For a worker process its parent starts and ends (the still's repairer, the call's window, a pool's
    workers): a terminal's Ctrl-C reaches every process of the command, and each of them printed its own
    KeyboardInterrupt traceback, or closed the window, before the parent had ended the call."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
