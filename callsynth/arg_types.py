"""argparse's types for the numbers a command line takes: each checks its range once, where the text is
read, so a rate of 0 frames a second or a negative wait is a usage error naming the option, not a
ZeroDivisionError in the call's display loop, an empty video written with exit status 0, or a wait that
never ends (`float` alone accepts 0, -5, nan and inf)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable


def whole_in(low: int, high: int | None, what: str, wanted: str) -> Callable[[str], int]:
    """A whole number from `low` to `high` (None: no top); `what` it is and the range `wanted` are said."""

    def read(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text}: must be {wanted}")
        return value

    read.__name__ = "number"
    return read


positive_int = whole_in(1, None, "a whole number", "at least 1")     # a count
port = whole_in(1, 65535, "a port number", "a port from 1 to 65535")   # a TCP port to listen on
camera_index = whole_in(0, None, "a camera index (0, 1, ...)", "a camera index (0 is the first camera)")


def number_in(low: float, high: float = math.inf, *, above: bool = False, unit: str = "") -> Callable[[str], float]:
    """A finite number from `low` (or just above it, `above`) to `high`; `unit` is said in the message."""
    unit = f" {unit}" if unit else ""
    if above:
        wanted = f"more than {low:g}{unit}" if high == math.inf else f"more than {low:g} and at most {high:g}{unit}"
    else:
        wanted = f"at least {low:g}{unit}" if high == math.inf else f"from {low:g} to {high:g}{unit}"

    def read(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value > high or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text}: must be {wanted}")
        return value

    read.__name__ = "number"   # argparse names a type by __name__ in "invalid number value: ..."
    return read


# The rates and times of a call's command lines.
display_rate = number_in(1, 120, unit="frames a second")
# A fixed jitter buffer past 2 s would hold the face that far behind its voice; the timeline forgets
# packets 5 s behind the newest (receiver.playout.FeatureTimeline), so past that nothing would be shown.
playout_delay_ms = number_in(0, 2000, unit="ms")
seconds = number_in(0, above=True, unit="s")
wait_s = number_in(0, unit="s")
weight = number_in(0)
per_second = number_in(0, above=True, unit="a second")
snr_db = number_in(-20, 60, unit="dB")
share = number_in(0, 1)
dropout = number_in(0, 0.9)       # 1 would zero every unit it is applied to


def room_name(text: str) -> str:
    """A call's room name: an empty one (`--room ""`, an unset shell variable) was a room like any other, so
    two callers who each forgot it met there, and one who set it never met the other."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a room name is needed (any text both sides give, e.g. --room kitchen)")
    return text


def existing_folder(text: str) -> Path:
    """A folder to read from: one that is not there is said, not read as a folder of nothing."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'not a folder' if path.exists() else 'no such folder'}")
    return path


def kbps_list(text: str) -> tuple:
    """Bitrates in kbps, comma-separated (eval's --kbps): each a positive finite number."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}")
    if not values:
        raise argparse.ArgumentTypeError(f"no bitrate in {text!r}")
    if not all(0 < v < math.inf for v in values):     # nan and inf passed `v <= 0` and reached the encoders
        raise argparse.ArgumentTypeError(f"bitrates must be positive numbers of kbps, not {text!r}")
    return values
