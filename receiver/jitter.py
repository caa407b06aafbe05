"""The receiver's jitter buffer: packets are placed by their capture timestamps, and frames are played out
a fixed small delay behind the sender's clock, so that network jitter and reordering never show.

A packet too old to change any frame still to come is dropped as stale, whatever order it arrived in;
frames whose next packet is late or lost are concealed by the timeline (extrapolation, then hold, then a
slow return to the still), and when a packet comes the face catches up over two frames (playout.CatchUp).

The clock cannot be poisoned: a packet stamped more than STEP_MS ahead of the sender clock the buffer
holds is refused as "future" instead of dragging the playout point ahead of every genuine packet (one
forged packet 10 s ahead used to conceal ten seconds of the call). A real step of the sender's clock, in
either direction, shows as packets that keep disagreeing with it by the same amount; after STEP_CONFIRM_MS
of nothing else the buffer takes the new clock.

The delay adapts unless fixed: a frame is interpolated only when the packet after it has arrived, so the
delay must cover, for each packet, the time from the capture of the one before it to its own arrival,
less the fastest transit (the spacing of packets and their jitter together: the two are not independent,
and adding a percentile of each waited far longer than needed). The delay follows a high percentile of
that over the recent packets (REACH_PERCENTILE, REACH_WINDOW), plus MARGIN_MS, never over max_delay_ms (past
that the timeline extrapolates: a low packet rate must not make the call lag), and it moves by SLEW_MS per
frame at most, so the picture never jumps in time.

A packet a little late is waited for, not guessed: a frame whose moment is past the newest packet by up to
hold_ms shows the newest packet's moment (the picture pauses for that frame, as any video call's does)
and only past that is the motion extrapolated. So the delay need not cover the whole spacing of packets:
it aims at the need less hold_ms, and a frame waits only when its packet is late."""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from callsynth.call_options import CALL
from callsynth.face.pose import Pose
from callsynth.wire import CAPTURE_WRAP, FLAG_AUDIO, FrameFeatures

from .playout import CATCH_UP_MS, CatchUp, FeatureTimeline

WRAP = CAPTURE_WRAP       # the wire's capture times wrap here
STEP_MS = 1000.0          # transit this far from the clock held is a forged stamp or a clock step
STEP_CONFIRM_MS = 700.0   # that long of packets agreeing on the new clock (and no other) is a real step
STEP_AGREE_MS = 250.0
MARGIN_MS = 5.0           # the adaptive delay's allowance beyond the spacing and jitter it has seen
HOLD_MS = 40.0            # a frame past the newest packet by up to this shows the newest packet's moment
SLEW_MS = 2.0             # how far the adaptive delay moves per frame shown
FIRST_DELAY_MS = 60.0     # the adaptive delay before the first packets tell it anything
# The need is judged over the last REACH_WINDOW packets (2.4 s at 25 a second) at its REACH_PERCENTILE: a
# cluster of late packets (one stall of the sender's machine delays several in a row) raises the delay for
# that long only; over 250 packets the call's first seconds set it for the rest of a short call.
REACH_WINDOW = 60
REACH_PERCENTILE = 95


def unwrap_ms(capture_ms: int, now_ms: int) -> int:
    """The full capture time of a wrapped one (wire.CAPTURE_BITS), taking the candidate nearest to now."""
    delta = (now_ms - capture_ms) % WRAP
    if delta >= WRAP // 2:
        delta -= WRAP
    return now_ms - delta


