"""The sending peer: join the room, offer a connection, send the still once, then one feature packet
per sent frame (and the voice as Opus) until the source ends; then say bye."""

from __future__ import annotations

import asyncio
import logging
from contextlib import ExitStack
from dataclasses import dataclass

from aiortc import RTCSessionDescription

from callsynth.call_key import CallKey
from callsynth.machine import freeze_heap
from callsynth.call_options import CALL
from callsynth.face.basis import ExpressionBasis
from callsynth.outputs import write_stats
from callsynth.rtc import (FEATURES_CHANNEL, IDENTITY_CHANNEL, count_received_datagrams, new_peer_connection,
                           on_message)
from callsynth.signalling import SignallingClient, SignallingError
from callsynth.stop_signals import stop_signals_end
from callsynth.wire import Hangup, Receipt, WireError, decode_control, encode_hangup

from .stream import FaceStream

log = logging.getLogger("callsynth.send")


class ReceiverReplies:
    """What the receiver says on the identity channel, parsed once: the receipt for the still (to the face
    stream, which starts streaming on it) and its hang-up."""

    def __init__(self, channel, basis: ExpressionBasis, stream: FaceStream):
        self.hung_up = asyncio.get_running_loop().create_future()
        self.basis, self.stream = basis, stream
        on_message(channel, self._on_message,
                   lambda exc: log.warning("a message on the identity channel failed here: %s: %s",
                                           type(exc).__name__, exc))

    def _on_message(self, message) -> None:
        try:
            parsed = decode_control(message, self.basis)
        except WireError as exc:
            log.warning("ignored a message on the identity channel: %s", exc)
            return
        if isinstance(parsed, Receipt):
            self.stream.on_receipt(parsed.index)
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
    budget_kbps: float | None = None   # fit the call to this many kbps on the wire (callsynth.budget)
    loss: float = CALL.loss         # fraction of feature packets dropped on purpose
    loss_seed: int | None = None    # the same seed drops the same packets (reproducible loss tests)
    hosts: tuple = (CALL.host,)
    ice_servers: tuple = ()            # RTCIceServer (rtc.parse_ice_server): STUN/TURN
    stats_path: str | None = None
    connect_timeout: float = 20.0
    camera_off: bool = False        # the face follows the voice only
    speech_after_no_face_s: float | None = CALL.speech_after_no_face_s   # no face this long: the voice drives it
    audio_model: str | None = None


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


async def wait_for_peer(signal: SignallingClient, peers: int) -> None:
    while peers == 0:
        message = await signal.receive()
        if message["type"] == "peer-joined":
            return
        _note(message)


async def wait_for_answer(signal: SignallingClient) -> RTCSessionDescription:
    while True:
        message = await signal.receive()
        kind = message["type"]
        if kind == "answer" and isinstance(message.get("sdp"), str):
            return RTCSessionDescription(sdp=message["sdp"], type="answer")
        if kind in ("bye", "peer-left"):
            raise SignallingError("the receiver left before answering")
        _note(message)


async def run_sender(source, basis: ExpressionBasis, options: SenderOptions,
                     audio_track=None) -> dict:
    """Run one call from `source` (VideoFileSource or CameraSource; None with the camera off).
    Returns the sender's summary. Once the call is up, Ctrl-C or SIGTERM hangs up as a clip's end does:
    the receiver is told at once (it held the last face for its --rejoin-wait, 30 s, waiting for a sender
    that had gone) and the statistics are written (they were lost); before, they stop the command."""
    stream = FaceStream(source, basis, options, audio_track)
    signal = SignallingClient(options.url, options.room, "sender", call_key(options), options.token,
                              options.tls_ca)
    pc = returned = None
    loop = asyncio.get_running_loop()
    call_ended = loop.create_future()
    stream.configure_transport()
    await stream.warm_up()
    freeze_heap()
    with ExitStack() as stop_signals:
        try:
            peers = await signal.connect()
            log.info("in room %r; waiting for the receiver", options.room)
            await wait_for_peer(signal, peers)
            pc = new_peer_connection(options.hosts, options.ice_servers)
            identity_channel = pc.createDataChannel(IDENTITY_CHANNEL, ordered=True)
            replies = ReceiverReplies(identity_channel, basis, stream)
            features_channel = pc.createDataChannel(FEATURES_CHANNEL, ordered=False, maxRetransmits=0)
            if stream.audio_track is not None:
                pc.addTrack(stream.audio_track)
            await pc.setLocalDescription(await pc.createOffer())
            await signal.send({"type": "offer", "sdp": pc.localDescription.sdp})
            await pc.setRemoteDescription(await wait_for_answer(signal))
            returned = count_received_datagrams(pc)
            await stream.send_still(identity_channel, features_channel, options.connect_timeout)
            returned.mark()

            # from here to the statistics written, a stop signal hangs up (a second one changes nothing)
            stop_signals.enter_context(stop_signals_end(loop, _settle, call_ended))
            bye = asyncio.create_task(_watch_call(signal, pc, replies))
            bye.add_done_callback(lambda _: _settle(call_ended, False))
            await stream.run(call_ended, pc)
            returned.close()
            receiver_ended = bye.done() and not bye.cancelled()
            if receiver_ended:
                log.info("call over: %s", bye.result())
            elif call_ended.done() and call_ended.result():
                log.info("hanging up (a stop signal: Ctrl-C or SIGTERM)")
            bye.cancel()
            # the in-band hang-up follows the last packets into the same SCTP queue, so it cannot pass them;
            # waiting longer only showed the other side frames past the last packet (extrapolated)
            await asyncio.sleep(0.05)
            if not receiver_ended and identity_channel.readyState == "open":
                identity_channel.send(encode_hangup("hangup"))   # in-band: works with the server away
                await asyncio.sleep(0.1)
            try:
                await asyncio.wait_for(signal.send({"type": "bye", "reason": "hangup"}), 1.0)
            except (SignallingError, asyncio.TimeoutError):
                pass
        finally:
            summary = stream.close()
            if returned is not None:
                # what came back on the wire while streaming: the receiver's SCTP acknowledgements and
                # receipts ('data'), its RTCP reports ('audio')
                summary["returned_kbps"] = returned.kbps()
            if pc is not None:
                await pc.close()
            await signal.close()
        summary["stopped_by_signal"] = bool(call_ended.done() and call_ended.result())
        if options.stats_path:
            write_stats(options.stats_path, summary, log)
    return summary


def _settle(future: asyncio.Future, by_signal: bool = True) -> None:
    """`call_ended` done, with whether a stop signal here ended it (True) or the receiver's side did (its
    hang-up, or the path failed); the first to come says."""
    if not future.done():
        future.set_result(by_signal)


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
