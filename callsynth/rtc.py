"""aiortc set-up shared by sender and receiver: peer connections bound to chosen addresses, a speech
bitrate for Opus, and a byte counter that splits on-wire traffic into data channels and audio.

aiortc has no public knob for any of these, nor for its Opus frame length or its SCTP acknowledgements
(what a call within a budget changes), so each is a small, documented patch in this module only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import re

import aioice.ice
import aioice.stun
from aiortc import (RTCBundlePolicy, RTCConfiguration, RTCDtlsTransport, RTCIceServer, RTCPeerConnection,
                    RTCSctpTransport, rtcrtpsender, rtcsctptransport)
from aiortc.codecs import opus
from aiortc.rtcicetransport import parse_stun_turn_uri

from . import voice_jitter
from .budget import kbps
from .call_options import CALL

FEATURES_CHANNEL = "features"     # unordered, no retransmits: a late pose is worthless
IDENTITY_CHANNEL = "identity"     # reliable, ordered: the still arrives whole or not at all
UDP_IPV4_HEADERS = 28             # what the IP and UDP headers add to every datagram
SPEECH_OPUS_BPS = 16000
SCTP_RTT_WINDOW_S = 2.5           # without a voice, the round trip is the shortest SCTP measured this recently

_ice_hosts: list[str] | None = None
_aioice_host_addresses = aioice.ice.get_host_addresses


def _chosen_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ice_hosts is None:
        return _aioice_host_addresses(use_ipv4, use_ipv6)
    return [h for h in _ice_hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]


def parse_ice_host(text: str) -> str:
    """An address of this machine to offer ICE candidates on, from the command line. One it does not have
    (a typo, another machine's, an interface gone) gathered no candidate, and the call waited 20 s for its
    channels and blamed the network; ValueError, naming the machine's addresses, instead."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (give one of this machine's: {_local_addresses()})") \
            from None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        raise ValueError(f"{text} is not an address of this machine (its addresses: {_local_addresses()})") \
            from None
    return str(address)


def _local_addresses() -> str:
    return ", ".join([CALL.host] + _aioice_host_addresses(True, True))


def restrict_ice_hosts(hosts: list[str] | None) -> None:
    """Offer ICE candidates only on these addresses (aioice leaves out 127.0.0.1 on its own, which
    would make a loopback call depend on the machine having some other interface)."""
    global _ice_hosts
    _ice_hosts = list(hosts) if hosts else None
    aioice.ice.get_host_addresses = _chosen_host_addresses


def set_opus_bitrate(bps: int = SPEECH_OPUS_BPS, mono: bool = True, frame_ms: int = 20,
                     constant: bool = False) -> None:
    """aiortc's Opus encoder is fixed at 96 kbps stereo in 20 ms frames; a call's voice needs a sixth of
    that, and within a budget 60 ms frames (a third of the packets, so a third of the headers). With
    frame_ms above 20 the track must deliver frames of that length (sender.stream.MutableAudioTrack):
    aiortc sends one encoder call's packets per frame it reads. `constant`: a constant bit rate (within a
    budget: speech made Opus's variable rate run 10 % over its target)."""
    original = getattr(opus.OpusEncoder, "_callsynth_original_init", opus.OpusEncoder.__init__)
    samples = opus.SAMPLE_RATE * frame_ms // 1000

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.codec.bit_rate = bps
        self.codec.options = {"application": "voip", "frame_duration": str(frame_ms),
                              "vbr": "off" if constant else "on"}
        if mono:
            self.codec.layout = "mono"
        self.resampler = opus.AudioResampler(format="s16", layout="mono" if mono else "stereo",
                                             rate=opus.SAMPLE_RATE, frame_size=samples)

    opus.OpusEncoder._callsynth_original_init = original
    opus.OpusEncoder.__init__ = init
    if not hasattr(opus.OpusEncoder, "_callsynth_original_encode"):
        opus.OpusEncoder._callsynth_original_encode = opus.OpusEncoder.encode
        opus.OpusEncoder.encode = _encode_continuing