class JitterBuffer:
    def __init__(self, rest_pose: Pose, code_size: int, delay_ms: float | None = CALL.playout_delay_ms,
                 extrapolate_ms: float = 100.0, silence_ms: float = 1000.0, offset_window: int = 300,
                 max_delay_ms: float = CALL.max_playout_delay_ms, hold_ms: float = HOLD_MS,
                 catch_up_ms: float = CATCH_UP_MS):
        """`delay_ms`: a fixed playout delay, or None to adapt it (see the module's docstring);
        `catch_up_ms`: after concealed frames, reach the packets' motion over this long (playout.CatchUp)."""
        self.timeline = FeatureTimeline(rest_pose, code_size, extrapolate_ms=extrapolate_ms,
                                        silence_ms=silence_ms)
        self.catch_up = CatchUp(catch_up_ms)
        self.adaptive = delay_ms is None
        self.delay_ms = min(FIRST_DELAY_MS, max_delay_ms) if delay_ms is None else delay_ms
        self.max_delay_ms, self.hold_ms = max_delay_ms, hold_ms
        self.spacing: deque = deque(maxlen=120)      # capture-time gaps between consecutive packets
        self.reach: deque = deque(maxlen=REACH_WINDOW)   # arrival of each packet − capture of the one before
        self.last_capture: int | None = None
        # arrival − capture of recent packets, apart for camera and speech-derived packets: the latter
        # leave the sender a look-ahead later than the moment they describe.
        self.transit = {False: deque(maxlen=offset_window), True: deque(maxlen=offset_window)}
        self.from_audio = False                      # the newest packet's kind sets the clock
        self.played_ms = -np.inf                     # capture time of the newest frame shown
        self.counts = {"accepted": 0, "stale": 0, "duplicate": 0, "future": 0, "clock_steps": 0}
        self.newest_ms: int | None = None
        self.off_clock: list[tuple[int, float, FrameFeatures, int]] = []   # (arrival, transit, packet, capture)

    @property
    def offset_ms(self) -> float:
        """Receiver clock minus sender clock, plus the fastest transit seen lately."""
        transit = self.transit[self.from_audio]
        return min(transit) if transit else 0.0

    def push(self, features: FrameFeatures, arrival_ms: int) -> str:
        """Store a decoded packet; returns 'accepted', 'stale', 'duplicate' or 'future'."""
        capture = unwrap_ms(features.capture_ms, arrival_ms)
        from_audio = bool(features.flags & FLAG_AUDIO)
        if from_audio != self.from_audio:
            # The sender switched between camera and speech: a new clock, nothing is stale yet.
            self.from_audio = from_audio
            self.played_ms = -np.inf
            self.off_clock.clear()
        transit = arrival_ms - capture
        held = self.transit[from_audio]
        if held and abs(transit - min(held)) > STEP_MS:
            verdict = self._off_clock(features, arrival_ms, transit, capture)
            self.counts[verdict] += 1
            return verdict
        self.off_clock.clear()
        self.transit[from_audio].append(transit)
        times = self.timeline.times
        anchor = bisect.bisect_right(times, self.played_ms)
        if anchor and capture < times[anchor - 1]:
            # Frames up to played_ms are shown, and a newer packet already covers them.
            verdict = "stale"
        elif capture in times[max(0, anchor - 2):anchor + 2] or capture in times:
            verdict = "duplicate"
        else:
            self.timeline.add(features, capture)
            if self.newest_ms is not None and capture > self.newest_ms:
                self.spacing.append(capture - self.newest_ms)
                self.reach.append(arrival_ms - self.newest_ms)
            self.newest_ms = capture if self.newest_ms is None else max(self.newest_ms, capture)
            verdict = "accepted"
        self.counts[verdict] += 1
        return verdict

    def spread_ms(self) -> dict | None:
        """How packets came lately (ms): spacing (median), transit beyond the fastest (95th percentile),
        and what interpolating 95 % of frames needs (see the module's docstring); None before enough."""
        transit = self.transit[self.from_audio]
        if len(self.reach) < 5 or len(transit) < 5:
            return None
        fastest = min(transit)
        return {"spacing_p50_ms": float(np.median(self.spacing)),
                "jitter_p95_ms": float(np.percentile(np.array(transit)[-120:] - fastest, 95)),
                "needed_ms": float(np.percentile(np.array(self.reach) - fastest, REACH_PERCENTILE))}

    def target_delay_ms(self) -> float:
        """What the adaptive delay aims at now (see the module's docstring)."""
        spread = self.spread_ms()
        if spread is None:
            return self.delay_ms
        return float(min(self.max_delay_ms, max(0.0, spread["needed_ms"] + MARGIN_MS - self.hold_ms)))

    def _off_clock(self, features: FrameFeatures, arrival_ms: int, transit: float, capture: int) -> str:
        """A packet far off the clock held: refused ('future' when ahead of it, 'stale' when behind), unless
        it and those before it have agreed on one new clock for STEP_CONFIRM_MS: then the sender's clock
        really stepped, and the buffer starts again on the new one."""
        if self.off_clock and abs(transit - self.off_clock[0][1]) > STEP_AGREE_MS:
            self.off_clock.clear()
        self.off_clock.append((arrival_ms, transit, features, capture))
        if arrival_ms - self.off_clock[0][0] < STEP_CONFIRM_MS:
            return "future" if transit < min(self.transit[self.from_audio]) else "stale"
        self.counts["clock_steps"] += 1
        pending, self.off_clock = self.off_clock, []
        self.transit[self.from_audio].clear()
        self.timeline.clear()
        self.played_ms, self.newest_ms = -np.inf, None
        for _, t, packet, when in pending:
            self.transit[self.from_audio].append(t)
            self.timeline.add(packet, when)
            self.newest_ms = when if self.newest_ms is None else max(self.newest_ms, when)
        return "accepted"

    def playout_ms(self, now_ms: float) -> float:
        """The capture time to show at receiver time now_ms (one call per frame shown)."""
        if self.adaptive:
            target = self.target_delay_ms()
            self.delay_ms += float(np.clip(target - self.delay_ms, -SLEW_MS, SLEW_MS))
        return now_ms - self.offset_ms - self.delay_ms

    def displayed_ms(self, playout_ms: float) -> float:
        """The moment to show for playout time playout_ms: itself, or the newest packet's moment when that
        is behind it by no more than hold_ms (see the module's docstring)."""
        if self.newest_ms is not None and 0 < playout_ms - self.newest_ms <= self.hold_ms:
            return float(max(self.newest_ms, self.played_ms))
        return playout_ms

    def state_at(self, playout_ms: float):
        """(pose, code) or None, and whether this frame is concealed (no packet at or after it)."""
        self.played_ms = max(self.played_ms, playout_ms)
        concealed = self.newest_ms is None or playout_ms > self.newest_ms
        return self.catch_up(self.timeline.at(playout_ms), concealed, playout_ms), concealed
