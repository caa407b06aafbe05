"""Stopping a training run by Ctrl-C between steps, never inside one."""

from __future__ import annotations

import signal

from callsynth.stop_signals import sigint_ignored


class StopAtStepEnd:
    """Ctrl-C asks a training loop to stop once the step in hand is done (the loop reads `asked` after each
    step), so what it keeps is whole steps and the same command goes on from them as if never stopped; a
    second Ctrl-C stops at once. A process started with SIGINT ignored (in the background) goes on
    ignoring it. Caught anywhere instead, a Ctrl-C between the optimiser's step and the step count kept
    weights one step ahead of the count they were saved with."""

    def __enter__(self):
        self.asked, self.previous = False, None
        if sigint_ignored():
            return self             # started to ignore it (in the background): it goes on ignoring it
        try:
            self.previous = (signal.signal(signal.SIGINT, self._ask),)
        except ValueError:          # not the main thread: Ctrl-C is not this loop's to handle
            pass
        return self

    def _ask(self, signum, frame) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous[0] if self.previous[0] is not None else signal.SIG_DFL)
