"""What a call sends, fitted to a bit rate on the wire (`--budget KBPS`): voice, face and every header.

On a link of a few tens of kbps the headers are most of the cost: every feature packet travels in SCTP
(12 + 16 bytes) inside DTLS (13 + 24) inside UDP/IPv4 (28), 93 bytes around 33 of payload, and the other
side acknowledges it with a SACK of about as many; every voice packet carries RTP, its extensions, the
SRTP tag and UDP/IPv4 (about 65 bytes, measured). So the plan trades packet rate first:

- the voice: Opus at OPUS_LOW_BPS in 60 ms frames (aiortc's fixed 20 ms frames cost 3x the headers);
- the face: one packet every N frames, N the smallest whose packets and their SACKs fit what is left
  (the jitter buffer's cap keeps glass to glass short, and past it the motion is extrapolated); then
  as many codes in each packet as still fit (a bundle: the first in full, the others as entropy-coded
  changes of about CODE_CHANGE_BYTES, wire.py), sampled evenly between packets, so a blink or a closing
  lip between two packets is carried rather than interpolated away; SACKs are delayed to every second
  packet (RFC 4960 6.2);
- RTCP: reports 4x further apart than aiortc's (about a second each way, 1.5 kbps);
- the reference stills: the budget's remainder, paced part by part (they arrive later, never burst).

Without a budget, a call sends every frame (every 2nd from a 60 fps camera), 16 kbps Opus in 20 ms frames,
references at 25 KB/s.
Each direction of a two-way call is planned alike; the figures are per direction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .wire import MAX_BUNDLE, PART_BYTES

UDP_IP = 28
PACKET_BYTES = 33                                        # one frame's packet (wire.Codec.packet_bytes)
FEATURE_PACKET_WIRE = PACKET_BYTES + 12 + 16 + 13 + 24 + UDP_IP   # in SCTP DATA, DTLS, UDP/IPv4
SACK_WIRE = 12 + 16 + 13 + 24 + UDP_IP                   # a SACK without gaps
PART_WIRE = PART_BYTES + 7 + FEATURE_PACKET_WIRE - 33    # a 1000-byte part of a reference still
VOICE_HEADERS = 64                                       # RTP + extensions + SRTP tag + UDP/IPv4, measured
RTCP_BPS = 1500                                          # aiortc's sender and receiver reports, ~1 a second each
RTCP_SPACING = 4.0                                       # within a budget: reports 4x further apart
OPUS_BPS, OPUS_FRAME_MS = 16000, 20                      # the voice without a budget
OPUS_LOW_BPS, OPUS_LOW_FRAME_MS = 6000, 60               # the voice within a budget
MAX_SEND_EVERY = 8
CODE_CHANGE_BYTES = 13   # each further code of a bundle, its gap byte included: 11.6 measured on an
                         # expressive face sampled every frame, 7.6 on a GRID speaker (scripts/bundle_sizes.py)
MARGIN = 0.9             # the plan fills this share of the budget: RTCP, SCTP's own chunks, rounding
SACK_SHARE = 0.6         # SACKs per feature packet of the other side, delayed to every 2nd (and timers)
MIN_REFERENCE_KBPS = 0.3 # below this, no reference stills within the budget


def frames_per_packet(fps: float, every_at_30fps: float) -> float:
    """The frames one packet spans at `fps`: packets as often as every `every_at_30fps`th frame of a 30 fps
    camera sends them (30 / N a second), or every frame where the camera gives fewer. A rate, not a count
    of frames: counted in frames a 60 fps camera would double the payload, and a 25 fps one at N = 2 sent
    12.5 packets a second where the 4 kbps they are sized for holds 15 (it now sends 3 frames of every 5:
    `sampled`)."""
    return max(1.0, every_at_30fps * fps / 30)


def sampled(index: int, frames_per_code: float) -> bool:
    """Whether frame `index` (counted from 0, every frame the camera gave) is one of those taken, one every
    `frames_per_code` frames (fractional: 5/3 takes 3 of every 5), as evenly as whole frames allow; frame 0
    always. A function of the index alone, so that whether the next frame is taken is known before it is
    seen (FeatureEncoder.tracks_next)."""
    rate = 1.0 / frames_per_code
    return math.floor(index * rate + 1e-6) > math.floor((index - 1) * rate + 1e-6)


class BudgetError(ValueError):
    """A budget too small for a call (even the voice alone would not fit)."""


@dataclass(frozen=True)
class WirePlan:
    budget_kbps: float | None
    send_every: float              # one feature packet every N frames (fractional: frames_per_packet)
    codes_per_packet: int          # codes in each packet (sampled every send_every / codes_per_packet frames)
    opus_bps: int
    opus_frame_ms: int
    delayed_sack: bool
    rtcp_spacing: float            # RTCP reports this many times further apart than aiortc's
    reference_gap_s: float | None  # one 1000-byte part of a reference still this often (None: none sent)
    estimate_kbps: dict            # what each kind should cost on the wire, per direction

    def payload_bytes_per_s(self, fps: float) -> float:
        """The feature packets' own bytes a second (no headers) at this plan's rate."""
        return fps / self.send_every * packet_bytes(self.codes_per_packet)

    def summary(self) -> dict:
        return {"budget_kbps": self.budget_kbps, "send_every": round(self.send_every, 3),
                "codes_per_packet": self.codes_per_packet, "opus_bps": self.opus_bps,
                "opus_frame_ms": self.opus_frame_ms, "delayed_sack": self.delayed_sack,
                "rtcp_spacing": self.rtcp_spacing,
                "reference_part_every_s": self.reference_gap_s and round(self.reference_gap_s, 3),
                "estimate_kbps": self.estimate_kbps}


def voice_kbps(bps: int, frame_ms: int, rtcp_spacing: float = 1.0) -> float:
    return (bps + VOICE_HEADERS * 8 * 1000 / frame_ms + RTCP_BPS / rtcp_spacing) / 1000


def packet_bytes(codes: int) -> int:
    """A packet of `codes` codes (a bundle past one: its count byte, then CODE_CHANGE_BYTES a code)."""
    return PACKET_BYTES + (codes - 1) * CODE_CHANGE_BYTES + (codes > 1)


def features_kbps(fps: float, send_every: float, delayed_sack: bool, codes: int = 1) -> float:
    """This side's packets (of `codes` codes each) plus its SACKs for the other side's (a two-way call:
    the same rate both ways)."""
    packets = fps / send_every
    sacks = packets * SACK_SHARE if delayed_sack else packets
    packet = FEATURE_PACKET_WIRE - PACKET_BYTES + packet_bytes(codes)
    return (packets * packet + sacks * SACK_WIRE) * 8 / 1000


def plan(budget_kbps: float | None, fps: float, send_every: int = 1) -> WirePlan:
    """The call's wire plan for a budget (None: no budget; `send_every` as asked, counted at 30 fps:
    frames_per_packet)."""
    asked, send_every = send_every, frames_per_packet(fps, send_every)
    if budget_kbps is None:
        voice = voice_kbps(OPUS_BPS, OPUS_FRAME_MS)
        face = features_kbps(fps, send_every, False)
        return WirePlan(None, send_every, 1, OPUS_BPS, OPUS_FRAME_MS, False, 1.0, 0.04,
                        {"voice": round(voice, 2), "features": round(face, 2)})
    voice = voice_kbps(OPUS_LOW_BPS, OPUS_LOW_FRAME_MS, RTCP_SPACING)
    room = MARGIN * budget_kbps - voice
    spans = (frames_per_packet(fps, n) for n in range(max(1, asked), MAX_SEND_EVERY + 1))
    every = next((span for span in spans if features_kbps(fps, span, True) <= room), None)
    if every is None:
        need = (voice + features_kbps(fps, frames_per_packet(fps, MAX_SEND_EVERY), True)) / MARGIN
        raise BudgetError(f"--budget {budget_kbps:g} kbps is too small: the voice ({voice:.1f} kbps on the "
                          f"wire) and the face at its lowest rate need {need:.1f}")
    # further codes only from what leaves the reference stills their trickle
    codes = max([1] + [c for c in range(2, min(int(every), MAX_BUNDLE) + 1)
                       if features_kbps(fps, every, True, c) <= room - MIN_REFERENCE_KBPS])
    face = features_kbps(fps, every, True, codes)
    spare = room - face                                      # kbps for reference stills
    gap = PART_WIRE * 8 / 1000 / spare if spare >= MIN_REFERENCE_KBPS else None
    return WirePlan(budget_kbps, every, codes, OPUS_LOW_BPS, OPUS_LOW_FRAME_MS, True, RTCP_SPACING, gap,
                    {"voice": round(voice, 2), "features": round(face, 2),
                     "references": round(spare, 2) if gap else 0.0})


# --- `--budget auto`: the budget chosen from what the link shows ---------------------------------------
#
# A call cannot measure a link's capacity, but it sees what too much traffic does to it: the other side's
# RTCP receiver reports say what share of our voice packets it lost since its last report and, with our
# sender reports, the round trip; SCTP's acknowledgements give a smoothed round trip of their own, and
# what its congestion window holds back waits in our own queue. A call over capacity loses packets (a
# policer, a full buffer) or queues them (the round trip climbs over the quietest one seen, or SCTP's
# queue at the sender grows). So the call starts at AUTO_START (a link of a few tens of kbps carries it;
# starting without a budget, 90 kbps, lost most of a 40 kbps link's first seconds and held the still
# back for 16 s behind SCTP's retransmission back-off), steps down a tier when a report shows either,
# two tiers at heavy loss; after a quiet spell it probes a tier up, and a probe that brings
# trouble back within PROBE_FAIL_S doubles the next spell (at most MAX_QUIET_S), as TCP's back-off does.

AUTO = "auto"             # --budget auto
AUTO_TIERS: tuple[float | None, ...] = (None, 64.0, 48.0, 32.0, 24.0)
AUTO_START = 3            # 32 kbps
LOSS_DOWN = 0.05          # a report with this share of our packets lost: step down
LOSS_HEAVY = 0.20         # ... two tiers
RTT_RISE_MS = 150.0       # a round trip this far over the quietest seen: a queue is building
QUEUED_DOWN_S = 0.15      # feature packets this long in our SCTP queue: the link does not carry them
SETTLE_S = 3.0            # after a change, reports this fresh still describe the old rate: not acted on
QUIET_S = 10.0            # without trouble this long: probe a tier up
MAX_QUIET_S = 120.0
PROBE_FAIL_S = 10.0


@dataclass(frozen=True)
class LinkReport:
    """One look at the link: `loss` the share of our packets the other side lost since its previous
    report (None: no new report), `rtt_ms` the round trip (None: not known yet), `queued_s` how long our
    feature packets wait in SCTP's queue."""
    at_s: float
    loss: float | None
    rtt_ms: float | None
    queued_s: float = 0.0