def _encode_continuing(self, frame, force_keyframe=False):
    """aiortc's Opus encode, with timestamps that continue those of the encoder this one replaced
    (retune_voice): aiortc counts them from each encoder's first packet."""
    if getattr(self, "_callsynth_follows", None) is not None or hasattr(self, "_callsynth_pts0"):
        # a new encoder's resampler expects the track's time to start at 0 where it joins
        if not hasattr(self, "_callsynth_pts0"):
            self._callsynth_pts0 = frame.pts or 0
        if frame.pts is not None:
            frame.pts -= self._callsynth_pts0
    payloads, timestamp = opus.OpusEncoder._callsynth_original_encode(self, frame, force_keyframe)
    if timestamp is None:
        return payloads, timestamp
    before = getattr(self, "_callsynth_follows", None)
    if before is not None:                 # the first packet: the old encoder has finished its last
        self._callsynth_offset = getattr(before, "_callsynth_next", 0)
        self._callsynth_follows = None
    timestamp += getattr(self, "_callsynth_offset", 0)
    self._callsynth_next = timestamp + self.resampler.frame_size * len(payloads)
    return payloads, timestamp


def retune_voice(rtp_sender) -> None:
    """Mid-call, the voice at the rate and frame length set_opus_bitrate has just set: libopus takes both
    once, when opened, so the RTP sender gets a new encoder (aiortc keeps it in a private attribute, made
    on the first frame), whose timestamps go on from the old one's. The track must deliver frames of the
    new length from now."""
    old = getattr(rtp_sender, "_RTCRtpSender__encoder", None)
    if not isinstance(old, opus.OpusEncoder):
        return                              # not started yet: the first frame makes one as now set
    new = opus.OpusEncoder()
    new._callsynth_follows = old
    rtp_sender._RTCRtpSender__encoder = new


@dataclass
class LinkWatch:
    """What the link shows this side (callsynth.budget.LinkReport): the other side's newest RTCP receiver
    report on our voice (share of packets lost since the previous one we got, and how many packets that
    was), the round trip (the shorter of RTCP's last two, else without a voice sctp_round_trip) and the
    shortest either measured since the call began, and how long feature packets wait in our SCTP queue
    (the caller's measure)."""
    pc: RTCPeerConnection
    last_report: object = None
    last_counts: tuple[int, int] = (0, 0)   # packets the previous report counted: all sent, and lost

    async def report(self, now_s: float, queued_s: float = 0.0):
        from .budget import LinkReport

        loss = rtt = packets = None
        voice = False
        # the quietest since the first packets, SCTP's or RTCP's: the queue may have filled before RTCP began
        floors = [getattr(self.pc.sctp, "_callsynth_lowest_round_trip", None)]
        for sender in self.pc.getSenders():
            if sender.kind != "audio":         # (its track is gone once the voice ends: still the voice's)
                continue
            floors.append(getattr(sender, "_callsynth_lowest_round_trip", None))
            for stats in (await sender.getStats()).values():
                if stats.type != "remote-inbound-rtp":
                    continue
                if stats.timestamp != self.last_report:
                    self.last_report = stats.timestamp
                    # from the cumulative counts, not the report's own share: a lost report's interval
                    # is then in the next one's, as it is in our count of what was sent
                    counts = (stats.packetsReceived + stats.packetsLost, stats.packetsLost)
                    sent, lost = counts[0] - self.last_counts[0], counts[1] - self.last_counts[1]
                    if sent > 0:
                        loss, packets = min(1.0, max(0.0, lost / sent)), sent
                    self.last_counts = counts
            # the shorter of the last two measured (record_round_trips): a stall lengthens one, a queue all
            measured = list(getattr(sender, "_callsynth_round_trips", ()))[-2:]
            voice, rtt = True, (min(measured) * 1000.0 if len(measured) == 2 else None)
        sctp_rtt = None if voice else sctp_round_trip(self.pc.sctp)
        if sctp_rtt is not None:
            rtt = sctp_rtt * 1000.0             # no voice, no RTCP: SCTP's acknowledgements
        floors = [f * 1000.0 for f in floors if f is not None]
        return LinkReport(now_s, loss, rtt, queued_s, packets, min(floors) if floors else None)


