"""This side's face going out over a call's channels: the still once (streaming starts on the other side's
receipt), then one feature packet per sent frame from the camera — or from the voice when the camera is
off or sees no face — reference stills as they happen, and the voice itself.

It opens nothing: the one-way sender and the two-way call give it the channels of their peer connection
and tell it what the other side said (`on_receipt`), so neither copies the other."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from callsynth.budget import AUTO, AUTO_TIERS, BudgetChooser, BudgetError, plan
from callsynth.face.basis import ExpressionBasis
from callsynth.face.still import Still, still_of
from callsynth.quality import QualityLadder, describe_tracking
from callsynth.rtc import (LinkWatch, channels_late, delay_sacks, retune_voice, set_opus_bitrate, space_rtcp,
                           unacknowledged_bytes)
from callsynth.wire import CAPTURE_MASK, encode_identity, split_message

from .features import FeatureEncoder
from .speech import SpeechPackets, TappedAudioTrack
from .still_pick import pick_still

log = logging.getLogger("callsynth.send")
MAX_QUEUED_S = 0.2       # feature packets queued longer than this at the sender are stale on arrival
STILL_PICK_SECONDS = 1.5
RECEIPT_WAIT_S = 10.0     # a receiver that does not confirm the still by then gets the features once it has it
RECEIPT_POLL_S = 0.25     # how often SCTP's acknowledgement of the still is looked at meanwhile
SHARPEN_AFTER_S = 5.0     # --budget auto: a sharper copy of the still once the link has been quiet this long


@dataclass
class SenderStats:
    frames: int = 0
    frames_no_face: int = 0
    packets_sent: int = 0
    packets_dropped_on_purpose: int = 0
    packets_dropped_queued: int = 0     # not sent: the link had not carried those before them (stale by then)
    payload_bytes: int = 0
    identity_bytes: int = 0
    reference_bytes: int = 0        # reference stills (mouth open, eyes closed), all sent so far
    references_sent: int = 0
    references_held: int = 0        # receipts for them: the receiver has them (their mouths may be named)
    still_frame: int | None = None
    still_delivery_ms: float | None = None   # from sending the still to the receiver's receipt
    still_sharpened: list = field(default_factory=list)  # --budget auto: sharper copies sent (at_s, bytes)
    speech_packets: int = 0
    speech_bytes: int = 0
    # per sent frame, from the frame's tracking starting to its packet sent (tracking, encoding and any
    # wait between them): a latency, not the tracker's own time (`tracking`'s ms: the stages' own time)
    frame_to_packet_ms: list = field(default_factory=list)
    frames_untracked: int = 0       # left out by the tracking ladder (only the sent frames tracked)
    frames_dropped_late: int = 0    # dropped by the source, their time long past (the call fell behind)
    voice_frames_dropped_late: int = 0   # the microphone's, the same way (sender.capture.LiveMicrophone)
    tracking: dict = field(default_factory=dict)
    wire_plan: dict = field(default_factory=dict)
    plan_changes: list = field(default_factory=list)    # --budget auto: each change of plan, and why
    toggles: list = field(default_factory=list)         # keys pressed: voice muted / on, camera off / on
    started: float = 0.0
    ended: float = 0.0

    def summary(self) -> dict:
        seconds = max(1e-6, self.ended - self.started)
        latency = sorted(self.frame_to_packet_ms) or [0.0]
        return {"frames": self.frames, "frames_no_face": self.frames_no_face,
                "packets_sent": self.packets_sent,
                "packets_dropped_on_purpose": self.packets_dropped_on_purpose,
                "packets_dropped_queued": self.packets_dropped_queued,
                "payload_kbps": round(self.payload_bytes * 8 / seconds / 1000, 3),
                "speech_packets_sent": self.speech_packets, "speech_payload_bytes": self.speech_bytes,
                "identity_bytes": self.identity_bytes, "still_frame": self.still_frame,
                "still_delivery_ms": self.still_delivery_ms, "still_sharpened": self.still_sharpened,
                "references_sent": self.references_sent, "references_held": self.references_held,
                "reference_bytes": self.reference_bytes,
                "frame_to_packet_ms_p50": round(latency[len(latency) // 2], 2), "duration_s": round(seconds, 2),
                "frames_untracked": self.frames_untracked, "frames_dropped_late": self.frames_dropped_late,
                "voice_frames_dropped_late": self.voice_frames_dropped_late,
                "tracking": self.tracking, "wire_plan": self.wire_plan,
                "plan_changes": self.plan_changes,
                "toggles": self.toggles}


class QueuedPart(NamedTuple):
    """A part of an identity message waiting to go (FaceStream._pace_parts): part `number` of `count`."""

    part: bytes
    number: int
    count: int
    whole: bytes
    kind: str          # "reference", or "still": a sharper copy of it


async def still_through(receipt: asyncio.Future, identity_channel, timeout: float) -> bool:
    """Wait for the other side's receipt of the still (True). Past RECEIPT_WAIT_S, a still that SCTP still
    holds unacknowledged is on its way (a lossy link retransmitting it, or the other side's receipt queued
    behind its own still on the ordered channel): features sent before it lands are refused there ('early':
    2 in a CI run of the 15 %-lossy two-way call) and take the room of its retransmissions, so they wait on,
    `timeout` seconds at most. A still acknowledged but never confirmed is an older peer's: stream (False)."""
    try:
        await asyncio.wait_for(asyncio.shield(receipt), RECEIPT_WAIT_S)
        return True
    except asyncio.TimeoutError:
        pass
    deadline = time.monotonic() + timeout
    if pending := unacknowledged_bytes(identity_channel):
        log.warning("the still is not through after %g s (a lossy link retransmitting it): the features "
                    "wait for it, %g s more at most", RECEIPT_WAIT_S, timeout)
    while pending and identity_channel.readyState == "open" and not receipt.done() \
            and time.monotonic() < deadline:
        await asyncio.wait({receipt}, timeout=RECEIPT_POLL_S)
        pending = unacknowledged_bytes(identity_channel)
    if receipt.done():
        return True
    if pending:
        log.warning("the still is not through after %g s: streaming features all the same (the other "
                    "side refuses them until it has the still)", RECEIPT_WAIT_S + timeout)
    else:
        log.warning("the still arrived but the other side has not confirmed it (its receipt behind its own "
                    "still on a slow link, or an older peer): streaming features")
    return False