class BudgetChooser:
    """`--budget auto`: which tier of AUTO_TIERS the link allows now (see above). `observe` a LinkReport
    every second or two; it returns the new budget (None: no budget) when the tier changes, else False."""

    def __init__(self, tiers: tuple[float | None, ...] = AUTO_TIERS, start: int = AUTO_START):
        self.tiers, self.tier = tiers, start
        self.changed_s: float | None = None         # the last change of tier
        self.first_s: float | None = None
        self.trouble_s: float | None = None         # the last report that showed trouble
        self.quiet_s = QUIET_S
        self.probed_s: float | None = None          # when the last step up was made
        self.base_rtt_ms: float | None = None
        self.history: list[dict] = []               # every change, and why (STATS.json)

    @property
    def budget_kbps(self) -> float | None:
        return self.tiers[self.tier]

    def trouble(self, report: LinkReport) -> str | None:
        """Why this report says the link is over capacity, or None."""
        if report.rtt_ms is not None:
            self.base_rtt_ms = min(self.base_rtt_ms or report.rtt_ms, report.rtt_ms)
        if report.loss is not None and report.loss >= LOSS_DOWN:
            return f"{report.loss:.0%} of packets lost"
        if report.queued_s >= QUEUED_DOWN_S:
            return f"feature packets queued {report.queued_s * 1000:.0f} ms at the sender"
        if report.rtt_ms is not None and report.rtt_ms >= self.base_rtt_ms + RTT_RISE_MS:
            return f"round trip {report.rtt_ms:.0f} ms, {report.rtt_ms - self.base_rtt_ms:.0f} over its lowest"
        return None

    def observe(self, report: LinkReport) -> float | None | bool:
        now = report.at_s
        why = self.trouble(report)
        settled = self.changed_s is None or now - self.changed_s >= SETTLE_S
        self.first_s = now if self.first_s is None else self.first_s
        if why is not None and settled:
            self.trouble_s = now
            if self.tier + 1 < len(self.tiers):
                if self.probed_s is not None and now - self.probed_s <= PROBE_FAIL_S:
                    self.quiet_s = min(MAX_QUIET_S, self.quiet_s * 2)     # the probe failed: wait longer
                steps = 2 if report.loss is not None and report.loss >= LOSS_HEAVY else 1
                return self._change(min(len(self.tiers) - 1, self.tier + steps), now, why)
        elif why is None and self.tier > 0 and now - max(self.changed_s or self.first_s,
                                                         self.trouble_s or self.first_s) >= self.quiet_s:
            self.probed_s = now
            return self._change(self.tier - 1, now, f"{self.quiet_s:.0f} s without loss or queueing")
        return False

    def _change(self, tier: int, now: float, why: str) -> float | None:
        self.tier, self.changed_s = tier, now
        budget = self.tiers[tier]
        self.history.append({"at_s": round(now, 2), "budget_kbps": budget, "why": why})
        return budget
