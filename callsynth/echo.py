"""Echo cancellation: the other side's voice, played out of this machine's loudspeaker, taken back out of
its microphone before this side's voice is sent.

On a laptop without headphones the microphone hears the loudspeaker: each party heard their own voice come
back a round trip later, and on the camera-off path the other's voice drove this side's face. The
loudspeaker (receiver.speaker) hands every sample it writes to `played`; the microphone's frames go through
`cancel`. At 16 kHz (the band a few-kbps voice carries; at 48 kHz pyaec's build high-passed the voice at
~900 Hz, by its impulse response in a probe not kept), in 10 ms frames: speex's adaptive filter (pyaec's
build of speexdsp's MDF, a 250 ms tail) takes out what it can model of the echo, then ResidualEcho takes
the frames where only leftover echo remains
down 20 dB. `python scripts/echo_room.py` (a simulated room around the real canceller): the echo 31-36 dB
down for delays of 20-400 ms, this side's voice kept at -3 dB (the 16 kHz band), 0.6-0.8 ms of CPU a 20 ms
frame on a 2-core AMD EPYC at 2.6 GHz. Both run only while the microphone is found to hear the loudspeaker: with
headphones the adaptive filter, fed the other's voice while this side talks, added it to what was sent.

Alignment: what is played is placed on a clock, after what was played before it (the device's own buffer
plays it first) or at the moment it is handed over (a device that ran dry starts again then), and each
microphone sample is met by what was placed where it was captured: the microphone's own clock (its samples
counted from its most punctual frame), not when the canceller gets to it. A busy machine processed the
microphone up to 1.6 s late and in bursts; a queue of played sound drained by the frames as they were
processed (and kept 1 s) paired them with the wrong sound, the echo then 5-15 dB down. What the sound
devices add beyond that is not known (a desktop's sound server, the capture's periods; 220-350 ms through
aplay and ALSA's file plug-in in tests/test_echo.py), so the delay from that clock to the echo is found
by correlating their 10 ms loudness envelopes over 1 s windows while the other talks (twice running; then
again when one is clearly better than the one in use, or at once when the echo comes before its held-back
reference), and the reference held back to arrive LEAD_MS ahead of its echo; the canceller then learns the
room afresh. Where the model puts a break in what was played (the device taken to have run dry), the echo
after it tells whether the device played on instead (_judge_break): then the break is taken out and the
device counted as holding that much more. An echo that moves where the model saw no break (a sound server
that stalled or skipped unseen) is followed by its lag to the sample (_follow_echo). Until an echo is found
(1.5 s of the other talking) the microphone passes as it is, at 16 kHz."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callsynth.media import SoundDropped

RATE = 16000                  # where the canceller runs: the band a few-kbps voice carries
FRAME = 160                   # 10 ms: what the microphone's frames are cut into
TAIL_MS = 250                 # the longest echo it models: the reference's lead plus the room's reverberation
MAX_DELAY_MS = 600            # the longest the loudspeaker's path may hold the sound back (found, below)
FRAME_MS = FRAME * 1000 // RATE
MAX_LAG = MAX_DELAY_MS // FRAME_MS                 # the same in FRAMEs
LEAD_MS = 50                  # the reference is put this far ahead of its echo, the rest of the delay held back
FIND_EVERY = 25               # frames (0.25 s) between looks for the delay
WINDOW = 100                  # frames (1 s) of loudness a look compares
REVERBERATION_MS = 100        # of the tail, left for the room's reverberation when the delay is placed
BETTER = 0.2                  # how much better a new lag's correlation must be than the one in use's
FOUND = 0.6                   # the correlation of loudness envelopes that counts as the echo found
UNHEARD = 8                   # looks in a row (2 s of the other talking) that find none: no echo any more
REFERENCE_KEPT_S = 5.0        # what was played is kept this long: how late the microphone may be processed
VOICE_RATE = 48000            # what the microphone's frames are given in and out
SPEAKING = 100.0              # a reference frame louder than this (RMS of 16-bit samples) counts as the other talking
SUPPRESSED = 0.1              # the gain on a frame of leftover echo alone (-20 dB)
NEAR_MARGIN = 10.0            # a frame this much louder than the usual leftover (10 dB) is this side talking
RESIDUAL_PERCENTILE = 50      # of the leftover's share of the reference's power, over...
RESIDUAL_MEMORY = 300         # ...the last 3 s the other talked
LATEST = 300                  # frames (3 s) of the other talking that STATS.json's reduction is over
BREAK_WINDOW = 4800           # samples (0.3 s) of the microphone before a break's echo, and...
AFTER_WINDOW = 2400           # ...(0.15 s) after it, that tell whether the device ran dry there (_judge_break)
SHORTEST_AFTER = 800          # (50 ms) the least of that told apart from the next break's
ECHO_SPREAD_MS = 30           # how far the echo's lag to the sample may lie from the one its loudness found
CLEAR_PEAK = 4.0              # the echo's lag to the sample is found where its peak is this far over the median
PLAYED_ON = 2.0               # after the break, the room's peaks fit this much better moved than where they were
MIC_KEPT = 300                # microphone frames (3 s) kept for that
SHORTEST_BREAK = 5            # samples: a shorter break's two places of the echo are not told apart
DOUBTFUL_GAIN = 0.25          # meanwhile, a frame the filter took less than 6 dB off is taken down (ResidualEcho)
MAX_HELD_MS = 500             # the most sound the device may be found to hold beyond its model
FOLLOW_EVERY = 10             # frames (0.1 s) between looks for an echo that moved unseen (_follow_echo)
MAX_MOVE_MS = 300             # how far it is looked for, either way
SHORTEST_MOVE = 32            # samples (2 ms): a smaller move is left to the filter (two clocks' drift)
ECHO_ALONE = 2.0              # a window this much louder against what was played than the echo's usual: this side talks

log = logging.getLogger("callsynth.echo")


class EchoUnavailable(RuntimeError):
    """No canceller on this machine (pyaec has no build for it)."""


def _speex():
    try:
        from pyaec import lib
    except (ImportError, OSError, AttributeError) as exc:
        raise EchoUnavailable(f"pyaec could not be loaded ({exc})") from exc
    if lib is None:
        raise EchoUnavailable("pyaec's library could not be loaded")
    return lib


class _Samples:
    """A queue of 16-bit samples, read and written in any lengths."""

    def __init__(self):
        self.parts: deque[np.ndarray] = deque()
        self.size = 0

    def write(self, samples: np.ndarray) -> None:
        if samples.size:
            self.parts.append(samples)
            self.size += samples.size

    def read(self, n: int) -> np.ndarray:
        """`n` samples, zeros where fewer are waiting."""
        out = np.zeros(n, np.int16)
        at = 0
        while at < n and self.parts:
            part = self.parts[0]
            take = min(n - at, part.size)
            out[at:at + take] = part[:take]
            at += take
            if take == part.size:
                self.parts.popleft()
            else:
                self.parts[0] = part[take:]
        self.size -= at
        return out


class _Timeline:
    """Samples at places on a clock (RATE a second of time.monotonic), each written after the one before;
    the newest `keep` kept (in a ring: a write costs its own length, not the whole)."""

    def __init__(self, keep: int):
        self.keep = keep
        self.ring = np.zeros(keep, np.int16)
        self.first = self.end = 0            # where the first was written, and where the next one goes
        self.written = False

    def _put(self, at: int, samples: np.ndarray) -> None:
        self.ring[np.arange(at, at + samples.size) % self.keep] = samples

    def write(self, samples: np.ndarray, at: int) -> int:
        """`samples` from `at`, or after the last written when that is later (silence in between, its
        length returned)."""
        if not self.written:
            self.written, self.first, self.end = True, at, at
        at = max(at, self.end)
        gap = min(at - self.end, self.keep)
        if gap:
            self._put(at - gap, np.zeros(gap, np.int16))
        if samples.size > self.keep:
            at, samples = at + samples.size - self.keep, samples[-self.keep:]
        self._put(at, samples)
        self.end = at + samples.size
        return gap

    def close(self, at: int, n: int) -> None:
        """The `n` samples of silence from `at` taken out: what was written after them moves `n` earlier."""
        after, _ = self.read(at + n, max(0, self.end - at - n))
        self._put(at, after)
        self.end -= n

    def open(self, at: int, n: int) -> None:
        """`n` samples of silence put in at `at`: what was written from there on moves `n` later."""
        after, _ = self.read(at, max(0, self.end - at))
        self._put(at, np.zeros(n, np.int16))
        self._put(at + n, after)
        self.end += n

    def read(self, at: int, n: int) -> tuple[np.ndarray, int]:
        """The `n` samples from `at` (silence where nothing was written), and how many of them were
        written once but are no longer kept."""
        out = np.zeros(n, np.int16)
        start = max(self.first, self.end - self.keep)
        lo, hi = max(at, start), min(at + n, self.end)
        if hi > lo:
            out[lo - at:hi - at] = self.ring[np.arange(lo, hi) % self.keep]
        return out, max(0, min(start, at + n) - max(at, self.first))


def _resampler(rate: int) -> av.AudioResampler:
    return av.AudioResampler(format="s16", layout="mono", rate=rate)


def _pcm(frames: list[av.AudioFrame]) -> np.ndarray:
    """Mono 16-bit frames' samples, one after the other."""
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.int16)


