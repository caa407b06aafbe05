"""The receiving peer of a one-way call: answer the sender's offer, hand what its channels and tracks
deliver to the frame clock (receiver.frame_clock: jitter buffer, renderer, sinks), and measure the call.

Nothing the sender (or anyone) sends can stop it: bad packets are counted and reported, a sender that
vanishes is reported and may rejoin, and the receiver ends on a hang-up, on --duration, on a signal, or
when nobody comes back within --rejoin-wait seconds."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

from callsynth.call_key import CallKey
from callsynth.machine import freeze_heap
from callsynth.call_options import CALL
from callsynth.face.basis import ExpressionBasis
from callsynth.rtc import (FEATURES_CHANNEL, IDENTITY_CHANNEL, count_received_datagrams, new_peer_connection,
                           on_message)
from callsynth.signalling import SignallingClient, SignallingError
from callsynth.stop_signals import end_on_stop_signals
from callsynth.wire import Hangup, Receipt, WireError, encode_hangup, encode_receipt

from .frame_clock import FrameClock
from .renderer import DEFAULT_MODEL
from .stats import ReceiverStats, peak_memory_mb, summary_line, wire_summary

log = logging.getLogger("callsynth.receive")
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
    play_voice: bool | None = None     # the other side's voice out of the loudspeaker (None: with a window)
    stats_path: str | None = None
    fps: float = CALL.display_fps
    delay_ms: float | None = CALL.playout_delay_ms   # None: adaptive (receiver.jitter)
    duration: float | None = None      # stop after this many seconds of call
    rejoin_wait: float = CALL.rejoin_wait_s   # after losing the sender, wait this long for it to come back
    audio_fallback: bool = False       # drive the face from the received voice when packets stop
    fallback_after_ms: float = 500.0
    audio_model: str | None = None
    model: str = DEFAULT_MODEL         # "generator": the warp repaired by the MC-AAD generator, or "warp"
    generator: str | None = None       # generator file (default: the shipped one)
    threads: int | None = None         # torch threads: the frames' network (default all cores), the still repairer (1)
    repair_every: int = CALL.repair_still_every   # the generator repairs the still at most every Nth frame
    hosts: tuple = (CALL.host,)
    ice_servers: tuple = ()            # RTCIceServer (rtc.parse_ice_server): STUN/TURN

    @property
    def plays_voice(self) -> bool:
        """Whether the other side's voice comes out of the loudspeaker: --play-voice, else with a window."""
        return self.window if self.play_voice is None else self.play_voice


class Receiver:
    def __init__(self, basis: ExpressionBasis, options: ReceiverOptions):
        self.basis, self.options = basis, options
        if not options.key:
            raise ValueError("give the call key the caller's `callsynth send` printed: --key KEY "
                             "(or set CALLSYNTH_CALL_KEY); without it nobody can join the call")
        self.key = CallKey.parse(options.key)
        self.stats = ReceiverStats()
        self.done = asyncio.Event()
        self.picture = FrameClock(basis, options, self.stats, hang_up=lambda _: self.done.set(),
                                  title=f"callsynth: {options.room}")
        self.picture.wire_bytes = lambda: sum(sum(c.bytes.values()) for c in self.counters)
        self.pc = None
        self.counters = []
        self.audio_tasks: list[asyncio.Task] = []
        self.lost_at: float | None = None       # when the sender (media and signalling) was last lost
        self.hung_up = False                    # the sender said goodbye (in-band or signed bye)
        self.identity_channel = None
        self.failure: str | None = None         # why the call ended by an error (None: it did not)

    # --- signalling ---------------------------------------------------------------------------------

    async def run(self) -> dict:
        freeze_heap()
        signal = SignallingClient(self.options.url, self.options.room, "receiver", self.key,
                                  self.options.token, self.options.tls_ca)
        await signal.connect()
        self.stats.event(f"waiting in room {self.options.room!r}")
        loop = asyncio.get_running_loop()
        end_on_stop_signals(loop, self.done.set)
        render = asyncio.create_task(self.picture.run())
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
        self._close_wire_window()
        self.stats.event(f"the sender hung up ({reason})")
        await self.picture.play_out_buffer()
        self.done.set()

    def _close_wire_window(self) -> None:
        """The call is ending: the on-wire rates stop here (the goodbyes and closing are not the call's)."""
        for counter in self.counters:
            counter.close()

    async def _say_goodbye(self, signal: SignallingClient) -> None:
        """Ending on our side (--duration, a signal): tell the sender in-band and by signalling, so it
        stops at once instead of after the media path times out."""
        if self.hung_up:
            return
        self._close_wire_window()
        if self.identity_channel is not None and self.identity_channel.readyState == "open":
            self.identity_channel.send(encode_hangup("receiver ended the call"))
        try:
            await asyncio.wait_for(signal.send({"type": "bye", "reason": "hangup"}), 1.0)
        except (SignallingError, asyncio.TimeoutError):
            pass

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
        self.picture.expect_audio = any(t.kind == "audio" for t in pc.getTransceivers())
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
            on_message(channel, self._on_identity, self.picture.fault(channel.label))
        elif channel.label == FEATURES_CHANNEL:
            on_message(channel, self.picture.accept_features, self.picture.fault(channel.label))
        else:
            self.stats.event(f"ignored unknown data channel {channel.label!r}", logging.WARNING)

    def _on_identity(self, message) -> None:
        parsed = self.picture.parse_control(message)
        if parsed is None:
            return
        if isinstance(parsed, Hangup):
            asyncio.ensure_future(self._sender_hung_up(parsed.reason[:100]))
        elif isinstance(parsed, Receipt):
            self.picture.reject(WireError("a receipt from the sender, which never asks for one"), "identity")
        elif (index := self.picture.accept_identity(parsed, len(message))) is not None:
            if index == 0 and self.counters:
                self.counters[-1].mark()  # on-wire rates are measured from here: the still is not a rate
            if self.identity_channel is not None and self.identity_channel.readyState == "open":
                # the sender streams on the still's; names a reference's mouth once it has that one's
                self.identity_channel.send(encode_receipt(index))

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self.audio_tasks.append(asyncio.ensure_future(consume_audio(track, self.picture)))

    def _finish(self) -> dict:
        self.stats.wire = wire_summary(self.counters)
        picture = self.picture.close()
        summary = self.stats.summary()
        summary.update(picture)
        summary["peak_memory_mb"] = peak_memory_mb()
        summary["failure"] = self.failure
        if self.options.stats_path:
            self.stats.write(self.options.stats_path, summary, log)
        log.info("call over: %s", summary_line(summary))
        return summary


async def consume_audio(track, picture: FrameClock) -> None:
    """The received voice, frame by frame, to the frame clock (recording, speech fallback). A frame whose
    handling fails here is said and counted (FrameClock.fault), not the end of the voice: the task died
    silently, and the recording and the speech fallback lost the voice for the rest of the call."""
    failed = picture.fault("voice")
    try:
        while True:
            frame = await track.recv()
            try:
                picture.accept_audio(frame)
            except Exception as exc:  # noqa: BLE001 - one frame must not end the voice
                failed(exc)
    except MediaStreamError:
        pass


async def run_receiver(basis: ExpressionBasis, options: ReceiverOptions) -> dict:
    return await Receiver(basis, options).run()