def choose_still(source, identity: str | None, basis: ExpressionBasis, stats: SenderStats) -> Still:
    if identity:
        return still_of(identity)
    if source is None:
        raise ValueError("with the camera off, give --identity STILL: there are no frames to pick one from")
    still, index = pick_still(source.first_frames(STILL_PICK_SECONDS), basis)
    stats.still_frame = index
    log.info("picked frame %d of the first %.1f s as the still", index, STILL_PICK_SECONDS)
    return still


async def open_channel(channel, timeout: float) -> None:
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    try:
        await asyncio.wait_for(opened.wait(), timeout)
    except asyncio.TimeoutError:
        raise channels_late(timeout, channel.transport) from None


class MutableAudioTrack(TappedAudioTrack):
    """The voice as sent: silence while muted (the track goes on, so the other side's clock does not stop),
    in frames of `frame_ms` (the Opus frame length; the source's 20 ms frames are put together)."""

    def __init__(self, track, listener, frame_ms: int = 20):
        super().__init__(track, listener)
        self.muted = False
        self.frame_ms = frame_ms
        self.fifo = None
        self.rate = 48000
        self.next_pts = 0

    async def _next(self):
        """The source's next frame, its time run on from the one before: a microphone's dropped frames
        (sender.capture.LiveMicrophone) leave no gap in the voice as sent, which the far side would
        otherwise fill with as much silence and fall that far behind. From 0 (the fifo takes no other
        start: a microphone whose sound from before the call was dropped starts later)."""
        frame = await super().recv()
        frame.pts = self.next_pts
        self.next_pts += frame.samples
        return frame

    def retune(self, frame_ms: int) -> None:
        """Frames of `frame_ms` from now (what a new Opus encoder takes)."""
        self.frame_ms = frame_ms

    async def recv(self):
        if self.fifo is None:              # from the first frame on, so its time runs on across a retune
            import av

            self.fifo = av.AudioFifo()
            first = await self._next()
            self.rate = first.sample_rate
            self.fifo.write(first)
        samples = self.rate * self.frame_ms // 1000
        while self.fifo.samples < samples:
            self.fifo.write(await self._next())
        frame = self.fifo.read(samples)
        if self.muted:
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
        return frame


