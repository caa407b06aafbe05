"""What a receiving side measures, in one place: frames shown and their glass-to-glass latency, packets,
stills, events, and the datagrams on the wire. The closing line and STATS.json are both read from
`summary()` (they once disagreed)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callsynth.budget import kbps
from callsynth.errors import reason
from callsynth.outputs import write_stats

log = logging.getLogger("callsynth.receive")


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
    feature_codes: int = 0          # codes the packets carried (more than packets where they are bundled)
    rejected: dict = field(default_factory=dict)
    jitter: dict = field(default_factory=dict)
    identity_bytes: int = 0
    reference_bytes: int = 0
    # open mouths drawn from the sender's named picture / the receiver's choice
    mouth_sources: dict = field(default_factory=dict)
    references_received: int = 0
    render_errors: int = 0
    audio_frames: int = 0
    voice_frames_skipped: int = 0   # voice frames the speech fallback let go, being too far behind
    recording: dict = field(default_factory=dict)   # frames written and skipped, when the call is recorded
    speaker: dict = field(default_factory=dict)     # voice frames played, dropped, when the voice is played
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
                f"{kbps(self.feature_bytes, span):.2f} kbps payload, {self.feature_packets} packets, "
                f"{sum(self.rejected.values())} rejected, {self.concealed_frames} frames concealed")

    def write_frame_log(self, path: Path) -> None:
        lines = ["capture_ms,shown_ms,latency_ms,concealed"] + [
            f"{c},{s},{s - c},{int(k)}" for c, s, k in self.frame_log]
        path.write_text("\n".join(lines) + "\n")

    def write(self, stats_path: str | Path, summary: dict, said_to: logging.Logger) -> None:
        """The call's summary as JSON at `stats_path` and its frame log beside it (.frames.csv), as the call
        ends; a place that refuses them then is a warning (callsynth.outputs.write_stats), not the call's end."""
        if write_stats(stats_path, summary, said_to):
            frames = Path(stats_path).with_suffix(".frames.csv")
            try:
                self.write_frame_log(frames)
            except OSError as exc:
                said_to.warning("cannot write the frame log to %s (%s)", frames, reason(exc))

    def longest_concealed_ms(self) -> float:
        """The longest stretch of frames shown without a packet at or after them (0 without one), from the
        first of them shown to the next frame that had one (or the last frame): where the face froze or
        drifted. The count of concealed frames does not tell a call that misses a packet now and then from
        one whose packets stopped for seconds."""
        longest, since = 0.0, None
        for _, shown, concealed in self.frame_log:
            if concealed and since is None:
                since = shown
            elif not concealed and since is not None:
                longest, since = max(longest, shown - since), None
        if since is not None:
            longest = max(longest, self.frame_log[-1][1] - since)
        return float(longest)

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
            # a stall shows here, not in the mean frame rate
            "longest_gap_ms": _round(np.max(np.diff(times)) * 1000) if len(times) > 1 else None,
            "latency_ms": {"p50": _round(np.percentile(lat, 50)), "p95": _round(np.percentile(lat, 95)),
                           "max": _round(np.max(lat)), "frames": len(self.latencies_ms)},
            "concealed_frames": self.concealed_frames,
            "longest_concealed_ms": self.longest_concealed_ms(),
            "audio_fallback_frames": self.fallback_frames,
            "speech_driven_packets": self.speech_packets,
            "features": {"packets": self.feature_packets, "bytes": self.feature_bytes, "codes": self.feature_codes,
                         "payload_kbps": kbps(self.feature_bytes, span),
                         "bytes_per_packet": round(self.feature_bytes / max(1, self.feature_packets), 2)},
            "rejected_packets": self.rejected,
            "jitter_buffer": self.jitter,
            "identity_bytes": self.identity_bytes,
            "references_received": self.references_received,
            "reference_bytes": self.reference_bytes,
            "mouth_sources": self.mouth_sources,
            "render_errors": self.render_errors,
            "still_cached": self.identity_bytes > 0,
            "audio_frames": self.audio_frames,
            "voice_frames_skipped": self.voice_frames_skipped,
            "recording": self.recording,
            "speaker": self.speaker,
            "on_wire": self.wire,
            "events": list(self.events),
            "events_from_unix_s": round(self.started, 3),   # events' t_s count from here (frames CSV: unix ms)
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


def wire_summary(counters) -> dict:
    """On-wire traffic received (rtc.WireCounter of each peer connection of the call), from the moment the
    still arrived, by kind."""
    wire, seconds, after = {"data": 0, "audio": 0, "other": 0}, 0.0, 0
    packets = dict(wire)
    for counter in counters:
        for kind, (nbytes, npackets) in counter.since_mark().items():
            wire[kind] += nbytes
            packets[kind] += npackets
        seconds += counter.seconds_since_mark()
        after += counter.after_close()
    return {
        "note": "what the other side sent, from the moment its still arrived until the call began to end "
                "(`after_end_bytes`: the hang-up exchange and closing, not counted); every datagram counted "
                "with its 28 bytes of UDP/IPv4 headers; 'features' is DTLS/SCTP (feature packets, reference "
                "stills, acknowledgements), 'audio' is SRTP/SRTCP",
        "after_end_bytes": after,
        "seconds": round(seconds, 2),
        "features_kbps": kbps(wire["data"], seconds),
        "audio_kbps": kbps(wire["audio"], seconds),
        "total_kbps": kbps(sum(wire.values()), seconds),
        "bytes": wire, "datagrams": packets,
    }