class _RtcpSpacing:
    """Stands for the `random` module in aiortc's RTP sender and receiver, whose RTCP loops (the only
    users of it there) sleep 0.5 + random() seconds: `scale` stretches that interval."""

    def __init__(self, scale: float):
        self.scale = scale

    def random(self) -> float:
        return (0.5 + random.random()) * self.scale - 0.5


def space_rtcp(scale: float = 1.0) -> None:
    """RTCP reports every (0.5-1.5 s) x `scale`. aiortc sends a sender and a receiver report about once a
    second each, 1.5 kbps on the wire (measured): a tenth of a 24 kbps call. RFC 3550 gives RTCP 5 % of
    the session's bandwidth; within a budget the reports come every 2-6 s."""
    from aiortc import rtcrtpreceiver, rtcrtpsender

    for module in (rtcrtpsender, rtcrtpreceiver):
        module.random = random if scale == 1.0 else _RtcpSpacing(scale)


def delay_sacks(enabled: bool = True, every: int = 2, within_s: float = 0.45) -> None:
    """SCTP acknowledgements delayed as RFC 4960 6.2 allows (aiortc sends one for every packet): for every
    second packet, or within `within_s` (the RFC's limit is 500 ms; its suggested 200 ms is shorter than
    the 200 ms between feature packets at 24 kbps, where it saved nothing), and at once when a packet is
    missing or repeated. A call within a budget acknowledges each of the other side's feature packets:
    this halves what that costs."""
    transport = RTCSctpTransport
    original = getattr(transport, "_callsynth_send_sack", transport._send_sack)
    transport._callsynth_send_sack = original
    if not enabled:
        transport._send_sack = original
        return

    async def send_sack(self) -> None:
        # counted in data chunks received since the last SACK: aiortc asks again on every packet that
        # arrives, the other side's SACKs for our own data included
        if not hasattr(self, "_callsynth_acked"):   # the first chunk since the association began
            self._callsynth_acked = (self._last_received_tsn - 1) % (1 << 32)
        unacked = (self._last_received_tsn - self._callsynth_acked) % (1 << 32)
        if unacked < every and not self._sack_misordered and not self._sack_duplicates:
            if getattr(self, "_callsynth_timer", None) is None:
                def late() -> None:
                    self._callsynth_timer = None
                    if self._sack_needed and self._association_state == transport.State.ESTABLISHED:
                        asyncio.ensure_future(self._send_sack_now())
                self._callsynth_timer = asyncio.get_running_loop().call_later(within_s, late)
            return
        await self._send_sack_now()

    async def send_sack_now(self) -> None:
        if getattr(self, "_callsynth_timer", None) is not None:
            self._callsynth_timer.cancel()
            self._callsynth_timer = None
        self._callsynth_acked = self._last_received_tsn
        await original(self)

    transport._send_sack_now = send_sack_now
    transport._send_sack = send_sack


ICE_SERVER = re.compile(r"^(?P<scheme>stuns?|turns?):(?:(?P<user>[^:@/]+):(?P<password>[^@/]+)@)?(?P<rest>[^@]+)$")


def parse_ice_server(text: str) -> RTCIceServer:
    """A STUN or TURN server from the command line: stun:HOST[:PORT], or
    turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] (turns: for TLS). ValueError, clearly, otherwise.
    aioice uses the first STUN and the first TURN server given."""
    match = ICE_SERVER.match(text or "")
    if not match:
        raise ValueError(f"--ice-server {text!r}: expected stun:HOST[:PORT] or "
                         "turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]")
    scheme, user, password = match["scheme"], match["user"], match["password"]
    url = f"{scheme}:{match['rest']}"
    try:
        parse_stun_turn_uri(url)
    except ValueError as exc:
        raise ValueError(f"--ice-server {text!r}: {exc}") from exc
    if scheme.startswith("turn") and not (user and password):
        raise ValueError(f"--ice-server {text!r}: a TURN server needs USER:PASSWORD@ before its host")
    if scheme.startswith("stun") and user:
        raise ValueError(f"--ice-server {text!r}: a STUN server takes no user name")
    return RTCIceServer(urls=url, username=user, credential=password)