def _resample(resampler: av.AudioResampler, samples: np.ndarray, rate: int) -> np.ndarray:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return _pcm(resampler.resample(frame))


def _peaks(follows: np.ndarray) -> np.ndarray:
    """A cross-correlation's peaks over its median: the room's pattern, to be matched moved."""
    size = np.abs(follows)
    return np.maximum(size - np.median(size), 0.0)


def _power(samples: np.ndarray) -> float:
    """Mean square, of 16-bit samples."""
    return float(np.mean(samples.astype(np.float64) ** 2))


class ResidualEcho:
    """What the adaptive filter leaves of the echo (12-16 dB under it in the simulated room), taken down
    SUPPRESSED further in the frames where that is all there is.

    speex's own preprocessor did this (27-29 dB in all) but also learnt the leftover echo as noise and took
    this side's voice down by 10 dB for a while after the other stopped talking. Here a frame is echo alone
    when the other has talked within the filter's tail and the frame is no louder than NEAR_MARGIN times
    what the filter usually leaves of the reference's power (the median of that share over the last 3 s
    the other talked): a frame where this side talks too is louder than that."""

    def __init__(self, tail_frames: int):
        self.reference_power: deque[float] = deque(maxlen=max(1, tail_frames))
        self.shares: deque[float] = deque(maxlen=RESIDUAL_MEMORY)
        self.gain = 1.0

    def __call__(self, reference_power: float, out: np.ndarray, heard: float | None = None) -> np.ndarray:
        """`heard`: the microphone frame's power, given while the filter's alignment is in doubt (a break
        in what was played, not yet judged or just taken out): a frame the filter took less than
        DOUBTFUL_GAIN off is then taken down too, this side's voice with it if it talks then (a few tenths
        of a second)."""
        self.reference_power.append(reference_power)
        talked = max(self.reference_power)
        target = 1.0
        if talked > SPEAKING ** 2:
            power = _power(out)
            self.shares.append(np.log((power + 1.0) / talked))
            usual = float(np.exp(np.percentile(self.shares, RESIDUAL_PERCENTILE)))
            if power < NEAR_MARGIN * usual * talked or (heard is not None and power > DOUBTFUL_GAIN * heard):
                target = SUPPRESSED
        ramp = np.linspace(self.gain, target, out.size)        # no click where the gain changes
        self.gain = target
        return np.clip(out * ramp, -32768, 32767).astype(np.int16)


