"""The sender's feature loop: frame → tracker → stable crop → pose + code → packet.

Two stages, so that a call can overlap them on two cores: `track` (MediaPipe, which runs outside Python's
lock) and `finish` (crop, code, packet, reference stills: Python). `process` does both in turn."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from callsynth.budget import sampled
from callsynth.call_options import CALL
from callsynth.face.basis import ExpressionBasis
from callsynth.face.code import FaceCoder
from callsynth.face.crop import StableCrop
from callsynth.face.pose import Pose, interpolate_pose
from callsynth.face.regions import eye_openness, lip_gap
from callsynth.face.still import Still
from callsynth.face.tracker import FaceTracker, TrackResult
from callsynth.wire import CAPTURE_MASK, MAX_BUNDLE, Codec, FrameFeatures, encode_identity

from .mouth_choice import MouthChoice
from .reference_pick import ReferencePicker


@dataclass
class SentFrame:
    crop: np.ndarray            # the frame as the stable crop sees it (what the receiver should show)
    packet: bytes | None        # None on frames that are not sent (packet rate below frame rate)
    found: bool
    reason: str = ""
    timings_ms: dict = field(default_factory=dict)
    references: list = field(default_factory=list)   # reference stills to send now: messages (or pending)
    pose: Pose | None = None    # the head's pose, on frames with a face that sent or looked for reference stills


@dataclass
class TrackedFrame:
    """The first stage's answer: the tracker's result, the frame's place in the count of frames (which
    decides whether its code is sent) and the stage's time."""
    result: TrackResult
    index: int
    ms: float


class BlinkTiming:
    """Which frames to send around a blink. At one packet every two frames a blink of three or four
    frames is often sampled only on its way down and up, and the receiver's interpolation never closes
    the eye. So a frame between packets whose eyes are more closed than anything sent since the eyes were
    last open is sent in its turn, and a later scheduled frame gives its slot back: the next one whose
    mouth has not moved since the last frame sent (a slot given back where the lips move left them to
    interpolation over three frames, and the mouth's peak was lost), or the MAX_DEFER + 1-th at the
    latest; the packet rate never rises for longer than that."""

    MAX_DEFER = 2                 # scheduled frames that may keep their slot while one is owed
    MOUTH_MOVED = 0.025           # lip gap (iris distances) moved since the last frame sent

    def __init__(self, still_openness: float, closed_share: float = 0.6):
        from collections import deque

        self.closed_share = closed_share
        self.recent = deque([still_openness], maxlen=150)
        self.lowest_sent = np.inf
        self.owed, self.deferred = False, 0
        self.gap_sent: float | None = None

    def decide(self, scheduled: bool, openness: float | None, gap: float | None = None) -> bool:
        """Whether to send this frame (`scheduled`: its turn; `openness`, `gap`: its eyes' openness and
        its lip gap, None without a face)."""
        median = float(np.median(self.recent))
        closed = openness is not None and openness < self.closed_share * median
        if openness is not None and not closed:
            self.recent.append(openness)
            self.lowest_sent = np.inf
        if scheduled and self.owed:
            moving = gap is not None and self.gap_sent is not None and abs(gap - self.gap_sent) > self.MOUTH_MOVED
            if not moving or self.deferred >= self.MAX_DEFER:
                self.owed, self.deferred = False, 0
                return False
            self.deferred += 1
        if not scheduled and closed and openness < self.lowest_sent - 0.05 * median:
            self.owed, self.deferred = True, 0
            send = True
        else:
            send = scheduled
        if send and closed:
            self.lowest_sent = min(self.lowest_sent, openness)
        if send and gap is not None:
            self.gap_sent = gap
        return send


