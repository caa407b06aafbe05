"""The receiving peer: answer the sender's offer, cache the still, rebuild frames from feature packets
through the jitter buffer, show and/or record them with the received voice, and measure the call.

Nothing the sender (or anyone) sends can stop it: bad packets are counted and reported, a sender that
vanishes is reported and may rejoin, and the receiver ends on a hang-up, on --duration, on a signal, or
when nobody comes back within --rejoin-wait seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal as signals
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from callsynth.call_key import CallKey
from callsynth.call_options import CALL
from callsynth.face.basis import ExpressionBasis
from callsynth.quality import RENDER_LEVELS, QualityLadder
from callsynth.rtc import FEATURES_CHANNEL, IDENTITY_CHANNEL, count_received_datagrams, new_peer_connection
from callsynth.signalling import SignallingClient, SignallingError
from callsynth.wire import (FLAG_AUDIO, Codec, Hangup, Receipt, WireError, decode_control, encode_hangup,
                            encode_receipt)

from .jitter import JitterBuffer
from .recorder import CallRecorder
from .screen import ScreenProcess
from .renderer import DEFAULT_MODEL, WarpRenderer

log = logging.getLogger("callsynth.receive")
STATUS_EVERY_S = 5.0
MEDIA_SILENCE_S = 3.0     # a live call sends 15+ datagrams a second; none for this long: the path is gone


@dataclass
class ReceiverOptions:
    url: str
    room: str
    key: str | None = None             # the call key the sender printed (CallKey text); required
    token: str | None = None
    tls_ca: str | None = None          # CA file that signs a wss:// server's certificate
    output: str | None = None
    window: bool = False
    stats_path: str | None = None
    fps: float = CALL.display_fps
    delay_ms: float = CALL.playout_delay_ms
    duration: float | None = None      # stop after this many seconds of call
    rejoin_wait: float = CALL.rejoin_wait_s   # after losing the sender, wait this long for it to come back
    audio_fallback: bool = False       # drive the face from the received voice when packets stop
    fallback_after_ms: float = 500.0
    audio_model: str | None = None
    model: str = DEFAULT_MODEL         # "generator": the warp repaired by the MC-AAD generator, or "warp"
    generator: str | None = None       # generator file (default: the shipped one)
    threads: int | None = None         # torch threads for the generator (default: torch's, all cores)
    hosts: tuple = ("127.0.0.1",)
    ice_servers: tuple = ()            # RTCIceServer (rtc.parse_ice_server): STUN/TURN


@dataclass
class ReceiverStats:
    started: float = field(default_factory=time.time)
    first_frame: float | None = None
    last_frame: float | None = None
    frames: int = 0
    frame_times: list = field(default_factory=list)
    latencies_ms: list = field(default_factory=list)
    concealed_frames: int = 0
    fallback_frames: int = 0
    speech_packets: int = 0
    feature_packets: int = 0
    feature_bytes: int = 0
    rejected: dict = field(default_factory=dict)
    jitter: dict = field(default_factory=dict)
    identity_bytes: int = 0
    reference_bytes: int = 0
    references_received: int = 0
    render_errors: int = 0
    audio_frames: int = 0
    wire: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    frame_log: list = field(default_factory=list)   # (capture ms, shown ms, concealed) per frame

    def recent(self, frames: int) -> tuple[float, float]:
        """Frame rate and median glass-to-glass latency (ms, NaN before any) of the last `frames` frames."""
        times = self.frame_times[-frames:]
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return fps, float(np.median(self.latencies_ms[-frames:])) if self.latencies_ms else float("nan")

    def live_line(self) -> str:
        fps, lat = self.recent(150)
        span = (self.last_frame - self.first_frame) if self.frames > 1 else 0.0
        return (f"{fps:.1f} fps, glass-to-glass {lat:.0f} ms (median), features "
                f"{_kbps(self.feature_bytes, span):.2f} kbps payload, {self.feature_packets} packets, "
                f"{sum(self.rejected.values())} rejected, {self.concealed_frames} frames concealed")

    def write_frame_log(self, path: Path) -> None:
        lines = ["capture_ms,shown_ms,latency_ms,concealed"] + [
            f"{c},{s},{s - c},{int(k)}" for c, s, k in self.frame_log]
        path.write_text("\n".join(lines) + "\n")

    def event(self, text: str, level: int = logging.INFO) -> None:
        log.log(level, text)
        self.events.append({"t_s": round(time.time() - self.started, 3), "event": text})

    def summary(self) -> dict:
        span = (self.last_frame - self.first_frame) if self.frames > 1 else 0.0
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        times = np.array(self.frame_times)
        windows = [np.sum((times >= t) & (times < t + 1)) for t in np.arange(times[0], times[-1] - 1, 1.0)] \
            if len(times) > 30 else []
        out = {
            "frames_shown": self.frames,
            "seconds": round(span, 3),
            "fps": round((self.frames - 1) / span, 2) if span > 0 else 0.0,
            "fps_min_1s": int(min(windows)) if windows else None,
            "latency_ms": {"p50": _round(np.percentile(lat, 50)), "p95": _round(np.percentile(lat, 95)),
                           "max": _round(np.max(lat)), "frames": len(self.latencies_ms)},
            "concealed_frames": self.concealed_frames,
            "audio_fallback_frames": self.fallback_frames,
            "speech_driven_packets": self.speech_packets,
            "features": {"packets": self.feature_packets, "bytes": self.feature_bytes,
                         "payload_kbps": _kbps(self.feature_bytes, span),
                         "bytes_per_packet": round(self.feature_bytes / max(1, self.feature_packets), 2)},
            "rejected_packets": self.rejected,
            "jitter_buffer": self.jitter,
            "identity_bytes": self.identity_bytes,
            "references_received": self.references_received,
            "reference_bytes": self.reference_bytes,
            "render_errors": self.render_errors,
            "still_cached": self.identity_bytes > 0,
            "audio_frames": self.audio_frames,
            "on_wire": self.wire,
            "events": self.events,
        }
        return out


def summary_line(summary: dict) -> str:
    """The receiver's closing line, read from the same summary STATS.json holds (it once disagreed)."""
    latency = summary["latency_ms"]
    return (f"{summary['fps']} fps over {summary['seconds']} s (lowest 1 s window {summary['fps_min_1s']}), "
            f"glass-to-glass p50 {latency['p50']} ms, p95 {latency['p95']} ms, features "
            f"{summary['features']['payload_kbps']} kbps payload, {summary['on_wire'].get('total_kbps')} kbps "
            f"on the wire in all, {summary['features']['packets']} packets, "
            f"{sum(summary['rejected_packets'].values())} rejected, {summary['concealed_frames']} of "
            f"{summary['frames_shown']} frames concealed, {summary['quality']['now']}")


