"""A two-way call over one peer connection: each side sends its face (sender.stream.FaceStream: still,
features, references, voice) and rebuilds the other's (receiver.frame_clock.FrameClock), on the same two
data channels and one sendrecv audio track.

Both parties run the same command. The first in the room takes the signalling role "sender" and offers
when the other arrives; the second takes "receiver" and answers (the server admits one of each, so this
holds even when both start at once). After that the two sides are alike: the identity channel carries
each side's stills, references, receipts and hang-up, parsed in one place (`_on_identity`); the features
channel each side's packets.

A call ends when this side's source ends, on q/Esc, --duration or a signal, when the other side hangs up
(in-band or a signed bye), or when the media path fails or stays silent for --rejoin-wait seconds. The side
that hangs up waits for the other's answer, which follows its last packets, so none is lost at the end.
Losing the signalling server does not end it: the client reconnects in the background."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiortc import RTCSessionDescription

from callsynth.call_key import CallKey
from callsynth.echo import EchoCanceller, EchoCancelledTrack, EchoUnavailable
from callsynth.machine import freeze_heap
from callsynth.face.basis import ExpressionBasis
from callsynth.rtc import (FEATURES_CHANNEL, IDENTITY_CHANNEL, channels_late, count_received_datagrams,
                           new_peer_connection, on_message)
from callsynth.signalling import SignallingClient, SignallingError
from callsynth.stop_signals import end_on_stop_signals
from callsynth.wire import Hangup, Receipt, encode_hangup, encode_receipt
from receiver.call import MEDIA_SILENCE_S, ReceiverOptions, consume_audio
from receiver.frame_clock import FrameClock
from receiver.stats import ReceiverStats, peak_memory_mb, summary_line, wire_summary
from sender.call import SenderOptions, call_key, wait_for_answer, wait_for_peer
from sender.stream import FaceStream

log = logging.getLogger("callsynth.call")
GOODBYE_WAIT_S = 2.0      # how long a side that hangs up waits for the other's answer (and its last packets)


@dataclass
class TwoWayOptions:
    """What goes out (the sender's options) and what comes in (the receiver's); the room, key, server and
    ICE settings are the sender's."""
    send: SenderOptions
    receive: ReceiverOptions
    stats_path: str | None = None
    # take the loudspeaker's echo out of the microphone (callsynth.echo) when this side plays the other's
    # voice; `call` turns it on for a microphone (a file's voice has no room around it)
    echo_cancel: bool = False


