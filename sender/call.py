"""The sending peer: join the room, offer a connection, send the still once, then one feature packet
per sent frame (and the voice as Opus) until the source ends; then say bye."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiortc import RTCSessionDescription

from callsynth.call_key import CallKey
from callsynth.call_options import CALL
from callsynth.face.basis import ExpressionBasis
from callsynth.face.still import Still, prepare_still
from callsynth.media import read_still
from callsynth.quality import QualityLadder, describe_tracking
from callsynth.rtc import (FEATURES_CHANNEL, IDENTITY_CHANNEL, new_peer_connection, set_opus_bitrate)
from callsynth.signalling import SignallingClient, SignallingError
from callsynth.wire import Hangup, Receipt, WireError, decode_control, encode_hangup, encode_identity

from .features import FeatureEncoder
from .speech import SpeechPackets, TappedAudioTrack
from .still_pick import pick_still

log = logging.getLogger("callsynth.send")
STILL_PICK_SECONDS = 1.5
RECEIPT_WAIT_S = 10.0     # a receiver that does not confirm the still by then gets the features anyway


class ReceiverReplies:
    """What the receiver says on the identity channel, parsed once: the receipt for the still (streaming
    starts on it: features sent before the still is cached are worthless, and they would share the
    association's window with the still's own chunks) and its hang-up."""

    def __init__(self, channel, basis: ExpressionBasis):
        loop = asyncio.get_running_loop()
        self.still_received, self.hung_up = loop.create_future(), loop.create_future()
        self.basis = basis
        channel.on("message", self._on_message)

    def _on_message(self, message) -> None:
        try:
            parsed = decode_control(message, self.basis)
        except WireError as exc:
            log.warning("ignored a message on the identity channel: %s", exc)
            return
        if isinstance(parsed, Receipt) and parsed.index == 0 and not self.still_received.done():
            self.still_received.set_result(True)
        elif isinstance(parsed, Hangup) and not self.hung_up.done():
            self.hung_up.set_result(f"receiver hung up ({parsed.reason[:100]})")


@dataclass
class SenderOptions:
    url: str
    room: str
    key: str | None = None          # the call key (CallKey text); None: a new one, printed for the receiver
    token: str | None = None
    tls_ca: str | None = None       # CA file that signs a wss:// server's certificate
    identity: str | None = None
    audio: str = "auto"             # auto (the video file's own), none, mic, or a file path
    send_every: int = CALL.send_every
    loss: float = 0.0               # fraction of feature packets dropped on purpose
    hosts: tuple = ("127.0.0.1",)
    ice_servers: tuple = ()            # RTCIceServer (rtc.parse_ice_server): STUN/TURN
    stats_path: str | None = None
    connect_timeout: float = 20.0
    camera_off: bool = False        # the face follows the voice only
    speech_after_no_face_s: float | None = 3.0   # no face this long: the voice drives the face
    audio_model: str | None = None


@dataclass
class SenderStats:
    frames: int = 0
    frames_no_face: int = 0
    packets_sent: int = 0
    packets_dropped_on_purpose: int = 0
    payload_bytes: int = 0
    identity_bytes: int = 0
    reference_bytes: int = 0        # reference stills (mouth open, eyes closed), all sent so far
    references_sent: int = 0
    still_frame: int | None = None
    still_delivery_ms: float | None = None   # from sending the still to the receiver's receipt
    speech_packets: int = 0
    speech_bytes: int = 0
    track_ms: list = field(default_factory=list)
    frames_untracked: int = 0       # left out by the tracking ladder (only the sent frames tracked)
    tracking: dict = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def summary(self) -> dict:
        seconds = max(1e-6, self.ended - self.started)
        track = sorted(self.track_ms) or [0.0]
        return {"frames": self.frames, "frames_no_face": self.frames_no_face,
                "packets_sent": self.packets_sent,
                "packets_dropped_on_purpose": self.packets_dropped_on_purpose,
                "payload_kbps": round(self.payload_bytes * 8 / seconds / 1000, 3),
                "speech_packets_sent": self.speech_packets, "speech_payload_bytes": self.speech_bytes,
                "identity_bytes": self.identity_bytes, "still_frame": self.still_frame,
                "still_delivery_ms": self.still_delivery_ms,
                "references_sent": self.references_sent, "reference_bytes": self.reference_bytes,
                "track_ms_p50": round(track[len(track) // 2], 2), "duration_s": round(seconds, 2),
                "frames_untracked": self.frames_untracked,
                "tracking": self.tracking}


def choose_still(source, identity: str | None, basis: ExpressionBasis, stats: SenderStats) -> Still:
    if identity:
        return prepare_still(read_still(identity), source=identity)
    if source is None:
        raise ValueError("with the camera off, give --identity STILL: there are no frames to pick one from")
    still, index = pick_still(source.first_frames(STILL_PICK_SECONDS), basis)
    stats.still_frame = index
    log.info("picked frame %d of the first %.1f s as the still", index, STILL_PICK_SECONDS)
    return still


def call_key(options: SenderOptions) -> CallKey:
    """The call's key: the one given, or a new one that the caller passes to the other party."""
    if options.key:
        return CallKey.parse(options.key)
    key = CallKey.new()
    log.warning("new call key %s: the other party joins with  callsynth receive --room %s --key %s",
                key.text, options.room, key.text)
    return key