def peak_memory_mb() -> float | None:
    """This process's peak resident memory (what a hostile still would have blown up)."""
    try:
        import resource
    except ImportError:   # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # KiB on Linux


def _round(x) -> float | None:
    return None if np.isnan(x) else round(float(x), 1)


def _kbps(nbytes: int, seconds: float) -> float:
    return round(nbytes * 8 / seconds / 1000, 3) if seconds > 0 else 0.0


class Receiver:
    def __init__(self, basis: ExpressionBasis, options: ReceiverOptions):
        self.basis, self.options = basis, options
        if not options.key:
            raise ValueError("give the call key the caller's `callsynth send` printed: --key KEY "
                             "(or set CALLSYNTH_CALL_KEY); without it nobody can join the call")
        self.key = CallKey.parse(options.key)
        self.codec = Codec(basis)
        self.stats = ReceiverStats()
        self.renderer: WarpRenderer | None = None
        self.jitter: JitterBuffer | None = None
        self.recorder: CallRecorder | None = None
        self.pc = None
        self.counters = []
        self.expect_audio = False
        self.audio_tasks: list[asyncio.Task] = []
        self.done = asyncio.Event()
        self.last_status = time.time()
        self.speech = None                    # SpeechDriver when --audio-fallback
        self.speech_state = None
        self.audio_resampler = None
        self.last_packet_s: float | None = None
        self.in_fallback = False
        self.final_ms: float | None = None      # after a hang-up: the last capture time to show
        self.finished_playout = False
        self.lost_at: float | None = None       # when the sender (media and signalling) was last lost
        self.hung_up = False                    # the sender said goodbye (in-band or signed bye)
        self.identity_channel = None
        self.face_check: asyncio.Task | None = None
        self.failure: str | None = None         # why the call ended by an error (None: it did not)
        self.window = options.window and self._display_available()
        self.screen = ScreenProcess(f"callsynth: {options.room}") if self.window else None
        self.status_at, self.status_bytes, self.status_text = 0.0, 0, ""
        self.quality = QualityLadder(options.fps, RENDER_LEVELS if options.model == "generator" else (0,))
        self.generator = self.generator_run = None
        if options.model == "generator":
            # Loaded before the call: a bad file stops us here, clearly, and the still's arrival costs
            # only its identity vector. Eager, not traced: the trace is faster (`callsynth bench` compares
            # the two) but `callsynth demo` on a 2-core EPYC showed the receiver's peak at 510-520 MB with
            # it and 445 MB without, and the quality ladder runs the generator only as often as the machine
            # affords.
            from callsynth.model.repairer import FullFrame

            from .generator_renderer import load_generator

            if options.threads:
                import torch

                torch.set_num_threads(options.threads)
            self.generator = load_generator(options.generator, basis)
            self.generator_run = FullFrame(self.generator[0]).eval()

    def _display_available(self) -> bool:
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            return True
        self.stats.event("no display here: --window ignored", logging.WARNING)
        return False

    # --- signalling ---------------------------------------------------------------------------------

    async def run(self) -> dict:
        signal = SignallingClient(self.options.url, self.options.room, "receiver", self.key,
                                  self.options.token, self.options.tls_ca)
        await signal.connect()
        self.stats.event(f"waiting in room {self.options.room!r}")
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGINT, signals.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.done.set)
            except (NotImplementedError, RuntimeError):
                pass
        render = asyncio.create_task(self._render_loop())
        listen = asyncio.create_task(self._listen(signal))
        waits = [asyncio.create_task(self.done.wait()), listen, render]
        if self.options.duration:
            waits.append(asyncio.create_task(asyncio.sleep(self.options.duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        self._check_died(render, "rendering")
        self._check_died(listen, "signalling")
        for task in [render, listen, *waits, *self.audio_tasks]:
            task.cancel()
        await self._say_goodbye(signal)
        await self._close_peer()
        await signal.close()
        return self._finish()

    async def _listen(self, signal: SignallingClient) -> None:
        """Signalling, for as long as the call lasts. Losing it does not end a call whose media flows: the
        receiver reconnects in the background (for a rejoining sender's new offer) and goes on."""
        while True:
            if self.lost_at is not None and time.time() - self.lost_at > self.options.rejoin_wait:
                self.stats.event(f"nobody rejoined within {self.options.rejoin_wait:.0f} s; ending")
                return
            self._watch_media()
            try:
                message = await asyncio.wait_for(signal.receive(), 1.0)
            except asyncio.TimeoutError:
                continue
            except SignallingError as exc:
                if not await self._reconnect(signal, exc):
                    return
                continue
            kind = message["type"]
            if kind == "offer" and isinstance(message.get("sdp"), str):
                self.lost_at = None
                await self._answer(signal, message["sdp"])
            elif kind == "candidate" and self.pc is not None:
                await self._add_candidate(message)
            elif kind == "bye":
                await self._sender_hung_up(str(message.get("reason", "bye"))[:100])
                return
            elif kind == "peer-left":
                if self._media_alive():
                    self.stats.event("the sender's signalling dropped; media still flows, the call goes on")
                else:
                    self._sender_lost("its connection dropped")
            elif kind == "unsigned":
                self.stats.event(f"refused a {message['of']} not signed with the call key (someone without "
                                 "the key, or a server in between changing it)", logging.WARNING)
            elif kind == "peer-joined":
                self.stats.event(f"{message.get('role', 'peer')} joined the room")
            elif kind == "error":
                self.stats.event(f"signalling error: {str(message.get('message'))[:200]}", logging.WARNING)
            else:
                self.stats.event(f"ignored signalling message {kind[:40]!r}", logging.WARNING)

    def _check_died(self, task: asyncio.Task, what: str) -> None:
        """A task of the call that ended by an error ends the call loudly (STATS.json 'failure', a non-zero
        exit from `callsynth receive`), never in silence with frames no longer shown."""
        if task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.failure = f"{what} stopped: {type(exc).__name__}: {exc}"
            self.stats.event(f"the call ends: {self.failure}", logging.ERROR)

    def _media_alive(self) -> bool:
        """Connected, and datagrams arrived lately (ICE takes tens of seconds to notice a dead peer)."""
        return (self.pc is not None and self.pc.connectionState == "connected" and bool(self.counters)
                and time.monotonic() - self.counters[-1].last < MEDIA_SILENCE_S)

    def _watch_media(self) -> None:
        """Once a call has streamed, silence on the media path means the sender is gone (whatever the
        signalling says), and datagrams again mean it is back."""
        if self.pc is None or not self.counters or self.counters[-1].last == 0.0:
            return
        if self.lost_at is None and not self._media_alive():
            self._sender_lost(f"nothing received for {MEDIA_SILENCE_S:.0f} s")
        elif self.lost_at is not None and self._media_alive():
            self.stats.event("media from the sender again")
            self.lost_at = None

    def _sender_lost(self, why: str) -> None:
        self.stats.event(f"sender lost: {why}; holding the picture and waiting "
                         f"{self.options.rejoin_wait:.0f} s for it to rejoin", logging.WARNING)
        self.lost_at = time.time()

    async def _reconnect(self, signal: SignallingClient, exc: Exception) -> bool:
        """Back to the signalling server; False when there is neither signalling nor a call for
        --rejoin-wait seconds."""
        self.stats.event(f"signalling lost ({exc}); " + ("the call goes on; " if self._media_alive() else "")
                         + "reconnecting in the background", logging.WARNING)
        since = time.time()
        while not self.done.is_set():
            try:
                await signal.reconnect(give_up_after_s=5.0)
                self.stats.event("signalling back")
                return True
            except SignallingError:
                if self._media_alive():
                    since = time.time()
                elif time.time() - max(since, self.lost_at or 0.0) > self.options.rejoin_wait:
                    self.stats.event(f"no signalling and no call for {self.options.rejoin_wait:.0f} s; ending")
                    return False
        return False

    async def _sender_hung_up(self, reason: str) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        self.stats.event(f"the sender hung up ({reason})")
        await self._play_out_buffer()
        self.done.set()

    async def _say_goodbye(self, signal: SignallingClient) -> None:
        """Ending on our side (--duration, a signal): tell the sender in-band and by signalling, so it
        stops at once instead of after the media path times out."""
        if self.hung_up:
            return
        if self.identity_channel is not None and self.identity_channel.readyState == "open":
            self.identity_channel.send(encode_hangup("receiver ended the call"))
        try:
            await asyncio.wait_for(signal.send({"type": "bye", "reason": "hangup"}), 1.0)
        except (SignallingError, asyncio.TimeoutError):
            pass

    async def _play_out_buffer(self) -> None:
        """Show what is still buffered, up to the last packet, and no further."""
        if self.jitter is None or self.jitter.newest_ms is None:
            return
        self.final_ms = self.jitter.newest_ms
        deadline = time.time() + 2.0
        while not self.finished_playout and time.time() < deadline:
            await asyncio.sleep(0.01)

    async def _add_candidate(self, message: dict) -> None:
        try:
            candidate = candidate_from_sdp(str(message["candidate"]).removeprefix("candidate:"))
            candidate.sdpMid = message.get("sdpMid")
            candidate.sdpMLineIndex = message.get("sdpMLineIndex")
            await self.pc.addIceCandidate(candidate)
        except Exception as exc:  # a malformed candidate must not end the call
            self.stats.event(f"ignored a bad ICE candidate: {exc}", logging.WARNING)

    async def _answer(self, signal: SignallingClient, sdp: str) -> None:
        await self._close_peer()
        pc = self.pc = new_peer_connection(self.options.hosts, self.options.ice_servers)
        pc.on("datachannel", self._on_channel)
        pc.on("track", self._on_track)

        @pc.on("connectionstatechange")
        async def _state():
            self.stats.event(f"peer connection {pc.connectionState}",
                             logging.WARNING if pc.connectionState == "failed" else logging.INFO)
            if pc.connectionState in ("failed", "closed") and pc is self.pc and not self.hung_up:
                self._sender_lost(f"media path {pc.connectionState}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError and others on a bad SDP
            self.stats.event(f"rejected an offer that cannot be used: {exc}", logging.WARNING)
            await self._close_peer()
            return
        self.expect_audio = any(t.kind == "audio" for t in pc.getTransceivers())
        self.counters.append(count_received_datagrams(pc))
        await signal.send({"type": "answer", "sdp": pc.localDescription.sdp})

    async def _close_peer(self) -> None:
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await pc.close()

    # --- channels and tracks ------------------------------------------------------------------------

    def _on_channel(self, channel) -> None:
        if channel.label == IDENTITY_CHANNEL:
            self.identity_channel = channel
            channel.on("message", self._on_identity)
        elif channel.label == FEATURES_CHANNEL:
            channel.on("message", self._on_features)
        else:
            self.stats.event(f"ignored unknown data channel {channel.label!r}", logging.WARNING)

    def _on_identity(self, message) -> None:
        try:
            parsed = decode_control(message, self.basis)
        except WireError as exc:
            self._reject(exc, "identity")
            return
        if isinstance(parsed, Hangup):
            asyncio.ensure_future(self._sender_hung_up(parsed.reason[:100]))
            return
        if isinstance(parsed, Receipt):
            self._reject(WireError("a receipt from the sender, which never asks for one"), "identity")
            return
        if parsed.is_reference:
            self._on_reference(parsed, len(message))
            return
        still = parsed.still
        try:
            renderer = self._make_renderer(still)
        except Exception as exc:  # noqa: BLE001 - a still that cannot be rebuilt must not cost the last good one
            self._reject(WireError(f"still cannot be rebuilt ({type(exc).__name__}: {exc}); keeping the "
                                   "last good one"), "identity")
            return
        if self.renderer is not None:
            self._check_same_face(self.renderer.still, still)
        self.stats.identity_bytes = len(message)
        if self.counters:
            self.counters[-1].mark()  # on-wire rates are measured from here: the still is not a rate
        self.renderer = renderer
        self.jitter = JitterBuffer(self.renderer.rest_pose, self.renderer.coder.expression_size,
                                   delay_ms=self.options.delay_ms)
        self.stats.event(f"still cached ({len(message)} bytes)")
        if self.identity_channel is not None and self.identity_channel.readyState == "open":
            self.identity_channel.send(encode_receipt(0))    # the sender starts streaming on this
        if self.options.audio_fallback:
            self._start_speech_driver()
        if self.options.output:
            import cv2

            out = Path(self.options.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out.with_name(out.stem + "_still.png")), still.image[:, :, ::-1])
            if self.recorder is None:
                self.recorder = CallRecorder(out, time.time(), with_audio=self.expect_audio,
                                             fps=self.options.fps)

    def _check_same_face(self, before, after) -> None:
        """A new still in the same call: say aloud whether it is still the same person (dlib's distance,
        computed off the event loop)."""
        from callsynth.model.identity import SAME_FACE, face_distance

        async def check():
            try:
                distance = await asyncio.get_running_loop().run_in_executor(
                    None, face_distance, before.image, before.landmarks, after.image, after.landmarks)
            except Exception as exc:  # noqa: BLE001 - the check is a warning, never a failure
                self.stats.event(f"could not compare the new still's face: {exc}", logging.WARNING)
                return
            if distance > SAME_FACE:
                self.stats.event(f"the caller's face changed: the new still shows a different person "
                                 f"(face distance {distance:.2f} > {SAME_FACE})", logging.WARNING)
            else:
                self.stats.event(f"a new still from the caller, the same face (distance {distance:.2f})")

        self.face_check = asyncio.ensure_future(check())

    def _on_reference(self, parsed, size: int) -> None:
        """A reference still: cached by the renderer from the next frame on (it is warped like the still,
        so building it costs one triangulation)."""
        if self.renderer is None:
            self._reject(WireError("reference still before the still"), "early")
            return
        self.renderer.add_reference(parsed.index, parsed.still)
        self.stats.references_received += 1
        self.stats.reference_bytes += size
        self.stats.event(f"reference still {parsed.index} cached ({size} bytes)")

    def _make_renderer(self, still) -> WarpRenderer:
        """The warp, or the warp repaired by the generator loaded at start (only the still's
        identity vector is computed here, before the first frame)."""
        if self.generator is None:
            return WarpRenderer(self.basis, still)
        from .generator_renderer import GeneratorRenderer

        return GeneratorRenderer(self.basis, still, loaded=self.generator, run=self.generator_run)

    def _start_speech_driver(self) -> None:
        from audio2exp.driver import SpeechDriver
        from audio2exp.model import ModelError, load_model

        try:
            model = load_model(self.options.audio_model, self.basis)
        except ModelError as exc:
            self.stats.event(f"no audio fallback: {exc}", logging.WARNING)
            return
        self.speech = SpeechDriver(model, self.renderer.rest_pose, self.options.fps)

    def _on_features(self, message) -> None:
        arrival = int(time.time() * 1000)
        size = len(message) if isinstance(message, (bytes, bytearray, str)) else 0
        self.stats.feature_packets += 1
        self.stats.feature_bytes += size
        if self.jitter is None:
            self._reject(WireError("packet before the still"), "early")
            return
        try:
            features = self.codec.decode(message)
        except WireError as exc:
            self._reject(exc, type(exc).__name__)
            return
        self.stats.speech_packets += bool(features.flags & FLAG_AUDIO)    # arrived, whether in time or late
        if self.jitter.push(features, arrival) == "accepted":
            self.last_packet_s = arrival / 1000

    def _reject(self, exc: Exception, kind: str) -> None:
        count = self.stats.rejected.get(kind, 0) + 1
        self.stats.rejected[kind] = count
        if count <= 3 or count in (10, 100, 1000):
            self.stats.event(f"rejected {kind} packet #{count}: {exc}", logging.WARNING)

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self.audio_tasks.append(asyncio.ensure_future(self._consume_audio(track)))

    async def _consume_audio(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                self.stats.audio_frames += 1
                if self.speech is not None:
                    self._drive_from_speech(frame)
                if self.recorder is not None:
                    self.recorder.add_audio(frame, time.time())
        except MediaStreamError:
            pass

    def _drive_from_speech(self, frame) -> None:
        import av

        if self.audio_resampler is None:
            self.audio_resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = [f.to_ndarray().ravel() for f in self.audio_resampler.resample(frame)]
        if chunks:
            states = self.speech.push(np.concatenate(chunks))
            if states:
                self.speech_state = states[-1][1:]

    # --- play-out -----------------------------------------------------------------------------------

    async def _render_loop(self) -> None:
        period = 1.0 / self.options.fps
        next_tick = time.time()
        while True:
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - time.time()))
            if time.time() - next_tick > 2 * period:
                next_tick = time.time()  # fell behind: skip, never burst
            if self.jitter is None or (self.jitter.newest_ms is None and self.speech_state is None):
                continue
            try:
                await self._show_frame()
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the call's picture
                # A frame that cannot be rebuilt is said and skipped; the loop (and the call) go on, so the
                # next packet's frame is shown. Before, the task died silently and nothing was shown again.
                self.stats.render_errors += 1
                if self.stats.render_errors <= 3 or self.stats.render_errors in (10, 100, 1000):
                    self.stats.event(f"frame not rebuilt ({type(exc).__name__}: {exc}); "
                                     f"{self.stats.render_errors} so far", logging.WARNING)

    async def _render(self, state) -> np.ndarray:
        """A frame at the quality the ladder chooses. The generator runs in a worker thread (torch lets go
        of the GIL), so that packets keep being received while it works; the warp, a few ms, runs inline."""
        repair = self.generator is not None and self.quality.costly_next()
        started = time.perf_counter()
        if repair:
            frame = await asyncio.get_running_loop().run_in_executor(None, self.renderer.render, state, True)
        else:
            frame = self.renderer.render(state, False)
        level = self.quality.level
        step = self.quality.record(repair, (time.perf_counter() - started) * 1000)
        if step is not None:
            self.stats.event(f"quality: {step['now']} ({step['why']})",
                             logging.WARNING if self.quality.level > level else logging.INFO)
        return frame

    async def _show_frame(self) -> None:
        now = time.time()
        if self._use_fallback(now):
            self._count_shown(self._present(await self._render(self.speech_state), now))
            self.stats.fallback_frames += 1
            self.finished_playout = self.final_ms is not None
            return
        if self.jitter.newest_ms is None:
            return
        playout = self.jitter.playout_ms(now * 1000)
        if self.final_ms is not None and playout > self.final_ms:
            self.finished_playout = True
            return
        state, concealed = self.jitter.state_at(playout)
        if state is None:
            return
        shown = self._present(await self._render(state), now)
        stats = self._count_shown(shown)
        stats.concealed_frames += concealed
        stats.latencies_ms.append(shown * 1000 - playout)   # glass to glass: shown − captured
        stats.frame_log.append((round(playout), round(shown * 1000), concealed))
        if shown - self.last_status >= STATUS_EVERY_S:
            self.last_status = shown
            log.info("%s", stats.live_line())

    def _count_shown(self, shown: float) -> ReceiverStats:
        stats = self.stats
        stats.frames += 1
        stats.first_frame = stats.first_frame or shown
        stats.last_frame = shown
        stats.frame_times.append(shown)
        return stats

    def _use_fallback(self, now: float) -> bool:
        """Packets have stopped (or never came) while the voice goes on: let the voice drive the face."""
        stopped = self.last_packet_s is None or (now - self.last_packet_s) * 1000 > self.options.fallback_after_ms
        use = self.speech is not None and self.speech_state is not None and stopped
        if use != self.in_fallback:
            self.in_fallback = use
            self.stats.event("feature packets stopped: the received voice drives the face" if use else
                             "feature packets are back")
        return use

    def _present(self, frame: np.ndarray, now: float) -> float:
        """Record and/or show a frame; returns the time it was shown."""
        if self.recorder is not None:
            self.recorder.add_video(frame, now)
        if self.window:
            action = self.screen.show(frame, None, self._status_line(now))
            if action == "quit":
                self.stats.event("hung up from the keyboard")
                self.done.set()
            elif action == "closed":
                self.stats.event("the window has closed; the call goes on without it", logging.WARNING)
                self.window = False
            elif action is not None:
                self.stats.event(f"'{action}' acts on the sending side; this one-way receiver sends nothing")
        return time.time()

    def _status_line(self, now: float) -> str:
        """What the screen says under the picture, refreshed twice a second: frame rate and glass-to-glass
        latency of the last frames, kbps on the wire, the share of frames concealed, the renderer."""
        if now - self.status_at < 0.5 and self.status_text:
            return self.status_text
        stats, total = self.stats, sum(sum(c.bytes.values()) for c in self.counters)
        kbps = (total - self.status_bytes) * 8 / 1000 / max(1e-3, now - self.status_at) if self.status_at else 0.0
        fps, latency = stats.recent(30)
        concealed = np.mean([k for _, _, k in stats.frame_log[-150:]]) if stats.frame_log else 0.0
        self.status_at, self.status_bytes = now, total
        latency = "-" if np.isnan(latency) else f"{latency:.0f} ms"
        self.status_text = (f"{fps:.0f} fps | {latency} | {kbps:.1f} kbps on the wire | "
                            f"{concealed:.0%} concealed | {self.quality.now} | q: hang up")
        return self.status_text

    def _finish(self) -> dict:
        if self.recorder is not None:
            self.recorder.close()
        if self.jitter is not None:
            self.stats.jitter = dict(self.jitter.counts, delay_ms=self.jitter.delay_ms,
                                     offset_ms=round(self.jitter.offset_ms, 1))
        wire, seconds = {"data": 0, "audio": 0, "other": 0}, 0.0
        packets = dict(wire)
        for counter in self.counters:
            for kind, (nbytes, npackets) in counter.since_mark().items():
                wire[kind] += nbytes
                packets[kind] += npackets
            seconds += counter.seconds_since_mark()
        self.stats.wire = {
            "note": "sender to receiver from the moment the still arrived; every datagram counted with "
                    "its 28 bytes of UDP/IPv4 headers; 'features' is DTLS/SCTP, 'audio' is SRTP/SRTCP",
            "seconds": round(seconds, 2),
            "features_kbps": _kbps(wire["data"], seconds),
            "audio_kbps": _kbps(wire["audio"], seconds),
            "total_kbps": _kbps(sum(wire.values()), seconds),
            "bytes": wire, "datagrams": packets,
        }
        summary = self.stats.summary()
        summary["renderer"] = self.options.model
        summary["quality"] = self.quality.summary()
        summary["peak_memory_mb"] = peak_memory_mb()
        summary["failure"] = self.failure
        if self.options.stats_path:
            path = Path(self.options.stats_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2))
            self.stats.write_frame_log(path.with_suffix(".frames.csv"))
        log.info("call over: %s", summary_line(summary))
        if self.screen is not None:
            self.screen.close()
        return summary


async def run_receiver(basis: ExpressionBasis, options: ReceiverOptions) -> dict:
    return await Receiver(basis, options).run()