def on_message(channel, handler: Callable, failed: Callable[[Exception], None]) -> None:
    """Hand `channel`'s messages to `handler`; an exception out of it is passed to `failed` (to be said and
    counted) and the message dropped. Raised inside aiortc's receive path, it closed the whole peer
    connection: a receiver whose recording could not start lost the call as the still came, and took it for
    the other side leaving."""
    def handle(message) -> None:
        try:
            handler(message)
        except Exception as exc:  # noqa: BLE001 - one message must not end the call
            logging.getLogger("callsynth.rtc").debug("a %s message failed here", channel.label, exc_info=True)
            failed(exc)

    channel.on("message", handle)


def channels_late(timeout: float, sctp: RTCSctpTransport | None) -> TimeoutError:
    """The error for a call whose data channels (over `sctp`, None before the peer connection made it) did
    not open within `timeout` s, saying how far the connection got: DTLS's state is 'connected' once ICE
    found a path and the secure handshake passed, 'closed' when the other side then gave up first. A bare
    asyncio timeout ended such a call with "error: " and nothing after it."""
    if sctp is not None and sctp.transport.state in ("connected", "closed"):
        why = ("the other side was reached and the connection secured, but the channels' own set-up (SCTP "
               "inside DTLS) did not get through: a link that loses most packets (fix_sctp_setup retries "
               "every second) or a firewall that passes some of the call's UDP and not the rest; try again")
    else:
        why = ("no path to the other side (ICE's checks found no pair of addresses that reach each other, "
               "or the secure handshake did not pass): behind NATs or firewalls that block UDP, give both "
               "sides a TURN server with --ice-server")
    return TimeoutError(f"the call's data channels did not open within {timeout:g} s: {why}")


# SCTP's first retransmission timeout, before any round trip is measured: aiortc's 3 s (RFC 4960's RTO.Initial)
# made each lost datagram of the data channels' set-up cost 3 s, and aiortc's T1 does not back off, so 1 s
# tries as often for as long as a call waits for its channels (SenderOptions.connect_timeout, 20 s). Once a
# round trip is measured the timeout follows it, as before (at least 1 s).
SCTP_FIRST_RTO_S = 1.0
SCTP_INIT_TRIES = 20
MAX_SACK_GAPS = 8          # gap blocks in a SACK at most: the newest (fix_sctp_setup)


def fix_sctp_setup(first_rto_s: float = SCTP_FIRST_RTO_S, init_tries: int = SCTP_INIT_TRIES) -> None:
    """Every SCTP association made from now on sets up through a lossy link (README, "A lossy link"):
    - its first retransmission timeout is `first_rto_s` (see SCTP_FIRST_RTO_S);
    - an INIT goes out with verification tag 0 always, as RFC 9260 8.5.1 requires. Both WebRTC peers send
      an INIT at once; aiortc answers the other's with an INIT-ACK and takes its tag, and when both INIT-ACKs
      were lost (two datagrams in a row: 2 % of set-ups at 15 % loss) it sent its INIT again under that tag,
      which the other side drops as a bad tag, every time: the channels never opened (`scripts/call_setup.py`
      at 15 % loss: 1 of 60 set-ups with aiortc's own, 3 of 40 with its first timeout at 1 s alone);
    - a SACK reports the newest MAX_SACK_GAPS runs of chunks received past the cumulative one, not every
      one (RFC 9260 3.3.4 lets a receiver report fewer): while one reliable chunk is missing (a part of a
      still that a full link keeps dropping), every feature packet after it is a run of its own, and
      aiortc's SACKs grew with them to 20-27 kbps of acknowledgements 30 s later, more than the budget
      of a whole call. The sender takes the runs it is not told of as lost: feature packets are given up
      (as they would be), and a reliable chunk is sent again (duplicates are harmless)."""
    rtcsctptransport.SCTP_RTO_INITIAL = first_rto_s
    rtcsctptransport.SCTP_MAX_INIT_RETRANS = init_tries - 1
    transport = RTCSctpTransport
    original = getattr(transport, "_callsynth_send_chunk", transport._send_chunk)
    transport._callsynth_send_chunk = original

    async def send_chunk(self, chunk) -> None:
        if isinstance(chunk, rtcsctptransport.SackChunk) and len(chunk.gaps) > MAX_SACK_GAPS:
            chunk.gaps = chunk.gaps[-MAX_SACK_GAPS:]
        if not isinstance(chunk, rtcsctptransport.InitChunk):
            await original(self, chunk)
            return
        await self.transport._send_data(
            rtcsctptransport.serialize_packet(self._local_port, self._remote_port, 0, chunk))

    transport._send_chunk = send_chunk