class EchoCanceller:
    """`played` (any thread: the loudspeaker's) gives it what leaves the loudspeaker, `cancel` (the
    microphone's side) returns a microphone frame with that sound's echo taken out."""

    def __init__(self, tail_ms: float = TAIL_MS):
        lib = _speex()
        self.lib = lib
        self.pointer = ctypes.POINTER(ctypes.c_int16)
        self.tail = int(RATE * tail_ms / 1000)
        self.state = None
        self._new_state()
        self.lock = threading.Lock()
        self.reference = _Timeline(int(RATE * REFERENCE_KEPT_S))   # played, at RATE, where it was played
        self.to_reference = _resampler(RATE)
        self.mic_in, self.mic_down, self.mic_up = _resampler(VOICE_RATE), _resampler(RATE), _resampler(VOICE_RATE)
        self.mic = _Samples()                # the microphone at RATE, waiting for a whole FRAME
        self.out = _Samples()                # cancelled, at VOICE_RATE
        self.out.write(np.zeros(VOICE_RATE * FRAME // RATE, np.int16))   # what a FRAME waiting holds back
        self.mic_samples = 0                 # at RATE, since the first frame
        self.mic_dropped = SoundDropped()     # the microphone's frames dropped before each
        self.mic_clock: float | None = None  # where on the clock its sample 0 was captured
        self.clock_moves: deque[tuple[float, float]] = deque(maxlen=20)   # (s, ms) earlier, once cancelling
        self.heard_any = False               # the loudspeaker has played something
        self.frames = self.cancelled = 0     # microphone frames through it; those with the other talking
        # the microphone's energy before and after, in the last LATEST frames the other talked
        self.latest: deque[tuple[float, float]] = deque(maxlen=LATEST)
        self.reference_dropped = 0
        self.played_s = 0.0
        span = MAX_LAG + WINDOW
        # one entry a FRAME on the microphone's clock, up to the newest frame's (`captured`): a frame the
        # microphone dropped has NaN for its loudness, and what was played then its own (_loudness_gap)
        self.reference_loudness: deque[float] = deque(maxlen=span)
        self.mic_loudness: deque[float] = deque(maxlen=span)
        self.residual = ResidualEcho(self.tail // FRAME)
        self.delay_frames = 0                # the reference held back this many FRAMEs
        self.lag_frames = 0                  # the echo's lag behind the reference's place on the clock
        self.held = 0                        # samples the device holds beyond its model (found: _judge_break)
        self.open_breaks: deque[tuple[int, int]] = deque()   # where the model put breaks, and how long
        self.mic_kept: deque[tuple[int, np.ndarray]] = deque(maxlen=MIC_KEPT)   # its FRAMEs, where captured
        self.breaks = self.breaks_not_dry = 0
        self.doubt_until = 0                 # a break taken out: the filter's last TAIL of reference jumped
        self.judged: deque[dict] = deque(maxlen=20)   # the last breaks judged: length, lag, fit, verdict
        self.echo_at: int | None = None      # the echo's lag to the sample (_follow_echo: where it stands)...
        self.room_pattern: np.ndarray | None = None   # ...and the room's peaks about it
        self.move_seen: tuple[int, int] | None = None   # where a look found it elsewhere, and that look's frame
        self.echo_loudness: deque[float] = deque(maxlen=20)   # the microphone's power over the played's, there
        self.follow_from = 0                 # the frame from which a look's window is all after the last move
        self.moves: deque[tuple[float, float]] = deque(maxlen=20)   # (s, ms later) the echo moved unseen
        self.captured = 0                    # where the newest microphone frame was captured, on the clock
        self.candidate: int | None = None    # the lag the last look found
        self.echo_heard = False              # looks found the microphone following the loudspeaker...
        self.looks_without = 0               # ...and fewer than UNHEARD looks since have not: cancelling
        self.delays_found: list[float] = []
        self.found_at_s: list[float] = []    # when (seconds of microphone) each was found

    def _new_state(self) -> None:
        """A canceller that has learnt nothing: at the start, and when the delay it must model moved (what
        it had learnt belonged to the old one)."""
        state = self.lib.AecNew(FRAME, self.tail, RATE, False)   # its preprocessor: see ResidualEcho
        if not state:
            raise EchoUnavailable("pyaec could not make a canceller")
        old, self.state = self.state, state
        if old:
            self.lib.AecDestroy(old)

    def played(self, pcm: np.ndarray, rate: int = VOICE_RATE, at: float | None = None) -> None:
        """Samples (mono 16-bit) as they are handed to the loudspeaker, at `at` (time.monotonic(): now):
        after those before them, or from `at` when those have played out by then (as receiver.speaker
        takes the device to play)."""
        if not pcm.size:
            return                         # (an empty frame into the resampler: "Cannot allocate memory")
        now = round((time.monotonic() if at is None else at) * RATE) - self.held
        with self.lock:
            if self.reference.written and now > self.reference.end:
                # the device ran dry before these: the last 1 ms the resampler holds back was played before
                # the break, not after it (written after it, it moved the whole reference 1 ms against its
                # echo, which turned a learnt room's phase around: 8-12 dB in all where 31 dB without breaks,
                # scripts/echo_room.py --stall 160)
                self.reference.write(_pcm(self.to_reference.resample(None)), self.reference.end)
                self.to_reference = _resampler(RATE)
            samples = _resample(self.to_reference, np.ascontiguousarray(pcm, np.int16), rate)
            before = self.reference.end
            gap = self.reference.write(samples, now)
            if gap and self.echo_heard:      # its echo tells whether the device really ran dry: _judge_break
                self.open_breaks.append((before, gap))
                self.breaks += 1
            self.played_s += pcm.size / rate
            self.heard_any = True

    def cancel(self, frame: av.AudioFrame, at: float | None = None) -> av.AudioFrame:
        """A microphone frame, as many samples long (mono 16-bit at VOICE_RATE), with the echo taken out.
        `at`: when the frame came from the microphone (time.monotonic(): now), however late it is processed."""
        dropped = self.mic_dropped(frame)
        if dropped:
            # frames dropped before it (the call fell behind): its clock runs on over them (counted without
            # them, every sample after was paired with sound played that much earlier, and the echo found
            # afresh), and the filter's last TAIL of reference jumped as it does over a break taken out: in
            # doubt
            self.mic_samples += round(dropped * RATE)
            self.doubt_until = self.frames + self.tail // FRAME
        pcm = _pcm(self.mic_in.resample(frame))
        down = _resample(self.mic_down, pcm, VOICE_RATE)
        self.mic.write(down)
        self.mic_samples += down.size
        # its clock: the most punctual frame's (one that let it creep to follow a slower microphone moved
        # the reference a sample every 0.3 s, and the filter learnt the room again each time)
        arrived = (time.monotonic() if at is None else at) * RATE - self.mic_samples
        if self.mic_clock is not None and round(arrived) < round(self.mic_clock) and self.echo_heard:
            # what the learnt room is aligned to moves with it
            moved_ms = round((self.mic_clock - arrived) * 1000 / RATE, 1)
            self.clock_moves.append((round(self.mic_samples / RATE, 2), moved_ms))
        self.mic_clock = arrived if self.mic_clock is None else min(self.mic_clock, arrived)
        while self.mic.size >= FRAME:
            captured = round(self.mic_clock) + self.mic_samples - self.mic.size
            self.out.write(_resample(self.mic_up, self._frame(self.mic.read(FRAME), captured), RATE))
        out = av.AudioFrame.from_ndarray(self.out.read(pcm.size).reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts = VOICE_RATE, frame.pts
        if frame.time_base is not None:
            out.time_base = frame.time_base
        return out

    def _frame(self, mic: np.ndarray, captured: int) -> np.ndarray:
        """One FRAME of the microphone, captured at `captured` on the clock, met by what was played then."""
        with self.lock:
            if not self.heard_any:
                return mic
            if self.mic_loudness:
                self._loudness_gap(captured)
            latest, forgotten = self.reference.read(captured, FRAME)
            self.captured = captured
            reference, _ = self.reference.read(captured - FRAME * self.delay_frames, FRAME)
        self.reference_dropped += forgotten
        self.reference_loudness.append(np.sqrt(_power(latest)))
        heard = _power(mic)
        self.mic_loudness.append(np.sqrt(heard))
        self.mic_kept.append((captured, mic))
        if self.open_breaks:
            self._judge_break()
        else:
            if len(self.mic_loudness) > WINDOW and self.frames % FIND_EVERY == 0:
                self._find_delay()
            if self.echo_heard and self.frames % FOLLOW_EVERY == 0:
                self._follow_echo()
        doubt = bool(self.open_breaks) or self.frames < self.doubt_until
        played = _power(reference)
        if self.echo_heard:
            out = np.empty(FRAME, np.int16)
            self.lib.AecCancelEcho(self.state, mic.ctypes.data_as(self.pointer),
                                   reference.ctypes.data_as(self.pointer), out.ctypes.data_as(self.pointer), FRAME)
            out = self.residual(played, out, heard if doubt else None)
        else:
            out = mic
        self.frames += 1
        if played > SPEAKING ** 2:
            self.cancelled += 1
            self.latest.append((heard, _power(out)))      # mean squares: frames are all FRAME long
        return out

    def _loudness_gap(self, captured: int) -> None:
        """The microphone's frames between the last one met and this one, captured at `captured`, that never
        came (dropped: the call fell behind) keep their places in the loudness envelopes (under the lock).
        Left out, the envelopes' k-th entries back stood for different times after each gap, and a lag in
        them was no lag on the clock: with 20-100 ms dropped every 0.1-0.8 s the echo 270 ms behind was found
        at 180-230 ms, or found right and moved 70-90 ms wrong later, and the room learnt afresh there
        (/tmp probe, the test_echo.py test below)."""
        missing = min(round((captured - self.captured) / FRAME) - 1, self.mic_loudness.maxlen)
        for k in range(missing, 0, -1):
            self.reference_loudness.append(self._played_loudness(captured - k * FRAME))
            self.mic_loudness.append(np.nan)

    def _played_loudness(self, at: int) -> float:
        """The RMS of the FRAME played from `at`: an entry of reference_loudness (under the lock)."""
        return float(np.sqrt(_power(self.reference.read(at, FRAME)[0])))

    def _judge_break(self) -> None:
        """Where the model put a break in what was played (the sound handed over after the device's queue,
        as the model counts it, had played out), did the device run dry? One that holds more than the model
        knows (a desktop's sound server, aplay's buffer) played on, and its echo came the break's length
        before the reference: 7 dB came out of the canceller where 31 dB would (scripts/echo_room.py --stall
        160 --device-buffer 200), and with a break shorter than the reference's lead the filter learnt the room
        again (24 dB). The echo's lag to the sample is found before the break (the microphone's last
        BREAK_WINDOW before it could hear it), and the room's pattern of peaks about it is matched after it
        (the next AFTER_WINDOW, or up to where the next break could be heard) moved anywhere from the break's
        length earlier to not at all: where it fits clearly better moved, that much of the break is taken out
        (all of it, or the part a device that held less than the break played on through) and the device
        counted as holding that much more; the room's filter stays (its alignment is
        back to the sample, but the reference it holds jumped: the next TAIL_MS are in doubt as the break
        was). (Loudness in 10 ms frames did not tell breaks under 50 ms apart.) The delay is not looked for
        meanwhile."""
        at, gap = self.open_breaks[0]
        near = self.lag_frames * FRAME - RATE * ECHO_SPREAD_MS // 1000
        lo, hi = max(0, near), near + 2 * RATE * ECHO_SPREAD_MS // 1000
        # up to where the next break could be heard: a window across both fitted neither
        after_n = AFTER_WINDOW
        if len(self.open_breaks) > 1:
            after_n = min(after_n, self.open_breaks[1][0] + lo - at - hi)
        if self.captured + FRAME < at + hi + after_n:
            return
        self.open_breaks.popleft()
        if gap < SHORTEST_BREAK or after_n < SHORTEST_AFTER:
            return
        before, talked_before = self._echo_lags(at + lo - BREAK_WINDOW, BREAK_WINDOW, lo, hi)
        after, talked_after = self._echo_lags(at + hi, after_n, lo - gap, hi)
        if min(talked_before, talked_after) < 0.3:
            return                             # too little of the other talking to tell
        lag = lo + int(np.argmax(before))
        clear = float(np.max(before) / (np.median(np.abs(before)) + 1e-12))
        # where the room's pattern of peaks (the direct path and its reflections, whose heights change with
        # what is said: the highest alone jumped between them) now fits best, from the break's length earlier
        # (played on through it) to where it was (ran dry through it); in between, the device played on
        # through part of it. fits[k]: moved gap - k earlier
        fits = np.correlate(_peaks(after), _peaks(before), "valid")
        best = int(np.argmax(fits))
        played_on = gap - best
        played_on = 0 if played_on <= 2 else gap if played_on >= gap - 2 else played_on
        if clear < CLEAR_PEAK or fits[best] < PLAYED_ON * fits[gap]:
            played_on = 0
        self.judged.append({"judged_at_s": round(self.frames * FRAME / RATE, 2),
                            "break_ms": round(gap * 1000 / RATE, 1), "echo_lag_ms": round(lag * 1000 / RATE, 2),
                            "clear": round(clear, 1),
                            "fit_dry": round(float(fits[gap] / fits[best]), 2) if fits[best] > 0 else None,
                            "played_on_ms": round(played_on * 1000 / RATE, 1)})
        if played_on and self.held + played_on <= RATE * MAX_HELD_MS / 1000:
            with self.lock:
                self._move_played(at, -played_on)
                self.held += played_on
            self.candidate = self.move_seen = None
            self.doubt_until = self.frames + self.tail // FRAME
            self.follow_from = self.frames + 2 * BREAK_WINDOW // FRAME
            self.breaks_not_dry += 1
            log.info("the loudspeaker played on where it was taken to run dry: it holds %d ms more than counted",
                     self.held * 1000 // RATE)

    def _move_played(self, at: int, moved: int) -> None:
        """What was played from `at` on moved `moved` samples later (silence put in) or earlier (taken out),
        the breaks still to be judged with it, and the loudness the delay is looked for in as it now stands
        (under the lock)."""
        if moved > 0:
            self.reference.open(at, moved)
        else:
            self.reference.close(at, -moved)
        self.open_breaks = deque((a + moved if a >= at else a, g) for a, g in self.open_breaks)
        oldest = self.captured - FRAME * (len(self.reference_loudness) - 1)
        self.reference_loudness.extend(self._played_loudness(oldest + FRAME * k)
                                       for k in range(len(self.reference_loudness)))

    def _follow_echo(self) -> None:
        """An echo that moved where the model saw no break: a sound server that stalled unseen (the device
        stopped, then played on that much later) or skipped. The adaptive filter follows a move inside its
        tail by itself, but over seconds: a 20 ms stall took the echo from 31 dB down to 10-12 dB over the
        next two seconds (scripts/echo_room.py --device-dry 20). Each FOLLOW_EVERY frames while the other
        talks, the echo's lag to the sample is read as _judge_break reads it (the last BREAK_WINDOW of the
        microphone), up to MAX_MOVE_MS either side of where it stands. Its clear peak elsewhere, where the
        room's pattern of peaks found about the old place fits clearly better (PLAYED_ON), and the
        microphone no louder against what was played than with the echo alone (ECHO_ALONE: this side
        talking made lone peaks anywhere, also in overlapping windows), puts the filter's alignment in
        doubt; the same in a look whose window is all after that one's, and what was played is moved with
        it (silence put in for a stall, the skipped sound taken out), the learnt room kept, and the next
        TAIL_MS in doubt as after a break."""
        spread, move, window = RATE * ECHO_SPREAD_MS // 1000, RATE * MAX_MOVE_MS // 1000, BREAK_WINDOW // FRAME
        centre = self.lag_frames * FRAME if self.echo_at is None else self.echo_at
        lo = max(0, centre - move - 2 * spread)
        follows, talked = self._echo_lags(self.captured + FRAME - BREAK_WINDOW, BREAK_WINDOW, lo,
                                          centre + move + 2 * spread)
        size = np.abs(follows)
        floor = CLEAR_PEAK * np.median(size)
        # (not in its outer ECHO_SPREAD_MS, where the played sound it is matched with runs out; but from lag 0)
        edge = spread if lo else 0
        at = lo + edge + int(np.argmax(size[edge:-spread]))
        if talked < 0.3 or size[at - lo] < floor:
            return                             # too little of the other talking, or no clear echo in it
        peaks = np.maximum(size - floor, 0.0)  # (the noise between them matched noise as well as peaks)

        def about(lag: int) -> np.ndarray:     # the peaks within ECHO_SPREAD_MS of `lag` (none below lag 0)
            near = np.zeros(2 * spread + 1)
            first = max(lag - spread, lo)
            near[first - (lag - spread):] = peaks[first - lo:lag + spread + 1 - lo]
            return near

        seen = self.move_seen
        if self.echo_at is None:               # where it stands: found in two looks a window apart
            if seen is None or abs(at - seen[0]) >= SHORTEST_MOVE:
                self.move_seen = (at, self.frames)
            elif self.frames - seen[1] >= window:
                self.echo_at, self.room_pattern, self.move_seen = at, about(at), None
            return
        played = np.square(list(itertools.islice(reversed(self.reference_loudness), self.lag_frames,
                                                 self.lag_frames + window)))
        heard = np.square(list(itertools.islice(reversed(self.mic_loudness), played.size)))
        met = ~np.isnan(heard)                        # (not the frames the microphone dropped)
        if not met.any():
            return
        loudness = float(np.mean(heard[met]) / max(np.mean(played[met]), 1e-9))
        if abs(at - self.echo_at) < SHORTEST_MOVE:
            self.room_pattern = about(self.echo_at)    # the room as it now is (people move)
            self.echo_loudness.append(loudness)
            self.move_seen = None
            return
        if (self.frames < self.follow_from     # its window still holds sound from before the last move
                or not self.echo_loudness or loudness > ECHO_ALONE * float(np.median(self.echo_loudness))
                or np.dot(about(at), self.room_pattern) < PLAYED_ON * np.dot(about(self.echo_at), self.room_pattern)):
            return
        if seen is None or abs(at - seen[0]) > SHORTEST_MOVE // 4:
            self.move_seen = (at, self.frames)
            self.doubt_until = max(self.doubt_until, self.frames + window + FOLLOW_EVERY)
            return
        if self.frames - seen[1] < window:
            return
        moved, self.move_seen = at - self.echo_at, None
        self.follow_from = self.frames + 2 * window
        # from the next frame on its reference is what was played `moved` earlier (later, if negative)
        where = self.captured + FRAME - FRAME * self.delay_frames
        with self.lock:
            if where >= self.reference.end:
                return                         # nothing played waits there: the next sound placed afresh
            self._move_played(where - max(moved, 0), moved)
        self.candidate = None
        self.doubt_until = self.frames + self.tail // FRAME
        self.moves.append((round(self.frames * FRAME / RATE, 2), round(moved * 1000 / RATE, 1)))
        log.info("the loudspeaker's echo moved %.1f ms %s, unseen: followed", abs(moved) * 1000 / RATE,
                 "later" if moved > 0 else "earlier")

    def _echo_lags(self, start: int, n: int, lo: int, hi: int) -> tuple[np.ndarray, float]:
        """How well the `n` microphone samples from `start` follow what was played p samples before
        them, for p from lo to hi (cross-correlation, each frequency weighted alike: GCC-PHAT, whose peak is
        a sample wide), and the share of those 10 ms frames where the other talked."""
        heard = np.zeros(n)
        for captured, mic in reversed(self.mic_kept):    # (newest first: what is wanted is recent)
            if captured + FRAME <= start:
                break
            a, b = max(captured, start), min(captured + FRAME, start + n)
            if b > a:
                heard[a - start:b - start] = mic[a - captured:b - captured]
        with self.lock:
            played, _ = self.reference.read(start - hi, n + hi - lo)
        played = played.astype(np.float64)
        size = 1 << int(np.ceil(np.log2(played.size)))
        cross = np.conj(np.fft.rfft(heard, size)) * np.fft.rfft(played, size)
        follows = np.fft.irfft(cross / (np.abs(cross) + 1e-9), size)[:hi - lo + 1][::-1]
        frames = played[hi - lo:][:n // FRAME * FRAME].reshape(-1, FRAME)
        return follows, float(np.mean(np.sqrt(np.mean(frames ** 2, axis=1)) > SPEAKING))

    def _find_delay(self) -> None:
        """The lag (in FRAMEs) at which the microphone's loudness follows the reference's best, when the
        other side has talked enough of the last 1.5 s to tell; the reference held back to LEAD_MS ahead."""
        played, heard = np.array(self.reference_loudness), np.array(self.mic_loudness)
        window = WINDOW
        recent = played[-window - MAX_LAG:]
        if np.mean(recent > SPEAKING) < 0.3:
            return
        lags = min(MAX_LAG, played.size - window) + 1    # as far back as heard so far
        # row k: the reference's loudness k frames before each of the last `window` microphone frames
        shifted = np.lib.stride_tricks.sliding_window_view(played, window)[::-1][:lags]
        recent_heard = heard[-window:]
        met = ~np.isnan(recent_heard)                 # over the frames the microphone did not drop
        if met.sum() < window // 2:
            return
        shifted, recent_heard = shifted[:, met], recent_heard[met]
        a = shifted - shifted.mean(1, keepdims=True)
        b = recent_heard - recent_heard.mean()
        spread = np.sqrt((a ** 2).sum(1) * (b ** 2).sum())
        r = np.where(spread > 0, a @ b / np.maximum(spread, 1e-12), 0.0)
        lag = int(np.argmax(r)) if r.max() > FOUND else None
        if lag is None:
            self.looks_without += 1
            if self.echo_heard and self.looks_without >= UNHEARD:
                self.echo_heard = False
                log.info("the microphone no longer hears the loudspeaker: not cancelling")
            return
        self.looks_without = 0
        # the same lag twice running (while both talk, this side's loudness can follow the other's by chance
        # at any lag, once)
        seen, self.candidate = self.candidate, lag
        if seen is None or abs(seen - lag) > 2:
            return
        if not self.echo_heard:
            self.echo_heard = True
            self._place(lag)
            return
        # an echo that now comes before its held-back reference: nothing of it can be modelled, placed
        # afresh. A lag clearly better than the one in use beyond what the filter follows by itself (a
        # room's reverberation short of its tail): placed afresh too
        if lag <= self.delay_frames:
            self._place(lag)
            return
        in_use = min(lags - 1, self.delay_frames + LEAD_MS // FRAME_MS)
        if r[lag] - r[in_use] >= BETTER and lag > self.delay_frames + (TAIL_MS - REVERBERATION_MS) // FRAME_MS:
            self._place(lag)

    def _place(self, lag: int) -> None:
        """The reference held back to arrive LEAD_MS ahead of an echo `lag` FRAMEs behind it, and the room
        learnt afresh."""
        self.delay_frames = max(0, lag - LEAD_MS // FRAME_MS)
        self.lag_frames = lag
        self.echo_at = self.room_pattern = self.move_seen = None     # found afresh about the new lag
        self.echo_loudness.clear()
        self.delays_found.append(float(lag * FRAME_MS))
        self.found_at_s.append(round(self.frames * FRAME / RATE, 2))
        self._new_state()
        self.residual = ResidualEcho(self.tail // FRAME)
        log.info("the loudspeaker's echo comes %d ms after the sound is played: reference held back %d ms",
                 lag * FRAME_MS, self.delay_frames * FRAME_MS)

    def summary(self) -> dict:
        """For STATS.json: how much it met, the delays it found, and how far the microphone came down in the
        last LATEST frames the other talked (the echo's reduction where this side was silent, less where
        both talked)."""
        before, after = (sum(e) for e in zip(*self.latest)) if self.latest else (0.0, 0.0)
        reduced = 10 * np.log10(before / after) if before > 0 and after > 0 else None
        return {"played_s": round(self.played_s, 2), "frames": self.frames, "while_the_other_talks": self.cancelled,
                "reduced_db_latest": None if reduced is None else round(float(reduced), 1),
                "reference_dropped_ms": round(self.reference_dropped * 1000 / RATE, 1),
                "echo_heard": self.echo_heard,
                "breaks": self.breaks, "breaks_played_on": self.breaks_not_dry,
                "device_holds_ms": round(self.held * 1000 / RATE, 1), "breaks_judged": list(self.judged),
                "echo_delays_found_ms": self.delays_found, "found_at_s": self.found_at_s,
                "echo_moves_unseen": list(self.moves),
                "microphone_clock_moves": list(self.clock_moves)}

    def __del__(self):
        state, self.state = getattr(self, "state", None), None
        if state:
            self.lib.AecDestroy(state)


class EchoCancelledTrack(MediaStreamTrack):
    """A microphone track whose frames pass through an EchoCanceller, in a thread of its own (0.4 ms a
    20 ms frame on a 2-core Xeon, three times that on a slower machine: kept off the call's event loop)."""

    kind = "audio"

    def __init__(self, track: MediaStreamTrack, canceller: EchoCanceller):
        super().__init__()
        self.track, self.canceller = track, canceller
        self.failure: str | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="echo")
        track.on("ended", self.stop)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.track.recv()
        arrived = time.monotonic()
        if self.failure is None:
            try:
                return await asyncio.get_running_loop().run_in_executor(self.worker, self.canceller.cancel, frame,
                                                                        arrived)
            except Exception as exc:  # noqa: BLE001 - the voice goes on, uncancelled, rather than stop
                self.failure = f"{type(exc).__name__}: {exc}"
                log.warning("echo cancellation failed (%s): the voice goes on without it", self.failure)
        return frame

    @property
    def dropped(self) -> int:
        """The microphone's frames dropped before they got here (sender.capture.LiveMicrophone)."""
        return getattr(self.track, "dropped", 0)

    def stop(self) -> None:
        super().stop()
        self.track.stop()
        self.worker.shutdown(wait=False)