def _note(message: dict) -> None:
    """Signalling messages that do not change what the sender does, said in the log."""
    if message["type"] == "error":
        log.warning("signalling: %s", str(message.get("message"))[:200])
    elif message["type"] == "unsigned":
        log.warning("refused a %s not signed with the call key", message["of"])


async def _wait_for_peer(signal: SignallingClient, peers: int) -> None:
    while peers == 0:
        message = await signal.receive()
        if message["type"] == "peer-joined":
            return
        _note(message)


async def _wait_for_answer(signal: SignallingClient) -> RTCSessionDescription:
    while True:
        message = await signal.receive()
        kind = message["type"]
        if kind == "answer" and isinstance(message.get("sdp"), str):
            return RTCSessionDescription(sdp=message["sdp"], type="answer")
        if kind in ("bye", "peer-left"):
            raise SignallingError("the receiver left before answering")
        _note(message)


async def _open(channel, timeout: float) -> None:
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    await asyncio.wait_for(opened.wait(), timeout)


async def run_sender(source, basis: ExpressionBasis, options: SenderOptions,
                     audio_track=None) -> dict:
    """Run one call from `source` (VideoFileSource or CameraSource; None with the camera off).
    Returns the sender's summary."""
    stats = SenderStats()
    if options.camera_off and audio_track is None:
        raise ValueError("--camera-off needs a voice: --audio mic or --audio FILE")
    still = choose_still(source, options.identity, basis, stats)
    fps = source.fps if source is not None else 30.0
    encoder = FeatureEncoder(basis, still, fps=fps, send_every=options.send_every) if source else None
    signal = SignallingClient(options.url, options.room, "sender", call_key(options), options.token,
                              options.tls_ca)
    pc = features_channel = identity_channel = speech = None
    tracker_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker")

    def send_packet(packet: bytes) -> str:
        """'sent', 'dropped' (on purpose, --loss) or 'closed'."""
        if options.loss and random.random() < options.loss:
            stats.packets_dropped_on_purpose += 1
            return "dropped"
        if features_channel is None or features_channel.readyState != "open":
            return "closed"
        features_channel.send(packet)
        stats.packets_sent += 1
        stats.payload_bytes += len(packet)
        return "sent"

    def send_reference(message: bytes) -> None:
        """A reference still, once, on the reliable identity channel."""
        if identity_channel is not None and identity_channel.readyState == "open":
            identity_channel.send(message)
            stats.references_sent += 1
            stats.reference_bytes += len(message)
            log.info("reference still sent (%d bytes)", len(message))

    if audio_track is not None and (options.camera_off or options.speech_after_no_face_s):
        speech = _speech_packets(basis, still, fps, options, send_packet)
        if speech is not None:
            audio_track = TappedAudioTrack(audio_track, speech.feed)
        elif options.camera_off:
            raise ValueError("--camera-off needs the audio2exp model, which could not be loaded")
    if encoder is not None:
        await asyncio.get_running_loop().run_in_executor(tracker_thread, encoder.warm_up, still)
    try:
        peers = await signal.connect()
        log.info("in room %r; waiting for the receiver", options.room)
        await _wait_for_peer(signal, peers)
        pc = new_peer_connection(options.hosts, options.ice_servers)
        identity_channel = pc.createDataChannel(IDENTITY_CHANNEL, ordered=True)
        replies = ReceiverReplies(identity_channel, basis)
        features_channel = pc.createDataChannel(FEATURES_CHANNEL, ordered=False, maxRetransmits=0)
        if audio_track is not None:
            set_opus_bitrate()
            pc.addTrack(audio_track)
        await pc.setLocalDescription(await pc.createOffer())
        await signal.send({"type": "offer", "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(await _wait_for_answer(signal))
        await _open(identity_channel, options.connect_timeout)
        identity = encode_identity(still, basis)
        sent_at = time.time()
        identity_channel.send(identity)
        stats.identity_bytes = len(identity)
        await _open(features_channel, options.connect_timeout)
        try:
            await asyncio.wait_for(asyncio.shield(replies.still_received), RECEIPT_WAIT_S)
            stats.still_delivery_ms = round((time.time() - sent_at) * 1000, 1)
            log.info("connected; still (%d bytes) cached by the receiver in %.0f ms; streaming features",
                     len(identity), stats.still_delivery_ms)
        except asyncio.TimeoutError:
            log.warning("connected; still sent (%d bytes) but not confirmed within %.0f s (an older "
                        "receiver?); streaming features", len(identity), RECEIPT_WAIT_S)

        bye = asyncio.create_task(_watch_call(signal, pc, replies))
        stats.started = time.time()
        if source is None:
            speech.active = True
            log.info("camera off: the voice drives the face")
            ended = asyncio.Event()
            audio_track.on("ended", ended.set)
            await asyncio.wait([bye, asyncio.create_task(ended.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
        else:
            await _camera_loop(source, encoder, tracker_thread, stats, options, speech, send_packet,
                               send_reference, bye)
        stats.ended = time.time()
        receiver_ended = bye.done()
        if receiver_ended:
            log.info("call over: %s", bye.result())
        bye.cancel()
        await asyncio.sleep(0.3)  # let the last packets leave before the bye
        if not receiver_ended and identity_channel.readyState == "open":
            identity_channel.send(encode_hangup("hangup"))   # in-band: works with the server away
            await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(signal.send({"type": "bye", "reason": "hangup"}), 1.0)
        except (SignallingError, asyncio.TimeoutError):
            pass
    finally:
        stats.ended = stats.ended or time.time()
        if speech is not None:
            speech.close()
            stats.speech_packets, stats.speech_bytes = speech.packets, speech.payload_bytes
        if encoder is not None:
            encoder.close()
        tracker_thread.shutdown(wait=False)
        if pc is not None:
            await pc.close()
        await signal.close()
    summary = stats.summary()
    if options.stats_path:
        Path(options.stats_path).parent.mkdir(parents=True, exist_ok=True)
        Path(options.stats_path).write_text(json.dumps(summary, indent=2))
    return summary


def _speech_packets(basis, still, fps, options, send_packet):
    from audio2exp.model import ModelError, load_model

    try:
        model = load_model(options.audio_model, basis)
    except ModelError as exc:
        log.warning("no speech-driven face: %s", exc)
        return None
    return SpeechPackets(model, basis, still, fps, options.send_every, send_packet)


async def _camera_loop(source, encoder, tracker_thread, stats, options, speech, send_packet, send_reference,
                       bye):
    loop = asyncio.get_running_loop()
    no_face_since = None
    # one slow frame (a re-detection, the OS) is no reason to step down; three in a row are
    ladder = QualityLadder(source.fps, (1, encoder.send_every), describe_tracking, patience=3)
    try:
        async for frame, capture_ms in source.frames(start=stats.started):
            if bye.done():
                break
            if ladder.every != 1 and not encoder.sends_next:
                encoder.skip()                   # tracking stepped down: only the frames that carry a packet
                stats.frames_untracked += 1
                ladder.record(False, 0.0)
                continue
            t0 = time.perf_counter()
            sent = await loop.run_in_executor(tracker_thread, encoder.process, frame, capture_ms & 0xFFFFFFFF)
            stats.track_ms.append((time.perf_counter() - t0) * 1e3)
            step = ladder.record(True, sum(sent.timings_ms.values()))   # the tracker's own time
            if step is not None:
                log.warning("%s (%s)", step["now"], step["why"])
            stats.frames += 1
            stats.frames_no_face += not sent.found
            for message in sent.references:
                send_reference(message)
            if speech is not None and options.speech_after_no_face_s is not None:
                no_face_since = None if sent.found else (no_face_since or time.time())
                lost = no_face_since is not None and time.time() - no_face_since >= options.speech_after_no_face_s
                if lost != speech.active:
                    speech.active = lost
                    log.info("no face for %.0f s: the voice drives the face" if lost else
                             "face back: the camera drives it again", options.speech_after_no_face_s)
            if sent.packet is None or (speech is not None and speech.active):
                continue
            if send_packet(sent.packet) == "closed":
                log.warning("features channel closed; ending the call")
                break
    finally:
        stats.tracking = ladder.summary()


async def _watch_call(signal: SignallingClient, pc, replies: ReceiverReplies) -> str:
    """Returns why the call ended on the receiver's side: its hang-up (in-band on the identity channel, or
    a signed bye) or a failed media path. Losing the signalling server does not end the call: the sender
    reconnects to it in the background."""
    ended = asyncio.get_running_loop().create_future()

    def end(reason: str) -> None:
        if not ended.done():
            ended.set_result(reason)

    replies.hung_up.add_done_callback(lambda done: end(done.result()))

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState in ("failed", "closed"):
            end(f"media path {pc.connectionState}")

    async def listen() -> None:
        while True:
            try:
                message = await signal.receive()
            except SignallingError as exc:
                log.warning("signalling lost (%s); the call goes on, reconnecting in the background", exc)
                await signal.reconnect()
                log.info("signalling back")
                continue
            if message["type"] == "bye":
                end(f"receiver hung up ({str(message.get('reason'))[:100]})")
                return
            if message["type"] == "peer-left":
                log.info("the receiver's signalling dropped; the call goes on while media flows")
            _note(message)

    listening = asyncio.create_task(listen())
    try:
        return await ended
    finally:
        listening.cancel()
