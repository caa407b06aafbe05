"""The receiver's jitter buffer: packets are placed by their capture timestamps, and frames are played out
a fixed small delay behind the sender's clock, so that network jitter and reordering never show.

A packet too old to change any frame still to come is dropped as stale, whatever order it arrived in;
frames whose next packet is late or lost are concealed by the timeline (extrapolation, then hold, then a
slow return to the still)."""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from callsynth.face.pose import Pose
from callsynth.wire import FLAG_AUDIO, FrameFeatures

from .playout import FeatureTimeline

WRAP = 1 << 32


def unwrap_ms(capture_ms: int, now_ms: int) -> int:
    """The full capture time of a 32-bit wrapped one, taking the candidate nearest to now."""
    delta = (now_ms - capture_ms) % WRAP
    if delta >= WRAP // 2:
        delta -= WRAP
    return now_ms - delta


class JitterBuffer:
    def __init__(self, rest_pose: Pose, code_size: int, delay_ms: float = 60.0,
                 extrapolate_ms: float = 100.0, silence_ms: float = 1000.0, offset_window: int = 300):
        self.timeline = FeatureTimeline(rest_pose, code_size, extrapolate_ms=extrapolate_ms,
                                        silence_ms=silence_ms)
        self.delay_ms = delay_ms
        # arrival − capture of recent packets, apart for camera and speech-derived packets: the latter
        # leave the sender a look-ahead later than the moment they describe.
        self.transit = {False: deque(maxlen=offset_window), True: deque(maxlen=offset_window)}
        self.from_audio = False                      # the newest packet's kind sets the clock
        self.played_ms = -np.inf                     # capture time of the newest frame shown
        self.counts = {"accepted": 0, "stale": 0, "duplicate": 0}
        self.newest_ms: int | None = None

    @property
    def offset_ms(self) -> float:
        """Receiver clock minus sender clock, plus the fastest transit seen lately."""
        transit = self.transit[self.from_audio]
        return min(transit) if transit else 0.0

    def push(self, features: FrameFeatures, arrival_ms: int) -> str:
        """Store a decoded packet; returns 'accepted', 'stale' or 'duplicate'."""
        capture = unwrap_ms(features.capture_ms, arrival_ms)
        from_audio = bool(features.flags & FLAG_AUDIO)
        if from_audio != self.from_audio:
            # The sender switched between camera and speech: a new clock, nothing is stale yet.
            self.from_audio = from_audio
            self.played_ms = -np.inf
        self.transit[from_audio].append(arrival_ms - capture)
        times = self.timeline.times
        anchor = bisect.bisect_right(times, self.played_ms)
        if anchor and capture < times[anchor - 1]:
            # Frames up to played_ms are shown, and a newer packet already covers them.
            verdict = "stale"
        elif capture in times[max(0, anchor - 2):anchor + 2] or capture in times:
            verdict = "duplicate"
        else:
            self.timeline.add(features, capture)
            self.newest_ms = capture if self.newest_ms is None else max(self.newest_ms, capture)
            verdict = "accepted"
        self.counts[verdict] += 1
        return verdict

    def playout_ms(self, now_ms: float) -> float:
        """The capture time to show at receiver time now_ms."""
        return now_ms - self.offset_ms - self.delay_ms

    def state_at(self, playout_ms: float):
        """(pose, code) or None, and whether this frame is concealed (no packet at or after it)."""
        self.played_ms = max(self.played_ms, playout_ms)
        concealed = self.newest_ms is None or playout_ms > self.newest_ms
        return self.timeline.at(playout_ms), concealed