# A call's set-up goes out twice (fix_ice_checks, fix_dtls_setup): each copy this long after its datagram,
# so that a loss that takes one datagram rarely takes both; 0 or less: once, as aioice and aiortc send them
SET_UP_COPY_AFTER_S = 0.03
DTLS_HANDSHAKE_TYPES = (20, 22)     # the first byte of a record: change cipher spec, handshake (RFC 6347 4.1)


def fix_ice_checks(copy_after_s: float = SET_UP_COPY_AFTER_S) -> None:
    """ICE's connectivity checks (STUN binding requests) go out twice while ICE is checking, the copy
    `copy_after_s` later. aioice sends an unanswered check again after 0.5 s, then 1, 2, 4, 8 s (RFC 8489's
    doubling), and a check is answered only when both the request and its answer arrive (72 % at 15 %
    loss): peers connected after 0.5, 1.5, 3.5, 7.5 or 15.5 s, and once in 60 set-ups not within 30 s
    (`scripts/call_setup.py --send-once` at 15 % loss: README, "A lossy link"). Each copy is answered too,
    so a check now fails only when both exchanges do; a check answered before its copy is due goes without
    it (on a good link no copy is sent). Consent checks once connected are sent once."""
    protocol = aioice.ice.StunProtocol
    original = getattr(protocol, "_callsynth_send_stun", protocol.send_stun)
    protocol._callsynth_send_stun = original
    if copy_after_s <= 0:
        protocol.send_stun = original
        return

    def send_copy(self, message, addr) -> None:
        if message.transaction_id not in getattr(self, "transactions", {}):
            return                             # answered meanwhile: the copy is not needed
        transport = self.transport             # a socket, or a TURN relay's (which has no is_closing)
        if transport is None or getattr(transport, "is_closing", lambda: False)():
            return
        try:
            original(self, message, addr)
        except Exception:  # noqa: BLE001 - the socket or the relay closed meanwhile: the copy is not needed
            pass

    def send_stun(self, message, addr) -> None:
        original(self, message, addr)
        if (message.message_class == aioice.stun.Class.REQUEST and message.message_method
                == aioice.stun.Method.BINDING and not getattr(self.receiver, "_check_list_done", True)):
            asyncio.get_running_loop().call_later(copy_after_s, send_copy, self, message, addr)

    protocol.send_stun = send_stun


def fix_dtls_setup(copy_after_s: float = SET_UP_COPY_AFTER_S) -> None:
    """Every DTLS handshake from now on sends each of its datagrams twice, the copy `copy_after_s` later.
    OpenSSL sends a lost flight again after 1 s, then 2, 4, 8 s (doubling, as RFC 6347 4.2.4.1 says), so
    at 15 % loss a handshake whose round trip failed four times running (both flights must arrive: 28 %
    a try) took 15 s or more, and a call that waits 20 s for its channels gave up with "no path"
    (`scripts/call_setup.py --send-once` at 15 % loss: README, "A lossy link"). With a copy, a flight's
    datagram is lost only when both are (2 % at 15 %). A copy is let go when anything came from the other
    side meanwhile (its next flight, or its data once it is through: the original arrived), so that on a
    good link the copies are not sent; one that arrives after its original anyway is a replayed record,
    which DTLS drops (RFC 6347 4.1.2.6). Nothing else goes out twice: application data (23, the SCTP of
    the data channels) and SRTP (the voice) are sent once."""
    transport = RTCDtlsTransport
    original = getattr(transport, "_callsynth_start", transport.start)
    transport._callsynth_start = original
    if copy_after_s <= 0:
        transport.start = original
        return

    async def start(self, remoteParameters) -> None:
        ice = self.transport
        if not getattr(ice, "_callsynth_copies", False):
            ice._callsynth_copies, send, receive = True, ice._send, ice._recv
            heard = [0]                        # datagrams received from the other side so far

            async def counting_recv():
                data = await receive()
                heard[0] += 1
                return data

            async def send_copy(data: bytes, heard_before: int) -> None:
                if heard[0] > heard_before:    # the other side answered since: the original arrived
                    return
                try:
                    await send(data)
                except Exception:  # noqa: BLE001 - the connection closed meanwhile: the copy is not needed
                    pass

            async def send_twice(data: bytes) -> None:
                await send(data)
                if data and data[0] in DTLS_HANDSHAKE_TYPES:
                    before = heard[0]
                    asyncio.get_running_loop().call_later(
                        copy_after_s, lambda: asyncio.ensure_future(send_copy(data, before)))

            ice._send, ice._recv = send_twice, counting_recv
        await original(self, remoteParameters)

    transport.start = start