class FaceStream:
    """`source`: VideoFileSource or CameraSource (None with the camera off); `options`: SenderOptions."""

    def __init__(self, source, basis: ExpressionBasis, options, audio_track=None):
        self.source, self.basis, self.options = source, basis, options
        self.loss_draw = random.Random(options.loss_seed)   # --loss: which packets drop
        self.stats = SenderStats()
        if options.camera_off and audio_track is None:
            raise ValueError("--camera-off needs a voice: --audio mic or --audio FILE")
        self.fps = source.fps if source is not None else 30.0
        self.auto = BudgetChooser() if options.budget_kbps == AUTO else None
        # --budget auto does not know the link while the still goes: the lowest tier's plan until streaming
        # begins (run), the still at the size that tier carries beside its voice. With the voice at the
        # chooser's first tier (14.9 kbps on the wire) through a 16 kbit/s policer, which the voice shares
        # with the data channels, the still came 42 s after the call connected (README "Within a budget").
        self.plan = plan(AUTO_TIERS[-1] if self.auto else options.budget_kbps, self.fps,
                         options.send_every)   # a budget too small: said first
        self.still = choose_still(source, options.identity, basis, self.stats)
        self.stats.wire_plan = self.plan.summary()
        self.encoder = (FeatureEncoder(basis, self.still, fps=self.fps, send_every=self.plan.send_every,
                                       codes_per_packet=self.plan.codes_per_packet,
                                       defer_references=True, await_receipts=True)
                        if source is not None else None)
        self.tracker_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker")
        self.encoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        # reference stills are made here, off the tracking path: not time-critical, and costly
        self.reference_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="references")
        self.features_channel = self.identity_channel = None
        self.speech: SpeechPackets | None = None
        self.audio_track = None
        self.self_view: np.ndarray | None = None     # the newest crop of this side's camera
        self.camera_on = source is not None          # the camera key turns it off: the voice drives
        if audio_track is not None:
            if options.camera_off or options.speech_after_no_face_s:
                self.speech = self._speech_packets()
                if self.speech is None and options.camera_off:
                    raise ValueError("--camera-off needs the audio2exp model, which could not be loaded")
                # with no camera the voice drives from its first frame: the model keeps pace with it from
                # the start instead of catching up on seconds of primer when streaming begins (on a busy
                # machine that took the whole of a short call)
                if self.speech is not None:       # (without the model: the camera alone, as said)
                    self.speech.active = options.camera_off
            listener = self.speech.feed if self.speech is not None else (lambda frame: None)
            # a file's sound waits for its pictures (FileAudioTrack.hold, begin: run); with the camera off
            # it drives from its first frame
            if source is not None and hasattr(audio_track, "hold"):
                audio_track.hold()
            self.audio_track = MutableAudioTrack(audio_track, listener, self.plan.opus_frame_ms)
        self.still_received = asyncio.get_running_loop().create_future()
        self.sharp_still: bytes | None = None      # --budget auto: the full still, until sent
        self.still_carried_kbps: float | None = None   # the link's kbps while the still went (send_still)
        self.identity_parts: deque[QueuedPart] = deque()   # waiting for their turn
        self.message_id = 0                        # the id of the latest message sent in parts

    def _speech_packets(self) -> SpeechPackets | None:
        from audio2exp.model import ModelError, load_model

        try:
            model = load_model(self.options.audio_model, self.basis)
        except ModelError as exc:
            log.warning("no speech-driven face: %s", exc)
            return None
        return SpeechPackets(model, self.basis, self.still, self.fps, self.plan.send_every, self.send_packet)

    def configure_transport(self) -> None:
        """aiortc as the wire plan has it (Opus rate and frame length, delayed SACKs); before the peer
        connection is made, and again when the plan changes (process-wide: one call per process)."""
        set_opus_bitrate(self.plan.opus_bps, frame_ms=self.plan.opus_frame_ms,
                         constant=self.plan.budget_kbps is not None)
        delay_sacks(self.plan.delayed_sack)
        space_rtcp(self.plan.rtcp_spacing)

    async def follow_link(self, pc, every_s: float = 1.0) -> None:
        """`--budget auto`: look at the link every second and move to the tier it allows (BudgetChooser)."""
        watch = LinkWatch(pc)
        started = time.monotonic()
        while True:
            await asyncio.sleep(every_s)
            now = time.monotonic() - started
            budget = self.auto.observe(await watch.report(now, self.queued_s()))
            if budget is not False:
                self.apply_plan(budget, pc, self.auto.history[-1]["why"])
            self._sharpen_still(now)

    def _sharpen_still(self, now: float) -> None:
        """`--budget auto`: once the other side holds the small still and the link has been quiet
        SHARPEN_AFTER_S at a tier whose plan carries the still at full quality twice over (48 kbps and up),
        that one, once, on the identity channel (the receiver swaps the picture and goes on: the same
        landmarks, receiver.frame_clock), in parts (_pace_parts). Sent in one burst at 32 through a 24 kbit/s
        policer, and at 24 as a 10 KB copy, it stepped the call down to 16; in one burst during a probe to
        48 that then failed, it held the feature packets in SCTP's queue behind it (every frame concealed
        for 3.9-15 s, README "Within a budget")."""
        if self.sharp_still is None or not self.still_received.done() \
                or self.plan.still_bytes < 2 * len(self.sharp_still) or self.auto.quiet_for(now) < SHARPEN_AFTER_S:
            return
        self._queue_parts(self.sharp_still, "still", first=True)
        log.info("a sharper copy of the still queued (%d bytes)", len(self.sharp_still))
        self.sharp_still = None

    def _first_tier(self, pc) -> None:
        """`--budget auto`, as streaming begins: the chooser's first tier, or the lower one the still's
        delivery showed (BudgetChooser.start_below), said in plan_changes even where the still's tier is it."""
        why = self.auto.start_below(self.still_carried_kbps)
        if self.plan.budget_kbps != self.auto.budget_kbps:
            self.apply_plan(self.auto.budget_kbps, pc, why or "streaming begins: the chooser's first tier")
        elif why:
            self._plan_changed(self.auto.budget_kbps, why)

    def _plan_changed(self, budget_kbps: float | None, why: str) -> None:
        self.stats.plan_changes.append({"at_s": self._since_start(), "budget_kbps": budget_kbps, "why": why})
        log.warning("link: %s; now %s", why, f"within {budget_kbps:g} kbps" if budget_kbps else "no budget")

    def apply_plan(self, budget_kbps: float | None, pc=None, why: str = "") -> None:
        """Mid-call, the wire plan for another budget: packet rate and codes per packet, the voice's rate
        and frame length (a new Opus encoder, rtc.retune_voice), acknowledgements, RTCP, references."""
        try:
            new = plan(budget_kbps, self.fps, self.options.send_every)
        except BudgetError as exc:
            log.warning("link: %s; the plan stays", exc)
            return
        self.plan = new
        self.stats.wire_plan = new.summary()
        self._plan_changed(budget_kbps, why)
        if self.encoder is not None:
            packet = self.encoder.retune(new.send_every, new.codes_per_packet)
            if packet is not None:
                self.send_packet(packet)
        if self.speech is not None:
            self.speech.send_every = new.send_every
        self.configure_transport()
        if self.audio_track is not None:
            self.audio_track.retune(new.opus_frame_ms)
            for sender in (pc.getSenders() if pc is not None else ()):
                if sender.track is self.audio_track:
                    retune_voice(sender)

    async def warm_up(self) -> None:
        """The tracker's one-off start-up cost, paid on the still before the call starts."""
        if self.encoder is not None:
            await asyncio.get_running_loop().run_in_executor(self.tracker_thread, self.encoder.warm_up, self.still)

    # --- what goes out ------------------------------------------------------------------------------

    def send_packet(self, packet: bytes) -> str:
        """'sent', 'dropped' (on purpose, --loss) or 'closed'."""
        if self.options.loss and self.loss_draw.random() < self.options.loss:
            self.stats.packets_dropped_on_purpose += 1
            return "dropped"
        if self.features_channel is None or self.features_channel.readyState != "open":
            return "closed"
        if self.queued_s() > MAX_QUEUED_S:
            # SCTP holds what its congestion window does not let out: behind that, a pose would arrive
            # stale and push every later one further back. Dropped here, it is concealed there.
            self.stats.packets_dropped_queued += 1
            return "dropped"
        self.features_channel.send(packet)
        self.stats.packets_sent += 1
        self.stats.payload_bytes += len(packet)
        return "sent"

    def queued_s(self) -> float:
        """Seconds of feature packets waiting in this side's SCTP queue (data channel bufferedAmount, at
        the plan's packet rate): near 0 while the link carries what is sent."""
        if self.features_channel is None:
            return 0.0
        return self.features_channel.bufferedAmount / self.plan.payload_bytes_per_s(self.fps)

    def send_reference(self, message: bytes) -> None:
        """A reference still, once, on the reliable identity channel: queued in parts that _pace_parts
        sends one at a time, as often as the wire plan allows (40 ms without a budget)."""
        self._queue_parts(message, "reference")

    def _queue_parts(self, message: bytes, kind: str, first: bool = False) -> None:
        """`message` (a reference still, or the still sharper: `kind`) in parts, after those waiting, or
        `first`: after the rest of the message under way only (the receiver holds one message's parts)."""
        self.message_id = (self.message_id + 1) & 0xFF
        queue, at = self.identity_parts, 0 if first else len(self.identity_parts)
        while first and at < len(queue) and queue[at].number > 0:
            at += 1
        parts = split_message(message, self.message_id)
        for k, part in enumerate(parts):
            queue.insert(at + k, QueuedPart(part, k, len(parts), message, kind))

    async def _pace_parts(self) -> None:
        """The parts of identity messages after the still, one every plan.reference_gap_s (a sharper still's
        every plan.still_part_gap_s); within a budget each only once the one before is acknowledged
        (rtc.unacknowledged_bytes): at most one part is on the link, so that one the link keeps losing
        holds back itself and nothing else."""
        if self.plan.reference_gap_s is None:
            log.info("no reference stills while the budget has no room for them")
        while True:
            still = bool(self.identity_parts) and self.identity_parts[0].kind == "still"
            gap = self.plan.still_part_gap_s() if still else self.plan.reference_gap_s
            await asyncio.sleep(gap or 1.0)
            if not self.identity_parts or gap is None:
                continue
            channel = self.identity_channel
            if channel is None or channel.readyState != "open":
                return
            if self.plan.budget_kbps is not None and unacknowledged_bytes(channel):
                continue
            queued = self.identity_parts.popleft()
            channel.send(queued.part)
            if queued.number < queued.count - 1:
                continue
            whole = queued.whole               # its last part: the message is on its way
            if queued.kind == "still":
                self.stats.identity_bytes = len(whole)
                self.stats.still_sharpened.append({"at_s": self._since_start(), "bytes": len(whole)})
                log.info("a sharper copy of the still sent (%d bytes in %d parts)", len(whole), queued.count)
            else:
                self.stats.references_sent += 1
                self.stats.reference_bytes += len(whole)
                log.info("reference still sent (%d bytes in %d parts)", len(whole), queued.count)

    def _reference_made(self, done: asyncio.Future) -> None:
        if done.cancelled():
            return
        if done.exception() is not None:
            log.warning("a reference still could not be made: %s", done.exception())
        elif done.result() is not None:
            self.send_reference(done.result())

    def on_receipt(self, index: int) -> None:
        """The other side has cached still `index` (0: the still, streaming starts on it; 1..: a reference
        still, whose mouth the packets may name from now)."""
        if index == 0 and not self.still_received.done():
            self.still_received.set_result(True)
        elif index > 0:
            self.stats.references_held += 1
            if self.encoder is not None:
                self.encoder.reference_arrived(index)

    async def send_still(self, identity_channel, features_channel, timeout: float) -> None:
        """Once the channels open: the still, then wait for the receipt (still_through)."""
        self.identity_channel, self.features_channel = identity_channel, features_channel
        await open_channel(identity_channel, timeout)
        # --budget auto: the still as the lowest tier carries it (__init__), and the full one once the
        # link shows room (_sharpen_still)
        identity = encode_identity(self.still, self.basis, fit_bytes=self.plan.still_bytes)
        sent_at = time.time()
        identity_channel.send(identity)
        self.stats.identity_bytes = len(identity)
        if self.auto is not None and len(full := encode_identity(self.still, self.basis)) > len(identity):
            self.sharp_still = full                    # (made after the small one is on its way)
        await open_channel(features_channel, timeout)
        through = await still_through(self.still_received, identity_channel, timeout)
        took_ms = (time.time() - sent_at) * 1000
        if through:
            self.stats.still_delivery_ms = round(took_ms, 1)
            log.info("connected; still (%d bytes) cached by the other side in %.0f ms; streaming features",
                     len(identity), took_ms)
        # what the link carried meanwhile (start_below): to the receipt, or to SCTP's acknowledgement where
        # the receipt is late (in a two-way call it waits behind the other side's own still, on its ordered
        # channel: through a 16 kbit/s policer one side had no figure and started at 32)
        if through or not unacknowledged_bytes(identity_channel):
            voice = self.plan.estimate_kbps["voice"] if self.audio_track is not None else 0.0
            self.still_carried_kbps = voice + len(identity) * 8 / max(took_ms, 1.0)

    # --- keys ---------------------------------------------------------------------------------------

    def toggle_mute(self) -> bool:
        """Mute or unmute the voice; False when there is no voice to mute."""
        if self.audio_track is None:
            return False
        self.audio_track.muted = not self.audio_track.muted
        self._toggled("voice muted" if self.audio_track.muted else "voice on")
        return True

    def toggle_camera(self) -> bool:
        """Camera off (the voice drives the face, as with --camera-off) or on again; False without both."""
        if self.source is None or self.speech is None:
            return False
        self.camera_on = not self.camera_on
        self.speech.active = not self.camera_on
        self._toggled("camera on: it drives the face" if self.camera_on else "camera off: the voice drives the face")
        return True

    def _toggled(self, what: str) -> None:
        log.info(what)
        self.stats.toggles.append({"at_s": self._since_start(), "what": what})

    def _since_start(self) -> float:
        """Seconds since streaming began (0 before), for the events STATS.json lists."""
        return round(time.time() - (self.stats.started or time.time()), 2)

    def status(self) -> str:
        """This side's part of the screen's status line."""
        voice = "no voice" if self.audio_track is None else "muted" if self.audio_track.muted else "voice on"
        face = "camera on" if self.camera_on else "camera off"
        return f"{face}, {voice}"

    # --- the stream ---------------------------------------------------------------------------------

    async def run(self, ended: asyncio.Future, pc=None) -> None:
        """Stream until the source ends or `ended` is done (the other side hung up, the path failed);
        with `--budget auto`, following what the link of peer connection `pc` shows."""
        self.stats.started = time.time()
        if self.audio_track is not None and hasattr(self.audio_track.track, "begin"):
            self.audio_track.track.begin(self.stats.started)     # a held file's sound with its pictures
        if self.auto is not None:        # from the still's tier (__init__) to what its delivery showed
            self._first_tier(pc)
        pacing = asyncio.ensure_future(self._pace_parts())
        following = asyncio.ensure_future(self.follow_link(pc)) if self.auto and pc is not None else None
        try:
            if self.source is None:          # the voice drives from its first frame (__init__)
                log.info("camera off: the voice drives the face")
                track_ended = asyncio.Event()
                self.audio_track.on("ended", track_ended.set)
                await asyncio.wait([ended, asyncio.ensure_future(track_ended.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                await self._camera_loop(ended)
        finally:
            pacing.cancel()
            if following is not None:
                following.cancel()
            if self.speech is not None:
                self.speech.close()     # nothing more from the voice: the hang-up follows what was sent
            self.stats.ended = time.time()

    async def _camera_loop(self, ended: asyncio.Future) -> None:
        loop = asyncio.get_running_loop()
        encoder, stats, options, speech = self.encoder, self.stats, self.options, self.speech
        no_face_since = None
        # Where tracking every frame does not fit the frame period, only the frames that carry a packet are
        # tracked (at one packet a frame: every 2nd frame is tracked and sent). One slow frame (a
        # re-detection, a reference being made, the OS) is no reason to step down, as it doubles the packet
        # spacing: half a second of frames over budget is.
        ladder = QualityLadder(self.source.fps, (1, max(2, math.ceil(encoder.send_every))), describe_tracking,
                               patience=max(3, round(self.source.fps / 2)))

        async def finish(frame, tracked, capture_ms: int, t0: float) -> bool:
            """The second stage of one frame, then its packet sent; False when the call cannot go on."""
            nonlocal no_face_since
            sent = await loop.run_in_executor(self.encoder_thread, encoder.finish, frame, tracked,
                                              capture_ms & CAPTURE_MASK)
            stats.frame_to_packet_ms.append((time.perf_counter() - t0) * 1e3)
            # both stages' own time, though they overlap: where they do not fit one frame period together
            # the machine has no core to spare (counted by the busier stage alone, the sender tracked every
            # frame of a two-way demo on two cores and both receivers fell from 22 to 19 fps)
            step = ladder.record(True, sum(sent.timings_ms.values()))
            if step is not None:
                log.warning("%s (%s)", step["now"], step["why"])
            stats.frames += 1
            stats.frames_no_face += not sent.found
            self.self_view = sent.crop
            for pending in sent.references:
                done = loop.run_in_executor(self.reference_thread, pending.finish)
                done.add_done_callback(self._reference_made)
            if speech is not None and sent.pose is not None and not speech.active:
                speech.last_pose = (sent.pose, time.time())     # where the voice's head starts if it takes over
            if speech is not None and options.speech_after_no_face_s is not None and self.camera_on:
                no_face_since = None if sent.found else (no_face_since or time.time())
                lost = no_face_since is not None and time.time() - no_face_since >= options.speech_after_no_face_s
                if lost != speech.active:
                    speech.active = lost
                    log.info("no face for %g s: the voice drives the face" if lost else
                             "face back: the camera drives it again", options.speech_after_no_face_s)
            if sent.packet is None or (speech is not None and speech.active):
                return True
            if self.send_packet(sent.packet) == "closed":
                log.warning("features channel closed; ending the call")
                return False
            return True

        # A frame is tracked (MediaPipe, outside Python's lock) while the frame before it is finished (crop,
        # code, packet: Python) in another thread: on two cores the two overlap, and each frame leaves as
        # soon as its own two stages are done (whether every frame is tracked is decided in `finish`).
        finishing: asyncio.Future | None = None
        try:
            async for frame, capture_ms in self.source.frames(start=stats.started):
                if ended.done():
                    break
                if ladder.every != 1 and not encoder.tracks_next(ladder.every):
                    encoder.skip()                   # tracking stepped down
                    stats.frames_untracked += 1
                    ladder.record(False, 0.0)
                    continue
                t0 = time.perf_counter()
                tracked = await loop.run_in_executor(self.tracker_thread, encoder.track, frame)
                if finishing is not None and not await finishing:     # frames finish in order
                    finishing = None
                    break
                finishing = asyncio.ensure_future(finish(frame, tracked, capture_ms, t0))
            if finishing is not None:
                await finishing
        finally:
            if finishing is not None and not finishing.done():
                finishing.cancel()
            stats.tracking = ladder.summary()
            stats.frames_dropped_late = getattr(self.source, "dropped", 0)

    def close(self) -> dict:
        """Stop the workers; the sender's summary."""
        self.stats.ended = self.stats.ended or time.time()
        if self.speech is not None:
            self.speech.close()
            self.stats.speech_packets, self.stats.speech_bytes = self.speech.packets, self.speech.payload_bytes
        if self.audio_track is not None:
            self.stats.voice_frames_dropped_late = getattr(self.audio_track.track, "dropped", 0)
        # the workers finish what they hold (a frame, a reference: tens of ms) before their trackers close
        self.tracker_thread.shutdown(wait=True, cancel_futures=True)
        self.encoder_thread.shutdown(wait=True, cancel_futures=True)
        self.reference_thread.shutdown(wait=True, cancel_futures=True)
        if self.encoder is not None:
            self.encoder.close()
        return self.stats.summary()
