"""The call's defaults, in one place: the sender's and receiver's options dataclasses, the jitter buffer,
the offline reenactment, the demo and every command line read them from here instead of repeating them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallDefaults:
    send_every: int = 2              # one packet every 2nd frame: 15 packets/s from a 30 fps camera
    playout_delay_ms: float = 60.0   # the jitter buffer plays out this far behind the sender's clock
    display_fps: float = 30.0        # the receiver shows frames at this rate whatever the packet rate
    rejoin_wait_s: float = 30.0      # after losing the sender, wait this long for it to come back


CALL = CallDefaults()
