"""How far the voice arrives behind the face it goes with, in a loopback call on this machine.

A clip of a face with clicks at 1, 2, 3 and 4 s is sent through a real call (signalling server, sender and
receiver in one process, `--model warp`); each click's time leaving the sender's voice track and arriving
at the receiver gives the voice's transit, and the receiver's glass-to-glass latency (capture to shown)
the face's; and each click's time leaving the voice track against its place on the face's clock (the
clip's pictures are released from the moment streaming begins: a voice that leaves early leads the lips by
as much). What the receiver's loudspeaker (receiver/speaker.py) adds to the voice comes on top.

    python scripts/voice_face_sync.py [--runs 3] [--budget KBPS] [--voice-loss P]

--voice-loss P drops P % of the voice's RTP packets as the receiver gets them (a lossy link for the voice
alone; every 1/P-th packet, the same ones in every run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.call_key import CallKey  # noqa: E402
from callsynth.face.basis import load_basis  # noqa: E402
from callsynth.machine import cpu_description  # noqa: E402
from callsynth.media import iter_frames  # noqa: E402
from callsynth.signalling import run_server  # noqa: E402
from callsynth.split import data_root  # noqa: E402
from receiver.call import Receiver, ReceiverOptions  # noqa: E402
from receiver.frame_clock import FrameClock  # noqa: E402
from sender.call import SenderOptions, run_sender  # noqa: E402
from sender.capture import FileAudioTrack, VideoFileSource  # noqa: E402

CLICKS_S = (1.0, 2.0, 3.0, 4.0)


def clip_with_clicks(path: Path) -> None:
    frames = list(iter_frames(data_root() / "video/pcavs/00067.mp4", max_frames=125))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = np.zeros(48000 * 5, np.float32)
        for t in CLICKS_S:
            samples[int(t * 48000):int(t * 48000) + 480] = 0.8 * np.sin(np.arange(480) / 3)
        for i in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, i:i + 1024].copy(), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, i
            for packet in sound.encode(chunk):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)


def _onsets(times: list[float]) -> list[float]:
    out: list[float] = []
    for t in times:
        if not out or t - out[-1] > 0.5:
            out.append(t)
    return out


async def one_call(clip: Path, budget: float | None, voice_loss: float = 0.0
                   ) -> tuple[list[float], float, list[float]]:
    """(each click's transit in ms, the face's glass-to-glass p50 in ms, each click's leaving the voice
    track in ms after its time on the face's clock)."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    sent, heard = [], []
    track_recv, accept_audio, frames = FileAudioTrack.recv, FrameClock.accept_audio, VideoFileSource.frames
    face_clock: list[float] = []
    handle, seen = RTCRtpReceiver._handle_rtp_packet, {"n": 0}

    async def lossy(self, packet, arrival_time_ms):
        if self._RTCRtpReceiver__kind == "audio" and voice_loss:
            seen["n"] += 1
            if seen["n"] % round(100 / voice_loss) == 0:
                return
        await handle(self, packet, arrival_time_ms)

    async def recv(self):
        frame = await track_recv(self)
        if np.abs(frame.to_ndarray()).max() > 10000:
            sent.append(time.time())
        return frame

    def timed_frames(self, start=None):
        face_clock.append(start)
        return frames(self, start)

    def accept(self, frame):
        if np.abs(frame.to_ndarray()).max() > 5000:
            heard.append(time.time())
        accept_audio(self, frame)

    FileAudioTrack.recv, FrameClock.accept_audio, RTCRtpReceiver._handle_rtp_packet = recv, accept, lossy
    VideoFileSource.frames = timed_frames
    try:
        ready, stop = asyncio.get_running_loop().create_future(), asyncio.Event()
        server = asyncio.create_task(run_server("127.0.0.1", 0, None, ready, stop))
        url, key, basis = f"ws://127.0.0.1:{await ready}", CallKey.new().text, load_basis()
        receiver = asyncio.create_task(Receiver(basis, ReceiverOptions(url=url, room="s", key=key, rejoin_wait=2,
                                                                       model="warp")).run())
        await run_sender(VideoFileSource(clip), basis, SenderOptions(url=url, room="s", key=key, budget_kbps=budget),
                         FileAudioTrack(clip))
        summary = await asyncio.wait_for(receiver, 30)
        stop.set()
        await server
    finally:
        FileAudioTrack.recv, FrameClock.accept_audio = track_recv, accept_audio
        RTCRtpReceiver._handle_rtp_packet = handle
        VideoFileSource.frames = frames
    transit = [(b - a) * 1000 for a, b in zip(_onsets(sent), _onsets(heard))]
    early = [(t - face_clock[0] - at) * 1000 for t, at in zip(_onsets(sent), CLICKS_S)]
    return transit, summary["latency_ms"]["p50"], early


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget", type=float, help="the sender's --budget KBPS (default none)")
    parser.add_argument("--voice-loss", type=float, default=0.0, metavar="P",
                        help="drop P %% of the voice's RTP packets at the receiver (default 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clicks.mp4"
        clip_with_clicks(clip)
        rows = [asyncio.run(one_call(clip, args.budget, args.voice_loss)) for _ in range(args.runs)]
    for i, (transit, face, left) in enumerate(rows):
        print(f"run {i + 1}: voice transit {', '.join(f'{t:.0f}' for t in transit)} ms; face glass-to-glass "
              f"p50 {face:.1f} ms; clicks left the voice track {', '.join(f'{t:+.0f}' for t in left)} ms from "
              f"their place on the face's clock")
    voice = statistics.median(t for transit, _, _ in rows for t in transit)
    face = statistics.median(f for _, f, _ in rows)
    left = statistics.median(t for _, _, left in rows for t in left)
    print(f"median: the voice arrives {voice:.0f} ms after it left, the face is shown {face:.0f} ms after its "
          f"capture, and it leaves {left:+.0f} ms from its place on the face's clock: the voice "
          f"{voice - face + left:+.0f} ms behind the face before the loudspeaker (measured on {cpu_description()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
