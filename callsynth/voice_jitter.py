"""The received voice's jitter buffer: a fixed share of time, and a lost packet skipped, not waited for.

aiortc holds every received voice packet until four newer ones have come (80 ms of 20 ms packets, 240 ms
of a budget's 60 ms ones), and a packet missing at the head of its buffer stops the voice until the
buffer overflows, sixteen packets later; it then hands out one frame per packet that arrives, so the voice
stays that far behind for the rest of the call. `python scripts/voice_face_sync.py --voice-loss 5` (every
20th voice packet dropped as it arrives) measured the voice 297 ms behind its sending with 20 ms packets
and 1.93 s with `--budget 24`'s 60 ms ones, against 81 and 254 ms without loss (2-core AMD EPYC at 2.6
GHz): on a bad link the voice drifted seconds behind the face. With this buffer: 42 and 72 ms, lost
packets or not (README, "The voice").

VoiceJitterBuffer holds VOICE_HOLD_MS of packets, however long each is (learnt from consecutive packets'
RTP timestamps), and hands out its oldest packet once it holds more than that: a missing packet is waited
for only that long, then given up (Opus's decoder plays on from the next), and should it come after all it
is dropped as late, as aiortc drops any packet behind its head."""

from __future__ import annotations

import math

from aiortc import jitterbuffer, rtcrtpreceiver
from aiortc.utils import uint16_add

OPUS_CLOCK = 48000
VOICE_HOLD_MS = 40.0        # what the buffer holds before it hands out a frame (at least one packet)
LONGEST_PACKET_MS = 120.0   # Opus's longest packet: a larger step between timestamps is a gap, not a length


class VoiceJitterBuffer(jitterbuffer.JitterBuffer):
    """aiortc's JitterBuffer for the voice, holding VOICE_HOLD_MS and skipping a lost packet (above)."""

    def __init__(self, capacity: int = 16, prefetch: int = 4, is_video: bool = False):
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        self._last: tuple[int, int] | None = None     # (sequence number, RTP timestamp) of the newest

    def add(self, packet):
        last, self._last = self._last, (packet.sequence_number, packet.timestamp)
        if last is not None and uint16_add(packet.sequence_number, -last[0]) == 1:
            step_ms = ((packet.timestamp - last[1]) % (1 << 32)) * 1000 / OPUS_CLOCK
            if 0 < step_ms <= LONGEST_PACKET_MS:
                self._prefetch = max(1, math.ceil(VOICE_HOLD_MS / step_ms - 1e-9))
        return super().add(packet)

    def _remove_frame(self, sequence_number: int):
        """The oldest packet held, once more than `prefetch` are held (a voice packet is a whole frame);
        any missing before it are given up."""
        held = [count for count in range(self._capacity)
                if self._packets[(self._origin + count) % self._capacity] is not None]
        if len(held) <= self._prefetch:
            return None
        packet = self._packets[(self._origin + held[0]) % self._capacity]
        self.remove(held[0] + 1)
        return jitterbuffer.JitterFrame(data=packet._data, timestamp=packet.timestamp)


def _jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> jitterbuffer.JitterBuffer:
    """What aiortc's RTP receiver makes its jitter buffers with: ours for the voice, aiortc's for video."""
    if is_video:
        return jitterbuffer.JitterBuffer(capacity, prefetch=prefetch, is_video=True)
    return VoiceJitterBuffer(capacity, prefetch=prefetch)


def install() -> None:
    """Every RTP receiver made from now on buffers its voice so (rtc.new_peer_connection calls this)."""
    rtcrtpreceiver.JitterBuffer = _jitter_buffer
