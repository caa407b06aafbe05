"""The received voice's jitter buffer (callsynth/voice_jitter.py), fed aiortc's own RTP packets."""

from aiortc import jitterbuffer, rtcrtpreceiver
from aiortc.rtp import RtpPacket

from callsynth.rtc import new_peer_connection
from callsynth.voice_jitter import VOICE_HOLD_MS, VoiceJitterBuffer


def _played(packet_ms: int, lost: set[int], count: int = 60, buffer=None) -> list[tuple[int, int | None]]:
    """(sequence number of each packet as it arrives, that of the frame handed out then)."""
    step = 48 * packet_ms
    buffer = buffer or VoiceJitterBuffer(16, prefetch=4)
    out = []
    for seq in range(count):
        if seq in lost:
            continue
        packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * step)
        packet._data = bytes([seq])
        _, frame = buffer.add(packet)
        out.append((seq, None if frame is None else frame.timestamp // step))
    return out


def test_the_voice_is_held_for_a_fixed_time_whatever_its_packets_length():
    """aiortc held four packets whatever their length: 80 ms of 20 ms packets, 240 ms of a budget's 60 ms."""
    for packet_ms in (20, 60):
        behind = [seq - frame for seq, frame in _played(packet_ms, set()) if frame is not None]
        assert set(behind[1:]) == {max(1, round(VOICE_HOLD_MS / packet_ms))}, (packet_ms, behind)


def test_a_lost_voice_packet_is_given_up_and_the_voice_does_not_fall_behind():
    """aiortc waited for a lost packet until its buffer overflowed (sixteen packets), then handed out one
    frame a packet: the voice stayed that far behind for the rest of the call (`python
    scripts/voice_face_sync.py --voice-loss 5`: 0.3 s with 20 ms packets, 1.9 s with 60 ms ones)."""
    lost = {10, 20, 21, 35}
    for packet_ms in (20, 60):
        hold = max(1, round(VOICE_HOLD_MS / packet_ms))
        played = _played(packet_ms, lost)
        frames = [frame for _, frame in played if frame is not None]
        assert frames == sorted(frames) and not set(frames) & lost      # in order, the lost ones skipped
        # never further behind the newest packet than the hold, and at the end just the hold
        assert all(seq - frame <= hold + 2 for seq, frame in played if frame is not None)
        assert played[-1][0] - played[-1][1] == hold
        # the same with aiortc's buffer: it falls behind and stays there
        theirs = _played(packet_ms, lost, buffer=jitterbuffer.JitterBuffer(16, prefetch=4))
        assert theirs[-1][1] is None or theirs[-1][0] - theirs[-1][1] > hold + 2


def test_a_late_voice_packet_that_was_given_up_is_dropped():
    buffer = VoiceJitterBuffer(16, prefetch=4)
    _played(20, {5}, count=12, buffer=buffer)
    late = RtpPacket(payload_type=111, sequence_number=5, timestamp=5 * 960)
    late._data = b"\x05"
    assert buffer.add(late) == (False, None)


def test_every_peer_connection_buffers_its_voice_so_and_its_video_as_aiortc_does():
    pc = new_peer_connection()
    try:
        assert isinstance(rtcrtpreceiver.JitterBuffer(capacity=16, prefetch=4), VoiceJitterBuffer)
        video = rtcrtpreceiver.JitterBuffer(capacity=512, is_video=True)
        assert type(video) is jitterbuffer.JitterBuffer
    finally:
        import asyncio
        asyncio.run(pc.close())