class _ConsentCheck:
    """One consent check's STUN transaction, which waits as long as consent lasts for its answer: aioice's
    (a request with no retransmission) gives up after its first retransmission timeout, 500 ms, and drops
    an answer that comes later. Stands in aioice's table of open transactions, as its own do."""

    def __init__(self, key: bytes):
        self.key = key
        self.answered = asyncio.get_running_loop().create_future()

    def response_received(self, message, addr) -> None:
        if (not self.answered.done() and message.check_message_integrity(self.key)
                and message.message_class == aioice.stun.Class.RESPONSE):
            self.answered.set_result(True)


async def _check_consent(pair, request, key: bytes, wait_s: float) -> bool:
    """Sends `request` on `pair` and says whether it was answered within `wait_s`."""
    request.add_message_integrity(key)
    check = _ConsentCheck(key)
    pair.protocol.transactions[request.transaction_id] = check
    try:
        pair.protocol.send_stun(request, pair.remote_addr)
        return await asyncio.wait_for(check.answered, wait_s)
    except Exception:                       # unanswered, or the pair's socket closed under it
        return False
    finally:
        pair.protocol.transactions.pop(request.transaction_id, None)


def fix_consent_checks() -> None:
    """Consent to send (RFC 7675) lapses 30 s after the last check the other side answered, however late the
    answer came. aioice counted a check as failed when its answer took over 500 ms and closed the call
    after six such in a row (30 s): on a link whose round trip is longer (a slow link's full buffer, 1.4 s
    at 32 kbit/s in `scripts/policed_link.py --queue 32`; a geostationary satellite's 600 ms) every call
    ended after half a minute, "media path closed". Checks still go every 4-6 s, one per nominated pair,
    each waiting up to the 30 s for its answer."""
    connection = aioice.ice.Connection
    if getattr(connection, "_callsynth_consent", False):
        return
    connection._callsynth_consent = True

    async def query_consent(self) -> None:
        lasts_s = aioice.ice.CONSENT_FAILURES * aioice.ice.CONSENT_INTERVAL
        answered = time.monotonic()
        waiting: set[asyncio.Task] = set()

        def done(task: asyncio.Task) -> None:
            nonlocal answered
            waiting.discard(task)
            if not task.cancelled() and task.result():
                answered = time.monotonic()

        try:
            while True:
                await asyncio.sleep(aioice.ice.CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
                if time.monotonic() - answered >= lasts_s:
                    logging.getLogger("callsynth.rtc").warning(
                        "consent to send expired: no consent check answered in %.0f s", lasts_s)
                    self._query_consent_task = None
                    await self.close()
                    return
                for pair in self._nominated.values():
                    task = asyncio.ensure_future(_check_consent(
                        pair, self.build_request(pair, nominate=False),
                        self.remote_password.encode("utf8"), lasts_s))
                    waiting.add(task)
                    task.add_done_callback(done)
        finally:
            for task in list(waiting):
                task.cancel()

    connection.query_consent = query_consent


def record_round_trips() -> None:
    """Each RTCP round trip aiortc measures is kept as measured (`_callsynth_round_trips` on its RTP
    sender, newest last), beside the smoothed one its stats give: a round trip includes any stall of either
    side's event loop between a report's arrival and its handling (a 228 ms one on a loopback link as the
    still arrived), which one sample shows and the next does not, while a queue on the link lengthens
    every one; smoothed, one stall stayed over the threshold for several seconds (LinkWatch). Likewise each
    round trip SCTP measures, with the time it was measured (`_callsynth_round_trips` on the SCTP
    transport; sctp_round_trip says which)."""
    sender = rtcrtpsender.RTCRtpSender
    original = getattr(sender, "_callsynth_handle_rtcp", sender._handle_rtcp_packet)
    sender._callsynth_handle_rtcp = original

    async def handle_rtcp(self, packet) -> None:
        before = self._RTCRtpSender__rtt
        await original(self, packet)
        after = self._RTCRtpSender__rtt
        if after is not None and after != before:
            samples = self.__dict__.setdefault("_callsynth_round_trips", deque(maxlen=8))
            samples.append(measured_round_trip(before, after))
            _keep_lowest(self, samples[-1])

    sender._handle_rtcp_packet = handle_rtcp

    transport = RTCSctpTransport
    original_sack = getattr(transport, "_callsynth_receive_sack", transport._receive_sack_chunk)
    transport._callsynth_receive_sack = original_sack

    async def receive_sack(self, chunk) -> None:
        waiting = [c for c in self._sent_queue if not c._acked]
        await original_sack(self, chunk)
        now = time.time()
        still_queued = {id(c) for c in self._sent_queue if not c._acked}
        acked = [c for c in waiting if id(c) not in still_queued]
        if acked and acked[-1]._sent_count == 1 and acked[-1]._sent_time is not None:
            samples = self.__dict__.setdefault("_callsynth_round_trips", deque(maxlen=64))
            samples.append((now, now - acked[-1]._sent_time))
            _keep_lowest(self, samples[-1][1])

    transport._receive_sack_chunk = receive_sack


def _keep_lowest(measurer, rtt_s: float) -> None:
    """The shortest round trip `measurer` (an RTP sender, the SCTP transport) has measured, kept."""
    lowest = getattr(measurer, "_callsynth_lowest_round_trip", None)
    measurer._callsynth_lowest_round_trip = rtt_s if lowest is None else min(lowest, rtt_s)


def sctp_round_trip(sctp: RTCSctpTransport | None, window_s: float = SCTP_RTT_WINDOW_S) -> float | None:
    """The shortest round trip SCTP measured in the last `window_s` (record_round_trips), in s; None
    without one. Measured on the newest chunk each acknowledgement takes in for the first time, not as
    aiortc's smoothed one is (on the oldest): a receiver acknowledges every second packet at once
    (delay_sacks), so the oldest had waited for the next to be sent, a packet's spacing (200 ms at 24 kbps),
    and one acknowledged after a retransmission had waited for that. The shortest of a few leaves out the
    acknowledgements a receiver delayed and an event-loop stall, which lengthen some; a queue lengthens all."""
    if sctp is None:
        return None
    since = time.time() - window_s
    recent = [rtt for at, rtt in getattr(sctp, "_callsynth_round_trips", ()) if at >= since]
    return min(recent) if recent else None


def unacknowledged_bytes(channel) -> int:
    """Bytes of `channel`'s messages that the other side has not acknowledged yet: waiting in the channel
    (bufferedAmount), in SCTP's queue to go, or sent and not yet acknowledged (aiortc keeps those two
    queues private). SCTP has one queue for all channels, first in first out, and sends what its
    retransmissions leave of its congestion window: a big reliable message that a policer keeps dropping
    (at capacity it lets 60-byte datagrams by and drops 1 KB ones) held the feature packets behind it.
    A paced sender waits for 0 before its next part (sender.stream)."""
    sctp = channel.transport
    stream = channel.id
    pending = channel.bufferedAmount
    for queue in (sctp._outbound_queue, sctp._sent_queue):
        pending += sum(len(chunk.user_data) for chunk in queue
                       if chunk.stream_id == stream and not chunk._acked and not chunk._abandoned)
    return pending


def measured_round_trip(smoothed_before: float | None, smoothed_after: float) -> float:
    """The round trip aiortc measured, from its smoothed value before and after (rtcrtpsender.RTT_ALPHA)."""
    if smoothed_before is None:
        return smoothed_after
    alpha = rtcrtpsender.RTT_ALPHA
    return (smoothed_after - alpha * smoothed_before) / (1 - alpha)


def new_peer_connection(hosts: list[str] | None = (CALL.host,),
                        ice_servers: tuple[RTCIceServer, ...] = ()) -> RTCPeerConnection:
    """A peer connection on one bundled transport; STUN/TURN only when given (nothing outside is reached
    otherwise). With a TURN server, a relayed candidate joins the host ones: two peers that cannot reach
    each other meet through it. Its voice is buffered by voice_jitter.VoiceJitterBuffer, its checks,
    secure handshake and data channels' set-up hold on a lossy link (fix_ice_checks, fix_dtls_setup,
    fix_sctp_setup), its consent to send on a slow one
    (fix_consent_checks), and its round trips (RTCP's, SCTP's) are kept as measured (record_round_trips)."""
    voice_jitter.install()
    fix_ice_checks()
    fix_dtls_setup()
    fix_sctp_setup()
    fix_consent_checks()
    record_round_trips()
    restrict_ice_hosts(list(hosts) if hosts else None)
    config = RTCConfiguration(iceServers=list(ice_servers), bundlePolicy=RTCBundlePolicy.BALANCED)
    return RTCPeerConnection(configuration=config)


@dataclass
class WireCounter:
    """Datagrams received on the bundled transport, split by kind (RFC 7983: first byte 20-63 is
    DTLS, carrying the SCTP data channels; 128-191 is SRTP/SRTCP, the audio)."""

    bytes: dict = field(default_factory=lambda: {"data": 0, "audio": 0, "other": 0})
    packets: dict = field(default_factory=lambda: {"data": 0, "audio": 0, "other": 0})
    started: float = field(default_factory=time.monotonic)
    marked: tuple | None = None
    closed: tuple | None = None
    last: float = 0.0

    def mark(self) -> None:
        """Start of the measured window (e.g. once the one-off still has arrived)."""
        self.marked = (time.monotonic(), dict(self.bytes), dict(self.packets))

    def close(self) -> None:
        """End of the measured window: the call is ending. The hang-up exchange, the last acknowledgements
        and the transports' closing are not the call's rate (in a 5 s call they were about a tenth of
        what was counted); datagrams still counted after this are `after_close`."""
        if self.closed is None:
            self.closed = (time.monotonic(), dict(self.bytes), dict(self.packets))

    def since_mark(self) -> dict:
        """{kind: (bytes, datagrams)} from mark() (the start without one) to close() (or now)."""
        b1, p1 = (self.closed[1], self.closed[2]) if self.closed else (self.bytes, self.packets)
        if self.marked is None:
            return {k: (b1[k], p1[k]) for k in self.bytes}
        _, b0, p0 = self.marked
        return {k: (b1[k] - b0[k], p1[k] - p0[k]) for k in self.bytes}

    def after_close(self) -> int:
        """Bytes counted after close()."""
        return sum(self.bytes.values()) - sum(self.closed[1].values()) if self.closed else 0

    def seconds_since_mark(self) -> float:
        """From the mark to close() (or, without one, to the last datagram counted)."""
        end = self.closed[0] if self.closed else self.last
        return max(0.0, end - (self.marked[0] if self.marked else self.started))

    def kbps(self) -> dict:
        """{kind: kbps} from mark() to close(), headers counted."""
        seconds = self.seconds_since_mark()
        return {kind: kbps(nbytes, seconds) for kind, (nbytes, _) in self.since_mark().items()}

    def count(self, datagram: bytes) -> None:
        first = datagram[0] if datagram else 0
        kind = "data" if 20 <= first <= 63 else "audio" if 128 <= first <= 191 else "other"
        self.bytes[kind] += len(datagram) + UDP_IPV4_HEADERS
        self.packets[kind] += 1
        self.last = time.monotonic()


def count_received_datagrams(pc: RTCPeerConnection) -> WireCounter:
    """Wrap the ICE transport's receive so every datagram is counted before DTLS/SRTP sees it.

    Call once the transports exist (after setRemoteDescription)."""
    counter = WireCounter()
    ice_transport = pc.sctp.transport.transport if pc.sctp else None
    if ice_transport is None:
        transceivers = pc.getTransceivers()
        ice_transport = transceivers[0].receiver.transport.transport
    receive = ice_transport._recv

    async def counting_recv():
        data = await receive()
        counter.count(data)
        return data

    ice_transport._recv = counting_recv
    return counter
