"""Reenactment through the call's own path: tracker → code → packet bytes → decode → playout → warp.

The sender and receiver halves here are the very classes a call uses; only the network is missing.
Reference stills are collected from the driving clip as a call collects them: picked from frames
already seen, sent as identity messages, and used only for frames captured after they were sent.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from receiver.playout import FeatureTimeline
from receiver.renderer import Renderers
from sender.features import FeatureEncoder

from .budget import frames_per_packet
from .call_options import CALL
from .face.basis import ExpressionBasis
from .face.still import Still
from .wire import Codec, WireError, decode_identity, encode_identity


@dataclass
class ReenactStats:
    fps: float
    send_every: float           # frames per packet (budget.frames_per_packet)
    frames: int = 0
    frames_no_face: int = 0
    no_face_reasons: dict = field(default_factory=dict)
    packet_bytes: list = field(default_factory=list)
    rejected_packets: int = 0
    reference_bytes: list = field(default_factory=list)
    # open mouths drawn from the named picture / by the receiver's rule
    mouth_sources: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=lambda: {"track": [], "encode": [], "decode": [],
                                                      "render": []})

    def packet_rate_at_30fps(self) -> float:
        """Packets a second the same setting sends from a 30 fps camera: every frame is 30."""
        return 30.0 if self.send_every <= 1 else min(30.0, self.fps / self.send_every)

    def summary(self) -> dict:
        duration = self.frames / self.fps if self.fps else 0.0
        sent = len(self.packet_bytes)
        mean_bytes = float(np.mean(self.packet_bytes)) if sent else 0.0
        out = {
            "frames": self.frames,
            "fps": self.fps,
            "duration_s": round(duration, 3),
            "send_every": round(self.send_every, 3),
            "packets": sent,
            "packet_rate_hz": round(self.fps / self.send_every, 3),
            "bytes_per_packet": {"mean": round(mean_bytes, 2),
                                 "min": int(min(self.packet_bytes, default=0)),
                                 "max": int(max(self.packet_bytes, default=0))},
            "payload_kbps": round(sum(self.packet_bytes) * 8 / duration / 1000, 3) if duration else 0.0,
            # the same setting from a 30 fps camera (frames_per_packet's inverse; every frame: 30 a second)
            "payload_kbps_at_30fps": round(mean_bytes * 8 * self.packet_rate_at_30fps() / 1000, 3),
            "frames_no_face": self.frames_no_face,
            "no_face_reasons": self.no_face_reasons,
            "rejected_packets": self.rejected_packets,
            "references_sent": len(self.reference_bytes),
            "reference_bytes": int(sum(self.reference_bytes)),
            "mouth_sources": self.mouth_sources,
            "timings_ms": {},
        }
        for name, values in self.timings_ms.items():
            if values:
                out["timings_ms"][name] = {"mean": round(float(np.mean(values)), 3),
                                           "p95": round(float(np.percentile(values, 95)), 3)}
        per_frame = sum(out["timings_ms"].get(k, {}).get("mean", 0.0) for k in ("track", "render"))
        out["timings_ms"]["track_plus_render_fps"] = round(1000 / per_frame, 1) if per_frame else None
        return out


def packet_every(fps: float, every_at_30fps: int | None = None) -> float:
    """The frames per packet of `--send-every N`, which counts frames of a 30 fps camera (30 / N packets a
    second: frames_per_packet), by default the 4 kbps point (CALL.reenact_send_every: 15 a second)."""
    return frames_per_packet(fps, every_at_30fps or CALL.reenact_send_every)


def reenact(still: Still, frames: Iterable[np.ndarray], fps: float, basis: ExpressionBasis,
            send_every: float | None = None, smoothing: bool = True, stats: ReenactStats | None = None,
            sender_still: Still | None = None, renderers: Renderers | None = None, references: bool = True
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (reference crop, rebuilt frame) for every driving frame, in order.

    `sender_still` is what the sender measures codes from: the same still in a call; the driving
    video's own first frame when it drives somebody else, so that the driver's face shape is not sent
    as if it were an expression. `references`: collect reference stills from the driving clip (only
    when it drives its own face: another person's mouth is no reference for this one). `renderers`: what
    builds the renderer (receiver.renderer.Renderers; default the warp). `send_every`: frames per packet,
    fractional or whole (default: the 4 kbps point, packet_every).
    """
    send_every = send_every or packet_every(fps)
    stats = stats or ReenactStats(fps, send_every)
    encoder = FeatureEncoder(basis, sender_still or still, fps=fps, send_every=send_every,
                             smoothing=smoothing, references=references and sender_still is None)
    receiver_codec = Codec(basis)
    # the still as a call's receiver holds it: through the identity message, its JPEG included
    renderer = (renderers or Renderers(basis, "warp"))(decode_identity(encode_identity(still, basis), basis).still)
    timeline = FeatureTimeline(renderer.rest_pose, renderer.coder.expression_size)
    pending: deque[tuple[float, np.ndarray]] = deque()
    arrived: deque = deque()           # (capture ms it was sent at, IdentityMessage)
    newest = -1.0

    def render(t_ms: float) -> np.ndarray:
        while arrived and arrived[0][0] <= t_ms:
            message = arrived.popleft()[1]
            renderer.add_reference(message.index, message.still)
        t0 = time.perf_counter()
        image = renderer.render(timeline.at(t_ms))
        stats.timings_ms["render"].append((time.perf_counter() - t0) * 1e3)
        return image

    try:
        for index, frame in enumerate(frames):
            capture_ms = int(round(index * 1000 / fps))
            sent = encoder.process(frame, capture_ms)
            stats.frames += 1
            for key, value in sent.timings_ms.items():
                stats.timings_ms[key].append(value)
            if not sent.found:
                stats.frames_no_face += 1
                stats.no_face_reasons[sent.reason] = stats.no_face_reasons.get(sent.reason, 0) + 1
            pending.append((capture_ms, sent.crop))
            for message in sent.references:
                stats.reference_bytes.append(len(message))
                try:
                    arrived.append((capture_ms, decode_identity(message, basis)))
                except WireError:
                    stats.rejected_packets += 1
            if sent.packet is not None:
                stats.packet_bytes.append(len(sent.packet))
                t0 = time.perf_counter()
                try:
                    carried = receiver_codec.decode_all(sent.packet)
                except WireError:
                    stats.rejected_packets += 1
                else:
                    for features in carried:
                        timeline.add(features, features.capture_ms)
                        newest = max(newest, features.capture_ms)
                stats.timings_ms["decode"].append((time.perf_counter() - t0) * 1e3)
            # A frame can be shown once the packet after it (or at it) has arrived.
            while pending and pending[0][0] <= newest:
                t_ms, crop = pending.popleft()
                yield crop, render(t_ms)
        while pending:
            t_ms, crop = pending.popleft()
            yield crop, render(t_ms)
    finally:
        stats.mouth_sources = dict(renderer.blender.mouth_choices)
        encoder.close()