class FeatureEncoder:
    """Turns each captured frame into at most one packet: one every `send_every` frames (fractional where
    the camera's frame rate does not divide the packet rate: budget.frames_per_packet), carrying
    `codes_per_packet` codes sampled evenly over those frames (a bundle, wire.py; one code: the frame the
    packet leaves on). Where codes are sampled less often than frames, a blink's closed frame may take a
    slot (BlinkTiming)."""

    def __init__(self, basis: ExpressionBasis, still: Still, fps: float = 30.0, send_every: float = CALL.send_every,
                 smoothing: bool = True, references: bool = True, defer_references: bool = False,
                 codes_per_packet: int = 1, await_receipts: bool = False):
        """`still` is the face codes are measured from: in a call, the caller's own still.
        `references`: pick reference stills (mouth open, eyes closed) as they happen; `defer_references`:
        SentFrame.references holds PendingReference objects to finish off the tracking path;
        `await_receipts`: a reference sent is named as a mouth source only once the receiver says it has
        it (reference_arrived): until then the receiver draws the picture it holds under that index, the
        one before or none, for the second or so a reference takes to cross a tight link."""
        if send_every < 1:
            raise ValueError("send_every must be at least 1")
        if not 1 <= codes_per_packet <= min(send_every, MAX_BUNDLE):
            raise ValueError(f"codes_per_packet must be 1..{min(send_every, MAX_BUNDLE)}")
        self.codec = Codec(basis)
        self.coder = FaceCoder(basis, still.landmarks)
        # One face, the caller's: MediaPipe then skips its face detector while it tracks that face. Asked
        # for up to four (to pick the largest), it ran the detector on every frame looking for the others:
        # 11.2 -> 7.8 ms a frame on a 512² HDTF clip, 11.1 -> 6.9 on a GRID clip, the same landmarks
        # (python scripts/tracking_cost.py, 2-core AMD EPYC at 2.4 GHz).
        self.tracker = FaceTracker(video=True, smoothing=smoothing, fps=fps, max_faces=1)
        self.crop = StableCrop()
        self.basis = basis
        # a live call (defer_references) makes at most one reference a second: each re-tracks in image
        # mode, and four in the first two seconds had the tracking ladder step down
        # the pictures the receiver may draw an open mouth from, mirrored, to name the one nearest the camera's
        self.mouths = MouthChoice(still) if references else None
        self.in_flight: dict[int, Still] = {}      # references sent whose receipt has not come back
        self.receipts_lock = threading.Lock()
        self.picker = (ReferencePicker(still, self._encode_reference, defer=defer_references,
                                       gap_ms=1000 if defer_references else 0,
                                       on_sent=self._in_flight if await_receipts else self.mouths.add)
                       if references else None)
        self.send_every, self.codes_per_packet = send_every, codes_per_packet
        self.bundle: list[FrameFeatures] = []      # codes waiting for the packet that carries them
        self.still_openness = float(eye_openness(still.landmarks).mean())
        self.blinks = BlinkTiming(self.still_openness) if send_every > codes_per_packet else None
        self.frame_index = 0
        # for the interior code: the last packet with a face (as the receiver decodes it) and the frames with
        # a face since it that no packet carried (capture time, crop), which the receiver draws between it
        # and the next with the nearer packet's cue
        self.last_sent: FrameFeatures | None = None
        self.unsent: list[tuple[int, np.ndarray]] = []

    def _encode_reference(self, index: int, still: Still) -> bytes:
        return encode_identity(still, self.basis, index)

    def _in_flight(self, index: int, still: Still) -> None:
        with self.receipts_lock:                  # made in the reference thread, answered on the event loop
            self.in_flight[index] = still

    def reference_arrived(self, index: int) -> None:
        """The receiver has reference `index`: from now its mouth may be named. (Should the same index be
        sent again before the first one's receipt, that receipt already counts for the second: the two
        disagree for the few frames until its own comes.)"""
        with self.receipts_lock:
            still = self.in_flight.pop(index, None)
        if still is not None and self.mouths is not None:
            self.mouths.add(index, still)

    def close(self) -> None:
        self.tracker.close()
        if self.picker is not None:
            self.picker.close()

    def warm_up(self, still: Still) -> None:
        """The trackers' one-off start-up cost, paid on the still before the call starts."""
        self.tracker.warm_up(still.image)
        if self.picker is not None:
            self.picker.warm_up(still.image)
        if self.mouths is not None:
            self.mouths.warm_up()

    def retune(self, send_every: float, codes_per_packet: int) -> bytes | None:
        """Another packet rate and bundle size from the next frame (the wire plan changed mid-call); the
        codes waiting for a packet leave now if they fill the new one (the packet to send, else None)."""
        self.send_every, self.codes_per_packet = send_every, min(codes_per_packet, int(send_every), MAX_BUNDLE)
        self.blinks = ((self.blinks or BlinkTiming(self.still_openness))
                       if self.send_every > self.codes_per_packet else None)
        if self.bundle and len(self.bundle) >= self.codes_per_packet:
            packet, self.bundle = self.codec.encode_bundle(self.bundle), []
            return packet
        return None

    def _sampled(self, frame_index: int) -> bool:
        """Whether this frame's code is taken: codes_per_packet of every send_every frames, evenly."""
        return sampled(frame_index, self.send_every / self.codes_per_packet)

    def tracks_next(self, step: int) -> bool:
        """Whether the next frame is tracked when tracking steps down to about 1 frame in `step`: the frames
        whose codes are taken, or every `step`-th where every frame's code is."""
        if self.send_every > self.codes_per_packet:
            return self._sampled(self.frame_index)
        return self.frame_index % step == 0

    def _packet_for(self, features: FrameFeatures) -> bytes | None:
        """The packet to send now, if any, once `features` joins the bundle being filled: a bundle leaves
        when full, or early when the new code cannot join it (no face, other flags: that code then waits
        for the next)."""
        if self.codes_per_packet == 1:
            return self.codec.encode(features)
        packet = None
        if self.bundle and not Codec.bundles(self.bundle[-1], features):
            packet, self.bundle = self.codec.encode_bundle(self.bundle), []
        self.bundle.append(features)
        if len(self.bundle) >= self.codes_per_packet and packet is None:
            packet, self.bundle = self.codec.encode_bundle(self.bundle), []
        return packet

    def _mouth_cue(self, crop: np.ndarray, landmarks: np.ndarray, features: FrameFeatures) -> None:
        """The mouth cue of a sent frame, in place (MouthChoice): the picture whose mouth interior is nearest
        the camera's, where the receiver draws one at the landmarks of the packet's quantised values, and
        the interior code for the receiver's drawing from it, on this frame and on the frames before it
        that the receiver draws with this packet's cue (the nearer packet's: receiver/playout.py)."""
        sent = self.codec.roundtrip(features)
        target = self.coder.landmarks(sent.pose, sent.expression)
        if self.mouths.choosing:
            features.mouth = self.mouths.choose(crop, landmarks, target)
        views = [(crop, target)]
        last = self.last_sent
        span = (sent.capture_ms - last.capture_ms) & CAPTURE_MASK if last is not None else 0
        for capture_ms, between in self.unsent if span else ():
            w = ((capture_ms - last.capture_ms) & CAPTURE_MASK) / span
            if 0.5 <= w < 1:
                pose = interpolate_pose(last.pose, sent.pose, w)
                views.append((between, self.coder.landmarks(pose, (1 - w) * last.expression + w * sent.expression)))
        features.interior = self.mouths.interior(views, features.mouth)
        self.last_sent = sent

    def skip(self) -> None:
        """A frame left untracked (the sender's tracking stepped down): it keeps its place in the count of
        frames, so packets stay one every `send_every` frames."""
        self.frame_index += 1

    def process(self, frame: np.ndarray, capture_ms: int, flags: int = 0) -> SentFrame:
        return self.finish(frame, self.track(frame), capture_ms, flags)

    def track(self, frame: np.ndarray) -> TrackedFrame:
        """The first stage: the tracker on `frame`, which takes the next place in the count of frames.
        Frames must pass through it in order, one at a time."""
        t0 = time.perf_counter()
        result = self.tracker.process(frame)
        index, self.frame_index = self.frame_index, self.frame_index + 1
        return TrackedFrame(result, index, (time.perf_counter() - t0) * 1e3)

    def finish(self, frame: np.ndarray, tracked: TrackedFrame, capture_ms: int, flags: int = 0) -> SentFrame:
        """The second stage: crop, pose and code, the packet if this frame sends one, reference stills.
        Frames must pass through it in the order they were tracked, one at a time."""
        t1 = time.perf_counter()
        result = tracked.result
        box = self.crop.update(result.landmarks, frame.shape)
        crop = box.cut(frame)
        send = self._sampled(tracked.index)
        packet, references = None, []
        landmarks = box.to_crop(result.landmarks) if result.found else None
        if self.blinks is not None:
            send = self.blinks.decide(send, *((None, None) if landmarks is None else
                                              (float(eye_openness(landmarks).mean()), lip_gap(landmarks))))
        pose = None
        if send:
            if result.found:
                pose, expression = self.coder.expression(landmarks)
                features = FrameFeatures.carrying(capture_ms, pose, expression, self.coder.basis.k, flags)
                if self.mouths is not None:
                    self._mouth_cue(crop, landmarks, features)
            else:
                features = FrameFeatures(capture_ms, flags=flags)
                self.last_sent = None
            self.unsent = []
            packet = self._packet_for(features)
        elif self.mouths is not None and result.found and self.send_every > 1:
            self.unsent = [*self.unsent[-(math.ceil(self.send_every) - 1):], (capture_ms, crop)]
        if self.picker is not None and result.found:
            pose = pose or self.coder.pose_of(landmarks)      # estimated once a frame
            turn = float(np.linalg.norm(pose.rotvec - self.coder.still_pose.rotvec))
            references = self.picker.observe(crop, landmarks, capture_ms, turn)
        t2 = time.perf_counter()
        return SentFrame(crop, packet, result.found, result.reason,
                         {"track": tracked.ms, "encode": (t2 - t1) * 1e3}, references, pose)
