"""What a call sends, fitted to a bit rate on the wire (`--budget KBPS`): voice, face and every header.

On a link of a few tens of kbps the headers are most of the cost: every feature packet travels in SCTP
(12 + 16 bytes) inside DTLS (13 + 24) inside UDP/IPv4 (28), 93 bytes around 33 of payload, and the other
side acknowledges it with a SACK of about as many; every voice packet carries RTP, its extensions, the
SRTP tag and UDP/IPv4 (about 65 bytes, measured). So the plan trades packet rate first:

- the voice: Opus at OPUS_LOW_BPS in 60 ms frames (aiortc's fixed 20 ms frames cost 3x the headers), or
  where those leave no room for the face (a budget under about 22 kbps), in 120 ms frames, Opus's longest
  (10.6 kbps on the wire against 14.9; a lost packet is 120 ms of voice);
- the face: one packet every N frames, N the smallest whose packets and their SACKs fit what is left
  (the jitter buffer's cap keeps glass to glass short, and past it the motion is extrapolated); then
  as many codes in each packet as still fit (a bundle: the first in full, the others as entropy-coded
  changes of about CODE_CHANGE_BYTES, wire.py), sampled evenly between packets, so a blink or a closing
  lip between two packets is carried rather than interpolated away; SACKs are delayed to every second
  packet (RFC 4960 6.2);
- RTCP: reports 4x further apart than aiortc's (about a second each way, 1.5 kbps);
- the reference stills: the budget's remainder, paced part by part, each once the one before is
  acknowledged (they arrive later, never burst, and never hold the feature packets back: sender.stream);
- the still: at the best JPEG quality that the room beside the voice carries in STILL_WITHIN_S (no feature
  packets go before it): from 32 kbps the full 92, at 16 the lowest, 45 (7.7 KB against 15.3: through a
  16 kbit/s policer it arrived 12 s after the call connected, at 92 25 s; README "Within a budget").

Without a budget, a call sends every frame (every 2nd from a 60 fps camera), 16 kbps Opus in 20 ms frames,
references at 25 KB/s.
Each direction of a two-way call is planned alike; the figures are per direction."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .wire import MAX_BUNDLE, MAX_IDENTITY, PART_BYTES

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
OPUS_LONGEST_FRAME_MS = 120                              # ... within one too small for that and a face
MAX_SEND_EVERY = 12
CODE_CHANGE_BYTES = 13   # each further code of a bundle, its gap byte included: 11.6 measured on an
                         # expressive face sampled every frame, 7.6 on a GRID speaker (scripts/bundle_sizes.py)
MARGIN = 0.9             # the plan fills this share of the budget: RTCP, SCTP's own chunks, rounding
SACK_SHARE = 0.6         # SACKs per feature packet of the other side, delayed to every 2nd (and timers)
MIN_REFERENCE_KBPS = 0.3 # below this, no reference stills within the budget
STILL_WITHIN_S = 12.0    # the still fits what is left beside the voice in this long


def kbps(nbytes: int, seconds: float) -> float:
    """Kilobits a second, rounded to bits; 0 over no time (what the wire counters report)."""
    return round(nbytes * 8 / seconds / 1000, 3) if seconds > 0 else 0.0


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
    still_bytes: int = MAX_IDENTITY  # the still's message at most (wire.encode_identity's fit_bytes)

    def payload_bytes_per_s(self, fps: float) -> float:
        """The feature packets' own bytes a second (no headers) at this plan's rate."""
        return fps / self.send_every * packet_bytes(self.codes_per_packet)

    def still_part_gap_s(self) -> float:
        """A part of a still in parts (a sharper copy, sender.stream) this often: at the pace at which the
        room beside the voice carries still_bytes in STILL_WITHIN_S, the pace its first copy was fitted to."""
        return STILL_WITHIN_S * PART_BYTES / self.still_bytes

    def summary(self) -> dict:
        return {"budget_kbps": self.budget_kbps, "send_every": round(self.send_every, 3),
                "codes_per_packet": self.codes_per_packet, "opus_bps": self.opus_bps,
                "opus_frame_ms": self.opus_frame_ms, "delayed_sack": self.delayed_sack,
                "rtcp_spacing": self.rtcp_spacing,
                "reference_part_every_s": self.reference_gap_s and round(self.reference_gap_s, 3),
                "estimate_kbps": self.estimate_kbps, "still_bytes": self.still_bytes}


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
    for frame_ms in (OPUS_LOW_FRAME_MS, OPUS_LONGEST_FRAME_MS):
        voice = voice_kbps(OPUS_LOW_BPS, frame_ms, RTCP_SPACING)
        room = MARGIN * budget_kbps - voice
        spans = (frames_per_packet(fps, n) for n in range(max(1, asked), MAX_SEND_EVERY + 1))
        every = next((span for span in spans if features_kbps(fps, span, True) <= room), None)
        if every is not None:
            break
    else:
        need = (voice + features_kbps(fps, frames_per_packet(fps, MAX_SEND_EVERY), True)) / MARGIN
        raise BudgetError(f"--budget {budget_kbps:g} kbps is too small: the voice ({voice:.1f} kbps on the "
                          f"wire in {frame_ms} ms frames) and the face at its lowest rate need {need:.1f}")
    # further codes only from what leaves the reference stills their trickle
    codes = max([1] + [c for c in range(2, min(int(every), MAX_BUNDLE) + 1)
                       if features_kbps(fps, every, True, c) <= room - MIN_REFERENCE_KBPS])
    face = features_kbps(fps, every, True, codes)
    spare = room - face                                      # kbps for reference stills
    gap = PART_WIRE * 8 / 1000 / spare if spare >= MIN_REFERENCE_KBPS else None
    still = min(MAX_IDENTITY, int(room * 1000 / 8 * STILL_WITHIN_S))
    return WirePlan(budget_kbps, every, codes, OPUS_LOW_BPS, frame_ms, True, RTCP_SPACING, gap,
                    {"voice": round(voice, 2), "features": round(face, 2),
                     "references": round(spare, 2) if gap else 0.0}, still)


# --- `--budget auto`: the budget chosen from what the link shows ---------------------------------------
#
# A call cannot measure a link's capacity, but it sees what too much traffic does to it: the other side's
# RTCP receiver reports say what share of our voice packets it lost since its last report and, with our
# sender reports, the round trip; without a voice SCTP's acknowledgements give one (rtc.sctp_round_trip), and
# what its congestion window holds back waits in our own queue. A call over capacity loses packets (a
# policer, a full buffer) or queues them (the round trip climbs over the quietest one seen, or SCTP's
# queue at the sender grows). The quietest is SCTP's or RTCP's shortest since the call's first packets: on
# a slow link with a deep buffer the still fills the queue before the first RTCP report, and a floor taken
# from the reports alone (579 ms) let a queue of 836 ms pass as 257 over it. So the call starts at
# AUTO_START (a link of a few tens of kbps carries it;
# starting without a budget, 90 kbps, lost most of a 40 kbps link's first seconds and held the still
# back for 16 s behind SCTP's retransmission back-off), steps down a tier when a report shows either,
# two tiers at heavy loss (but the lowest, 16 kbps, only one at a time: a lone report of 20 packets can
# show 20 % where a policer drops 12 %, and 16 kbps delays the still by ~25 s); after a quiet spell it
# probes a tier up (once a step down has been judged), and a probe that brings trouble back within
# PROBE_FAIL_S goes back one tier and doubles the next spell (at most MAX_QUIET_S), as TCP's back-off does.
#
# Loss counts only when it is clearly more than chance: a report covers about 20 voice packets, one lost
# is 5 %, so a report alone must lose far more (LONE_REPORT_SPREAD standard deviations), or the latest
# reports of JUDGED_PACKETS together LOSS_SPREAD of them, over LOSS_DOWN. And a poor radio link loses
# packets at random whatever is sent: taken for congestion, that loss held the call at the lowest tier for
# good (no quiet spell ever came), where one lost packet of five frames' is a concealed gap. What a step
# down does tells them apart. A policer that dropped a share L1 of rate R1 drops 1 - (1 - L1) R1 / R2 of a
# lower rate R2 (nothing, once under it; L1 taken a standard deviation high, as the step may have come on
# one report's 20 packets); the link's own loss stays L1. Clearly more than the policer's
# figure at the lower tier (judged on its reports, again at each while the loss goes on) is the link's own,
# and from then on loss counts over that share (which falls as later reports show less; only a step down
# shows more); about as much as before, and the step was for nothing: the call goes back to the tier it
# left. This holds whatever the step was made for: one for a round trip that an event-loop stall had
# lengthened once stranded a call on a lossy link at the lowest tier too. scripts/budget_on_links.py tries
# the chooser on simulated links.

AUTO = "auto"             # --budget auto
AUTO_TIERS: tuple[float | None, ...] = (None, 64.0, 48.0, 32.0, 24.0, 16.0)
AUTO_START = 3            # 32 kbps
LOSS_DOWN = 0.05          # this share of our packets lost over the link's own, and over chance: step down
LOSS_HEAVY = 0.20         # ... two tiers
RTT_RISE_MS = 150.0       # a round trip this far over the quietest seen: a queue is building
QUEUED_DOWN_S = 0.15      # feature packets this long in our SCTP queue: the link does not carry them
SETTLE_S = 3.0            # after a change, reports this fresh still describe the old rate: not acted on
QUIET_S = 10.0            # without trouble this long: probe a tier up
MAX_QUIET_S = 120.0
PROBE_FAIL_S = 10.0
LOSS_SPREAD = 2.5         # chance: this many standard deviations of the share lost in reports together
LONE_REPORT_SPREAD = 4.0  # ... in one report alone
SPREAD_FLOOR = 0.02       # the spread of a link that seems to lose nothing: as if it lost 2 %
JUDGED_PACKETS = 60       # a share lost is judged on at least this many packets' reports (about 20 each)
ENDURED_PACKETS = 180     # after a step down, as a policer's over this many packets: the step was right
LINK_LOSS_PACKETS = 300   # the link's own loss falls to the share lost in this many packets of a tier
REPORT_PACKETS = 30       # a report that does not say how many packets it covers counts as this many


@dataclass(frozen=True)
class LinkReport:
    """One look at the link: `loss` the share of our packets the other side lost since its previous
    report (None: no new report), `rtt_ms` the round trip (None: not known yet), `queued_s` how long our
    feature packets wait in SCTP's queue, `packets` how many of ours the report covers (None: unknown),
    `lowest_rtt_ms` the shortest round trip measured since the call began (None: only `rtt_ms`s count)."""
    at_s: float
    loss: float | None
    rtt_ms: float | None
    queued_s: float = 0.0
    packets: int | None = None
    lowest_rtt_ms: float | None = None


def tier_kbps(budget_kbps: float | None) -> float:
    """What a tier sends on the wire, about: its budget, or without one the plan's own estimate (30 fps)."""
    return budget_kbps if budget_kbps is not None else sum(plan(None, 30.0).estimate_kbps.values())


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
        self.link_loss = 0.0                        # the link's own loss, once a step down showed it
        self.left: tuple[int, float, int] | None = None   # a step down: the tier it left, and the share
                                                          # lost there, of how many packets
        self.reports: list[tuple[float, int]] = []  # (loss, packets) at this tier, settled, newest last
        self.reported_s = -math.inf                 # the last settled report on loss
        self.history: list[dict] = []               # every change, and why (STATS.json)

    @property
    def budget_kbps(self) -> float | None:
        return self.tiers[self.tier]

    def start_below(self, carried_kbps: float | None) -> str | None:
        """Before the first report: the link carried `carried_kbps` on the wire while the still went (its
        bytes over the time to the receipt, plus the voice beside it; None: no receipt). That is a floor on
        what it carries (retransmissions and the receiver's own work count in the time), so the call starts
        at the highest tier whose plan fits under it, its first tier at most (through a 16 kbit/s policer a
        call started at 32 lost 27 %, took the loss at 24 for the link's own and came down to 16 only at 24 s,
        a stretch of 5.4 s concealed on the way: one run). Why, when the tier is lower than its first; else None."""
        if carried_kbps is None:
            return None
        tier = next((i for i in range(self.tier, len(self.tiers)) if MARGIN * tier_kbps(self.tiers[i]) <= carried_kbps),
                    len(self.tiers) - 1)
        if tier == self.tier:
            return None
        self.tier = tier
        return f"the still took the link {carried_kbps:.1f} kbps with the voice"

    def trouble(self, report: LinkReport) -> str | None:
        """Why this report says the link is over capacity, or None."""
        for rtt in (report.rtt_ms, report.lowest_rtt_ms):
            if rtt is not None:
                self.base_rtt_ms = rtt if self.base_rtt_ms is None else min(self.base_rtt_ms, rtt)
        if (lost := self.lost_too_many(report)) is not None:
            own = f", {self.link_loss:.0%} the link's own" if self.link_loss else ""
            return f"{lost:.0%} of packets lost{own}"
        if report.queued_s >= QUEUED_DOWN_S:
            return f"feature packets queued {report.queued_s * 1000:.0f} ms at the sender"
        if report.rtt_ms is not None and report.rtt_ms >= self.base_rtt_ms + RTT_RISE_MS:
            return f"round trip {report.rtt_ms:.0f} ms, {report.rtt_ms - self.base_rtt_ms:.0f} over its lowest"
        return None

    def lost_too_many(self, report: LinkReport) -> float | None:
        """The share lost that makes this report trouble, or None: clearly beyond the link's own loss (none
        until a step down shows some), in this report alone or in this tier's latest reports together
        (a report covers about 20 voice packets: one lost is 5 %; on a link that loses 10 % at random,
        one report in a hundred loses 30 %)."""
        if report.loss is None:
            return None
        if report.loss >= beyond(self.link_loss, report.packets, LONE_REPORT_SPREAD):
            return report.loss
        judged = self.recent_loss(JUDGED_PACKETS)
        if judged is not None and judged[0] >= beyond(self.link_loss, judged[1]):
            return judged[0]
        return None

    def recent_loss(self, packets: int) -> tuple[float, int] | None:
        """The share lost over this tier's latest reports of at least `packets` packets, and how many
        they were (None: not so many yet)."""
        counted = 0
        for first in range(len(self.reports) - 1, -1, -1):
            counted += self.reports[first][1]
            if counted >= packets:
                return pooled(self.reports[first:])
        return None

    def tier_loss(self) -> tuple[float, int]:
        """The share lost over all this tier's reports (settled), and how many packets they counted."""
        return pooled(self.reports)

    def quiet_for(self, now: float) -> float:
        """Seconds since the last change of tier or report of trouble (0 before the first report)."""
        if self.first_s is None:
            return 0.0
        return now - max(self.changed_s or self.first_s, self.trouble_s or self.first_s)

    def judged(self) -> bool:
        """Whether a step down has been judged (or could be): until this tier's reports count
        JUDGED_PACKETS, no probe up (at 16 kbps, with eight voice packets a second, that takes longer than
        QUIET_S: a probe before it left the step unjudged, and the call back at 16 for good)."""
        return self.left is None or self.tier_loss()[1] >= JUDGED_PACKETS

    def judge_step_down(self, now: float) -> float | None | bool:
        """After a step down (`left`, for whatever trouble), this tier's reports so far: more lost than a
        policer would drop of this rate is the link's own loss, and if about as much as before (at least
        half, and within chance), the step was for nothing: back (the change, else False). Else after
        ENDURED_PACKETS the step was right, and loss that goes on at this rate is the link's own."""
        (left_tier, left_loss, left_packets), (loss, packets) = self.left, self.tier_loss()
        if packets < JUDGED_PACKETS:
            return False
        ratio = tier_kbps(self.tiers[left_tier]) / tier_kbps(self.budget_kbps)
        policed = max(self.link_loss, 1 - (1 - left_loss - chance(left_loss, left_packets, 1.0)) * ratio)
        if loss > policed + chance(policed, packets) and loss < beyond(left_loss, packets):
            self.link_loss, self.left = loss, None
            if loss > max(left_loss / 2, left_loss - chance(left_loss, left_packets)):
                self.probed_s = now                     # back up: a probe, if the loss says otherwise
                return self._change(left_tier, now, f"{loss:.0%} of packets lost at {_kbps(self.budget_kbps)}"
                                    f" as {left_loss:.0%} at {_kbps(self.tiers[left_tier])}: the link's own loss")
        elif packets >= ENDURED_PACKETS:
            if loss >= beyond(self.link_loss, packets):
                self.link_loss = loss   # the loss goes on, less than a policer's: the link's own from here
            self.left = None            # (probes up will show whether more was ours)
        return False

    def observe(self, report: LinkReport) -> float | None | bool:
        now = report.at_s
        settled = self.changed_s is None or now - self.changed_s >= SETTLE_S
        self.first_s = now if self.first_s is None else self.first_s
        if report.loss is not None:
            # before the change settled, and in the first report after, some packets were the old rate's
            fresh = settled and (self.changed_s is None or self.changed_s < self.reported_s)
            if settled:
                self.reported_s = now
            if fresh:
                self.reports.append((report.loss, report.packets or REPORT_PACKETS))
            else:
                report = replace(report, loss=None)
        if self.left is not None and report.loss is not None:
            if (change := self.judge_step_down(now)) is not False:
                return change
            if self.left is not None and self.tier_loss()[1] < JUDGED_PACKETS and \
                    report.loss < beyond(self.left[1], report.packets):
                report = replace(report, loss=None)     # judged when enough has come, unless far worse
        why = self.trouble(report)
        if why is None and self.link_loss and (recent := self.recent_loss(LINK_LOSS_PACKETS)) is not None:
            self.link_loss = min(self.link_loss, recent[0])   # more is judged only by a step down
        if why is not None and settled:
            self.trouble_s = now
            if self.tier + 1 < len(self.tiers):
                probe_failed = self.probed_s is not None and now - self.probed_s <= PROBE_FAIL_S
                if probe_failed:
                    self.quiet_s = min(MAX_QUIET_S, self.quiet_s * 2)     # wait longer, back where it was
                lost = self.lost_too_many(report)
                heavy = lost is not None and lost - self.link_loss >= LOSS_HEAVY
                steps = 2 if heavy and not probe_failed and self.tier + 2 < len(self.tiers) - 1 else 1
                # judged against the last tier that reported: a step from one that had not yet (a queue
                # 3 s after a step for loss) keeps the judgement pending, else it stranded a lossy call at 16
                left = (self.tier, *self.tier_loss()) if self.reports else self.left
                return self._change(min(len(self.tiers) - 1, self.tier + steps), now, why, left)
        elif why is None and self.tier > 0 and self.judged() and self.quiet_for(now) >= self.quiet_s:
            self.probed_s = now
            return self._change(self.tier - 1, now, f"{self.quiet_s:.0f} s without loss or queueing")
        return False

    def _change(self, tier: int, now: float, why: str, left: tuple | None = None) -> float | None:
        self.tier, self.changed_s, self.reports, self.left = tier, now, [], left
        budget = self.tiers[tier]
        self.history.append({"at_s": round(now, 2), "budget_kbps": budget, "why": why})
        return budget


def pooled(reports: list[tuple[float, int]]) -> tuple[float, int]:
    """The share lost over (share, packets) reports together, and how many packets they counted."""
    counted = sum(n for _, n in reports)
    return sum(loss * n for loss, n in reports) / max(1, counted), counted


def chance(loss: float, packets: int | None, spread: float = LOSS_SPREAD) -> float:
    """`spread` standard deviations of the share lost in `packets` packets on a link that loses `loss` of
    them at random (at least SPREAD_FLOOR's)."""
    share = max(loss, SPREAD_FLOOR)
    return spread * math.sqrt(share * (1 - share) / (packets or REPORT_PACKETS))


def beyond(loss: float, packets: int | None, spread: float = LOSS_SPREAD) -> float:
    """A share lost clearly beyond `loss`: LOSS_DOWN over it, and over chance."""
    return loss + LOSS_DOWN + chance(loss, packets, spread)


def _kbps(budget_kbps: float | None) -> str:
    return f"{budget_kbps:g} kbps" if budget_kbps is not None else "no budget"