class TwoWayCall:
    def __init__(self, source, basis: ExpressionBasis, options: TwoWayOptions, audio_track=None):
        self.basis, self.options = basis, options
        self.key: CallKey = call_key(options.send)
        self.stats = ReceiverStats()
        self.echo = self._echo_canceller(audio_track)
        if self.echo is not None:
            audio_track = EchoCancelledTrack(audio_track, self.echo)
        self.stream = FaceStream(source, basis, options.send, audio_track)   # bad input refused here first
        if self.echo is not None:
            self.stats.event("taking the loudspeaker's echo out of the microphone")
        self.done = asyncio.Event()
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self.picture = FrameClock(basis, options.receive, self.stats, hang_up=self._end, on_key=self._key,
                                  self_view=lambda: self.stream.self_view,
                                  title=f"callsynth: {options.send.room}")
        self.picture.echo = self.echo
        self.picture.status_extra = self.stream.status
        self.picture.wire_bytes = lambda: sum(sum(c.bytes.values()) for c in self.counters)
        self.pc = None
        self.counters = []
        self.tasks: list[asyncio.Task] = []
        self.channels: dict[str, object] = {}
        self.channels_ready = asyncio.Event()
        self.role: str | None = None
        self.other_hung_up = False
        self.goodbye = asyncio.Event()     # the other side's answer to our hang-up: all its packets are in
        self.failure: str | None = None

    def _echo_canceller(self, audio_track) -> EchoCanceller | None:
        """One when this side plays the other's voice and sends a microphone's; a machine without one is
        said (headphones then)."""
        if audio_track is None or not self.options.echo_cancel or not self.options.receive.plays_voice:
            return None
        try:
            echo = EchoCanceller()
        except EchoUnavailable as exc:
            self.stats.event(f"no echo cancellation on this machine ({exc}): use headphones", logging.WARNING)
            return None
        return echo

    # --- how it ends --------------------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)
            self.stats.event(f"call ending: {reason}")
            for counter in self.counters:
                counter.close()        # the on-wire rates are the call's, not its goodbyes'

    def _other_hung_up(self, reason: str) -> None:
        self.other_hung_up = True
        self._end(f"the other side hung up ({reason[:100]})")

    def _key(self, action: str) -> bool:
        if action == "mute":
            return self.stream.toggle_mute()
        if action == "camera":
            return self.stream.toggle_camera()
        return False

    # --- the call -----------------------------------------------------------------------------------

    async def run(self) -> dict:
        o = self.options.send
        signal = SignallingClient(o.url, o.room, "sender", self.key, o.token, o.tls_ca)
        loop = asyncio.get_running_loop()
        end_on_stop_signals(loop, self._end, "stopped by a signal")
        await self.stream.warm_up()
        freeze_heap()
        try:
            peers = await signal.join_free_role(("sender", "receiver"))
            self.role = signal.role
            self.stats.event(f"in room {o.room!r} as the {'offering' if self.role == 'sender' else 'answering'}"
                             " side; waiting for the other party")
            if self.role == "sender":
                await self._offer(signal, peers)
            else:
                await self._answer(signal)
            self.tasks.append(asyncio.create_task(self.picture.run()))
            self.tasks.append(asyncio.create_task(self._listen(signal)))
            self.tasks.append(asyncio.create_task(self._watch_media()))
            if self.options.receive.duration:
                self.tasks.append(asyncio.create_task(self._end_after(self.options.receive.duration)))
            try:
                await asyncio.wait_for(self.channels_ready.wait(), o.connect_timeout)
            except asyncio.TimeoutError:
                raise channels_late(o.connect_timeout, getattr(self.pc, "sctp", None)) from None
            await self.stream.send_still(self.channels[IDENTITY_CHANNEL], self.channels[FEATURES_CHANNEL],
                                         o.connect_timeout)
            await self.stream.run(self.ended, self.pc)
            for task in self.tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    self.failure = f"{task.get_coro().__name__} stopped: {task.exception()!r}"
            if self.other_hung_up:
                self._answer_hangup()
                await self.picture.play_out_buffer()
            else:
                self._end("this side's source ended" if not self.ended.done() else self.ended.result())
                await self._say_goodbye(signal)
        finally:
            for task in self.tasks:
                task.cancel()
            sent = self.stream.close()
            if self.pc is not None:
                await self.pc.close()
            await signal.close()
        return self._finish(sent)

    async def _end_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._end(f"--duration {seconds:g} s")

    async def _offer(self, signal: SignallingClient, peers: int) -> None:
        await wait_for_peer(signal, peers)
        pc = self._new_peer()
        for label, kwargs in ((IDENTITY_CHANNEL, {"ordered": True}),
                              (FEATURES_CHANNEL, {"ordered": False, "maxRetransmits": 0})):
            self._use_channel(pc.createDataChannel(label, **kwargs))
        if self.stream.audio_track is not None:
            pc.addTrack(self.stream.audio_track)
        else:
            pc.addTransceiver("audio", direction="recvonly")   # the other side's voice all the same
        await pc.setLocalDescription(await pc.createOffer())
        await signal.send({"type": "offer", "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(await wait_for_answer(signal))
        self.counters.append(count_received_datagrams(pc))

    async def _answer(self, signal: SignallingClient) -> None:
        while True:
            message = await signal.receive()
            if message["type"] == "offer" and isinstance(message.get("sdp"), str):
                break
            if message["type"] == "unsigned":
                self.stats.event(f"refused a {message['of']} not signed with the call key", logging.WARNING)
        pc = self._new_peer()
        pc.on("datachannel", self._use_channel)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
        if self.stream.audio_track is not None:
            pc.addTrack(self.stream.audio_track)    # joins the offered audio transceiver: sendrecv
        await pc.setLocalDescription(await pc.createAnswer())
        self.counters.append(count_received_datagrams(pc))
        await signal.send({"type": "answer", "sdp": pc.localDescription.sdp})

    def _new_peer(self):
        o = self.options.send
        self.stream.configure_transport()
        pc = self.pc = new_peer_connection(o.hosts, o.ice_servers)
        self.picture.expect_audio = True

        @pc.on("track")
        def _track(track) -> None:
            if track.kind == "audio":
                self.tasks.append(asyncio.ensure_future(consume_audio(track, self.picture)))

        @pc.on("connectionstatechange")
        def _state() -> None:
            self.stats.event(f"peer connection {pc.connectionState}")
            if pc.connectionState in ("failed", "closed"):
                self._end(f"media path {pc.connectionState}")

        return pc

    def _use_channel(self, channel) -> None:
        if channel.label == IDENTITY_CHANNEL:
            on_message(channel, self._on_identity, self.picture.fault(channel.label))
        elif channel.label == FEATURES_CHANNEL:
            on_message(channel, self.picture.accept_features, self.picture.fault(channel.label))
        else:
            self.stats.event(f"ignored unknown data channel {channel.label!r}", logging.WARNING)
            return
        self.channels[channel.label] = channel
        if len(self.channels) == 2:
            self.channels_ready.set()

    def _on_identity(self, message) -> None:
        """Everything the other side says on the identity channel, parsed once."""
        parsed = self.picture.parse_control(message)
        if parsed is None:
            return
        if isinstance(parsed, Hangup):
            if self.ended.done() and not self.other_hung_up:
                self.goodbye.set()          # the answer to our hang-up (or theirs crossing ours)
            else:
                self._other_hung_up(parsed.reason)
        elif isinstance(parsed, Receipt):
            self.stream.on_receipt(parsed.index)
        elif (index := self.picture.accept_identity(parsed, len(message))) is not None:
            if index == 0 and self.counters:
                self.counters[-1].mark()     # on-wire rates from here: the still is not a rate
            channel = self.channels.get(IDENTITY_CHANNEL)
            if channel is not None and channel.readyState == "open":
                channel.send(encode_receipt(index))

    async def _listen(self, signal: SignallingClient) -> None:
        """Signalling for as long as the call lasts: a signed bye ends it; a lost server is reconnected to
        in the background while the call goes on."""
        while True:
            try:
                message = await signal.receive()
            except SignallingError as exc:
                self.stats.event(f"signalling lost ({exc}); the call goes on, reconnecting", logging.WARNING)
                await signal.reconnect()
                self.stats.event("signalling back")
                continue
            if message["type"] == "bye":
                self._other_hung_up(str(message.get("reason", "bye")))
            elif message["type"] == "unsigned":
                self.stats.event(f"refused a {message['of']} not signed with the call key", logging.WARNING)

    async def _watch_media(self) -> None:
        """Datagrams stop for --rejoin-wait seconds (MEDIA_SILENCE_S said at once): the other side is gone.
        Datagrams again before that are said too, with how long nothing came (as the one-way receiver does)."""
        silent_since, quiet_from = None, 0.0
        while True:
            await asyncio.sleep(0.5)
            last = self.counters[-1].last if self.counters else 0.0
            if not last:
                continue
            silent = time.monotonic() - last > MEDIA_SILENCE_S
            if silent and silent_since is None:
                silent_since, quiet_from = time.monotonic(), last
                self.stats.event(f"nothing received for {MEDIA_SILENCE_S:.0f} s", logging.WARNING)
            elif not silent and silent_since is not None:
                silent_since = None
                self.stats.event(f"media from the other side again (nothing came for about {last - quiet_from:.0f} s)")
            if silent_since is not None and time.monotonic() - silent_since > self.options.receive.rejoin_wait:
                self._end("the other side is gone (no media)")
                return

    def _send_hangup(self, reason: str) -> bool:
        """A hang-up on the identity channel, behind our last feature packets in the association's one
        send queue; False when the channel is not open."""
        channel = self.channels.get(IDENTITY_CHANNEL)
        if channel is None or channel.readyState != "open":
            return False
        channel.send(encode_hangup(reason))
        return True

    def _answer_hangup(self) -> None:
        """After the other side hung up and our stream has stopped: say so, so that the other side knows
        that all we sent has arrived before it closes."""
        self._send_hangup("goodbye")

    async def _say_goodbye(self, signal: SignallingClient) -> None:
        await asyncio.sleep(0.05)   # the hang-up follows the last packets into the same SCTP queue
        self.picture.hung_up()
        if self._send_hangup("hangup"):
            # keep receiving until the other side answers: the packets it sent while our hang-up travelled
            # (up to 7 of 50 under load) arrive before its answer; an older or vanished peer never answers
            try:
                await asyncio.wait_for(self.goodbye.wait(), GOODBYE_WAIT_S)
            except asyncio.TimeoutError:
                self.stats.event(f"no answer to the hang-up within {GOODBYE_WAIT_S:g} s")
            await self.picture.play_out_buffer()
        try:
            await asyncio.wait_for(signal.send({"type": "bye", "reason": "hangup"}), 1.0)
        except (SignallingError, asyncio.TimeoutError):
            pass

    def _finish(self, sent: dict) -> dict:
        self.stats.wire = wire_summary(self.counters)
        picture = self.picture.close()
        received = self.stats.summary()
        received.update(picture)
        summary = {"role": self.role, "ended": self.ended.result() if self.ended.done() else None,
                   "hangup_answered": self.goodbye.is_set() if not self.other_hung_up else None,
                   "failure": self.failure, "peak_memory_mb": peak_memory_mb(),
                   "received": received, "sent": sent}
        if self.echo is not None:
            summary["echo"] = self.echo.summary()
        if self.options.stats_path:
            self.stats.write(self.options.stats_path, summary, log)
        log.info("call over (%s): received %s", summary["ended"], summary_line(received))
        return summary


async def run_two_way(source, basis: ExpressionBasis, options: TwoWayOptions, audio_track=None) -> dict:
    return await TwoWayCall(source, basis, options, audio_track).run()
