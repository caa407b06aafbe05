"""`--budget auto`: the budget follows what the link shows.

The chooser's rules on reports made here, then a real call on a real narrow link: a network namespace
whose iptables polices UDP to 24 kbit/s per destination port (scripts/policed_link.py), where the call's
starting tier (32 kbps, about 27 on the wire) loses packets, and `--budget auto` must step down to the tier
the link carries, with the voice still flowing after each change of Opus encoder."""

import itertools
import json
import os
import subprocess
import sys

import pytest

from callsynth.budget import (
    AUTO_START,
    AUTO_TIERS,
    MAX_QUIET_S,
    QUIET_S,
    RTT_RISE_MS,
    SETTLE_S,
    BudgetChooser,
    LinkReport,
    plan,
    tier_kbps,
)

from callsynth.split import data_root

from .conftest import namespace_tools_missing, the_voice_went_on

TOP = 0

LONG_CLIP = data_root() / "video/lia_vox/obama.mp4"       # 47 s with its voice


def test_a_clean_link_climbs_to_no_budget_and_stays():
    chooser = BudgetChooser()
    assert chooser.budget_kbps == 32                     # a safe start for links of a few tens of kbps
    climbed = [chooser.observe(LinkReport(t, 0.0, 20.0)) for t in range(1, 100)]
    assert [b for b in climbed if b is not False] == [48, 64, None]
    assert climbed.index(None) + 1 == 1 + 3 * QUIET_S and chooser.budget_kbps is None   # t = index + 1


def test_loss_steps_down_one_tier_and_heavy_loss_two():
    chooser = BudgetChooser(start=TOP)
    # one lost packet of a report of 20 is 5 %: a report alone must lose far more, or several together
    assert chooser.observe(LinkReport(1.0, 0.10, 20.0, packets=20)) is False
    assert chooser.observe(LinkReport(2.0, 0.10, 20.0, packets=20)) is False
    assert chooser.observe(LinkReport(3.0, 0.10, 20.0, packets=20)) == AUTO_TIERS[1]
    assert "10% of packets lost" in chooser.history[-1]["why"]
    # reports within SETTLE_S still describe the old rate, and so may the first after it
    assert chooser.observe(LinkReport(3.0 + SETTLE_S / 2, 0.40, 20.0, packets=20)) is False
    assert chooser.observe(LinkReport(3.0 + SETTLE_S, 0.40, 20.0, packets=20)) is False
    assert chooser.observe(LinkReport(4.0 + SETTLE_S, 0.40, 20.0, packets=20)) == AUTO_TIERS[3]
    assert "40% of packets lost" in chooser.history[-1]["why"]
    assert chooser.link_loss == 0                      # more loss at a lower rate: the link carries less


def test_loss_that_a_step_down_did_not_reduce_is_the_link_s_own():
    """A radio link that loses 10 % of what is sent, whatever the rate: the step down it first makes
    comes back, and from then on only loss clearly beyond the link's own steps down."""
    chooser = BudgetChooser()
    assert chooser.observe(LinkReport(1.0, 0.10, 20.0, packets=60)) == 24
    assert chooser.observe(LinkReport(1.0 + SETTLE_S, 0.11, 20.0, packets=60)) is False   # may be the old rate's
    assert chooser.observe(LinkReport(2.0 + SETTLE_S, 0.09, 20.0, packets=60)) == 32
    assert "9% of packets lost at 24 kbps as 10% at 32 kbps: the link's own loss" in chooser.history[-1]["why"]
    assert chooser.link_loss == pytest.approx(0.09)
    t, changes = 2.0 + SETTLE_S, []
    for loss in [0.12, 0.08, 0.16, 0.10, 0.11, 0.09, 0.13, 0.07, 0.10, 0.12]:   # a report of 60 each second
        t += 1.0
        if (budget := chooser.observe(LinkReport(t, loss, 20.0, packets=60))) is not False:
            changes.append(budget)
    assert changes == [48]                            # a quiet spell at the link's own loss: a probe up
    assert chooser.observe(LinkReport(t + SETTLE_S, 0.35, 20.0, packets=60)) is False   # the old rate's
    assert chooser.observe(LinkReport(t + SETTLE_S + 1, 0.35, 20.0, packets=60)) == 32   # beyond it: trouble
    assert "9% the link's own" in chooser.history[-1]["why"]


def test_the_lowest_tier_comes_one_step_at_a_time_and_is_judged_before_a_probe():
    """16 kbps (the voice in 120 ms frames, the still ~25 s late) only from 24: heavy loss at 32 steps one
    tier, as one report of 20 packets can show 45 % where a policer drops 12 %. And at 16 the voice's 8
    packets a second take over QUIET_S to count the 60 a step down is judged on: no probe up before that
    (one came first, and the call was back at 16 with the step never judged)."""
    chooser = BudgetChooser()
    assert chooser.observe(LinkReport(1.0, 0.45, 20.0, packets=20)) == 24        # heavy, yet one tier
    assert chooser.observe(LinkReport(1.0 + SETTLE_S, 0.25, 20.0, packets=60)) is False   # the old rate's
    assert chooser.observe(LinkReport(2.0 + SETTLE_S, 0.25, 20.0, packets=60)) == 16
    down_s = 2.0 + SETTLE_S
    ups = {t: chooser.observe(LinkReport(down_s + t, 0.0, 20.0, packets=8)) for t in range(3, 13)}
    assert [t for t, b in ups.items() if b is not False] == [11]     # 10 s quiet, but 56 packets: not yet
    assert ups[11] == 24 and chooser.history[-1]["why"].endswith("without loss or queueing")


def test_a_step_down_for_the_round_trip_on_a_lossy_link_comes_back():
    """A round trip lengthened once (an event-loop stall on either side: RTCP's includes them) on a link
    that loses 10 % at random: at the lowest tier the loss went on, no quiet spell came, and the call
    stayed there (a real call through scripts/policed_link.py --loss 10, 2026-12-02)."""
    chooser = BudgetChooser()
    for t in (1.0, 2.0, 3.0):
        assert chooser.observe(LinkReport(t, 0.05, 2.0, packets=20)) is False
    assert chooser.observe(LinkReport(4.0, 0.05, 228.0, packets=20)) == 24
    # the first report after settling may count the old rate's packets; then 60 of the new
    changes = [chooser.observe(LinkReport(4.0 + SETTLE_S + i, loss, 2.0, packets=20))
               for i, loss in enumerate((0.10, 0.05, 0.10, 0.15))]
    assert changes == [False, False, False, 32]
    assert "10% of packets lost at 24 kbps as 5% at 32 kbps: the link's own loss" in chooser.history[-1]["why"]


def test_a_second_step_before_the_first_was_judged_is_judged_with_it():
    """A link that loses 10 % at random: a step down for its loss, and 3 s later (no report of 24 kbps yet)
    another for a queue at the sender (SCTP's window, shrunk by that loss) to 16. The second step left no
    loss to judge by, and the first's judgement was dropped: the call stayed at 16, the lowest, for the rest
    of a real call (scripts/policed_link.py --loss 10, 2026-12-03). Judged against 32's loss, it comes back."""
    chooser = BudgetChooser()
    assert chooser.observe(LinkReport(1.0, 0.10, 20.0, packets=60)) == 24
    assert chooser.observe(LinkReport(1.0 + SETTLE_S, None, 20.0, queued_s=0.25)) == 16
    changes = [chooser.observe(LinkReport(1.0 + SETTLE_S + i, 0.10, 20.0, packets=20)) for i in range(1, 8)]
    assert [b for b in changes if b is not False] == [32], chooser.history
    assert "10% of packets lost at 16 kbps as 10% at 32 kbps: the link's own loss" in chooser.history[-1]["why"]


def test_a_step_down_that_ends_the_loss_was_right():
    """A policer: the loss of 32 kbps is gone at 24, as a policer's would be: it stays, and loss
    counts from nothing again."""
    chooser = BudgetChooser()
    assert chooser.observe(LinkReport(1.0, 0.15, 20.0, packets=60)) == 24
    for t in (1.0 + SETTLE_S, 2.0 + SETTLE_S, 3.0 + SETTLE_S, 4.0 + SETTLE_S):
        assert chooser.observe(LinkReport(t, 0.0, 20.0, packets=60)) is False
    assert chooser.link_loss == 0 and chooser.left is None          # judged: the first is the old rate's


def test_on_simulated_links_the_budget_is_the_one_the_link_carries():
    """scripts/budget_on_links.py: 3 calls of 5 minutes on each of its links. Random loss alone: no budget
    most of the time (the chooser of 2026-12-01 spent 89-100 % of it at 24 kbps from 2 % loss on, as it did
    on a real link: README); a policer alone: its tier, as before, 16 kbps under about 20; both: the tier
    under the policer."""
    run = subprocess.run([sys.executable, "scripts/budget_on_links.py", "--seeds", "3", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    share = {(row["own_loss"], row["policed_kbps"]): row["share_of_time"] for row in json.loads(run.stdout)}
    for own_loss in (0.02, 0.05, 0.10, 0.20):
        assert share[own_loss, None]["none"] >= 0.65, share[own_loss, None]
    assert share[0.0, 24.0]["24"] >= 0.8 and share[0.0, 20.0]["24"] >= 0.8
    assert share[0.0, 16.0]["16"] >= 0.8 and share[0.0, 24.0]["16"] <= 0.05
    assert share[0.0, 40.0]["48"] >= 0.8
    assert share[0.10, 40.0]["48"] >= 0.6 and share[0.10, 28.0]["32"] >= 0.6


def test_a_growing_round_trip_or_a_queue_at_the_sender_steps_down():
    chooser = BudgetChooser(start=TOP)
    assert chooser.observe(LinkReport(1.0, 0.0, 30.0)) is False
    assert chooser.observe(LinkReport(2.0, 0.0, 200.0)) == AUTO_TIERS[1]      # 170 ms over the lowest
    assert "round trip" in chooser.history[-1]["why"]
    assert chooser.observe(LinkReport(2.0 + SETTLE_S, None, 40.0, queued_s=0.5)) == AUTO_TIERS[2]
    assert "queued" in chooser.history[-1]["why"]


def test_a_queue_that_filled_before_the_first_report_is_still_a_queue():
    """On a slow link with a deep buffer the still fills the queue before RTCP's first report: every report's
    round trip is long, and one taken as the floor let a queue of 836 ms pass as 257 ms over it (a two-way
    call through `policed_link.py --queue 32` sat at 32 kbps at 0.4-0.8 s glass to glass). The floor is the
    shortest measured since the call's first packets, which LinkWatch passes on."""
    chooser = BudgetChooser(start=2)
    assert [chooser.observe(LinkReport(t, 0.0, 600.0 + 20 * t)) for t in range(1, 8)] == [False] * 7
    chooser = BudgetChooser(start=2)
    assert chooser.observe(LinkReport(1.0, 0.0, 620.0, lowest_rtt_ms=4.0)) == AUTO_TIERS[3]
    assert chooser.history[-1]["why"] == "round trip 620 ms, 616 over its lowest"


def test_it_probes_up_after_a_quiet_spell_and_waits_longer_after_a_failed_probe():
    chooser = BudgetChooser(start=TOP)
    chooser.observe(LinkReport(1.0, 0.1, 20.0, packets=60))          # down to AUTO_TIERS[1]
    t, changes = 1.0, []
    while t < 200:
        t += 1.0
        # the link carries the first tier down, not the top
        budget = chooser.observe(LinkReport(t, 0.1 if chooser.tier == 0 else 0.0, 20.0, packets=60))
        if budget is not False:
            changes.append((t, budget))
    ups = [t for t, budget in changes if budget is None]
    assert ups[0] == 1.0 + QUIET_S                                    # the first probe after QUIET_S
    assert ups[1] - ups[0] >= 2 * QUIET_S                             # failed: the next spell doubled
    assert all(b - a <= MAX_QUIET_S + SETTLE_S for a, b in itertools.pairwise(ups))
    assert chooser.budget_kbps == AUTO_TIERS[1] or chooser.tier == 0


def test_a_still_that_was_slow_to_arrive_starts_the_call_at_a_tier_the_link_carried():
    """`--budget auto` sends the still at the lowest tier's plan; what the link carried while it went is a
    floor on its capacity, and the chooser starts no higher than a tier whose plan fits under it."""
    assert BudgetChooser().start_below(None) is None                 # no receipt: the first tier
    quick = BudgetChooser()
    assert quick.start_below(7677 * 8 / 30 + 10.6) is None and quick.budget_kbps == AUTO_TIERS[AUTO_START]
    slow = BudgetChooser()                                            # 7.7 KB in 10 s beside the voice
    assert "16.7 kbps" in slow.start_below(7677 * 8 / 10_000 + 10.6) and slow.budget_kbps == 16
    middle = BudgetChooser()
    assert middle.start_below(23.0) and middle.budget_kbps == 24
    worse = BudgetChooser()                                           # under even the lowest tier's plan
    assert worse.start_below(11.0) and worse.budget_kbps == AUTO_TIERS[-1]


def test_every_tier_has_a_plan():
    for fps in (15.0, 25.0, 30.0):
        for budget in AUTO_TIERS:
            assert plan(budget, fps).send_every >= 1


def _policing_missing() -> str | None:
    if (missing := namespace_tools_missing()) is not None:
        return missing
    if not LONG_CLIP.exists():
        return f"{LONG_CLIP} is missing"
    return None


def _demo(out, link: list[str] | None, *args: str) -> str:
    """`callsynth demo ARGS --out OUT` of LONG_CLIP, with `--model warp`, through scripts/policed_link.py with
    `link`'s options (none: on loopback): what it printed."""
    through = [sys.executable, "scripts/policed_link.py", *link, "--timeout", "240", "--"] if link else []
    run = subprocess.run(
        [*through, sys.executable, "-m", "callsynth.cli", "demo", "--video", str(LONG_CLIP), "--model", "warp",
         *args, "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, CALLSYNTH_DATA=str(data_root())))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def _auto_budget_call(tmp_path, link: list[str], frames: int, budget: str = "auto") -> tuple[str, dict, dict]:
    """`demo --budget auto` (or `budget`) of LONG_CLIP through scripts/policed_link.py with `link`'s options:
    what the link printed, the sender's and the receiver's stats."""
    out = tmp_path / "call"
    said = _demo(out, link, "--budget", budget, "--max-frames", str(frames))
    stats = json.loads((out / "STATS.json").read_text())
    return said, stats["sender"], stats["receiver"]


def test_auto_budget_finds_what_a_24_kbps_link_carries(tmp_path):
    """33 s through a 24 kbit/s policer: the call comes down to a tier the link carries, and the face goes
    on through the probes up and the stills that go in parts (a reference still, the sharper still): each
    part waits for the one before to be acknowledged, so that a big datagram the full link keeps dropping
    holds back only itself. Sent in one burst, the sharper still held the feature packets in SCTP's queue
    behind it, and every frame was concealed for 3.9-15 s in each of 4 runs of 2026-12-03 (0.13-0.2 s at
    most once paced, 11 runs)."""
    said, sender, receiver = _auto_budget_call(tmp_path, ["--kbps", "24"], 1000)
    assert "dropped" in said                             # the policer was there and did drop
    changes = sender["plan_changes"]
    # it came down to a tier that fits 24 kbps on the wire, and said why: 24, or 32 (once the reference
    # stills are sent, 32's plan leaves about 20 kbps on the wire: in some runs its first 10 s fitted under
    # the policer, a probe to 48 failed, and a failed probe goes back to the tier it came from)
    down = [c for c in changes if c["budget_kbps"] in (24, 32) and ("lost" in c["why"] or "queued" in c["why"])]
    assert down, changes
    # at the end: there, or probing up (after a quiet spell, or back where loss that looked the link's own
    # began)
    before = changes[-2]["budget_kbps"] if len(changes) > 1 else AUTO_TIERS[AUTO_START]
    assert sender["wire_plan"]["budget_kbps"] in (24, 32) \
        or tier_kbps(changes[-1]["budget_kbps"]) > tier_kbps(before), changes
    assert receiver["longest_concealed_ms"] < 1500, receiver["longest_concealed_ms"]
    # the part that the full link drops holds SCTP's cumulative acknowledgement back, and every feature
    # packet after it was a gap block of its own in the receiver's SACKs: 10.1-11.3 kbps of them came back
    # (and growing), 7.2-7.3 with the newest MAX_SACK_GAPS only (2 runs each)
    assert sender["returned_kbps"]["data"] < 9, sender["returned_kbps"]
    the_voice_went_on(receiver)
    # packets that came before the still (held back by the link) are the only ones refused
    # (how many packets depends on how fast the machine tracks: 110 here, 7 on one a quarter as fast)
    assert receiver["features"]["packets"] > 0 and set(receiver["rejected_packets"]) <= {"early"}


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def test_a_16_kbps_budget_carries_the_voice_and_the_face(tmp_path):
    """Under about 22 kbps the voice goes in Opus's longest frames, 120 ms (10.6 kbps on the wire against
    14.9 in 60 ms ones), and the face in one packet every 12 frames: 16 kbps carries a call that was refused
    ("too small"); the still at the JPEG quality that room carries (through a 16 kbit/s policer it took
    25 s at 92, 12 s at 45: README). On loopback."""
    _, sender, receiver = _auto_budget_call(tmp_path, None, 300, budget="16")
    assert sender["wire_plan"]["opus_frame_ms"] == 120 and sender["wire_plan"]["budget_kbps"] == 16
    assert sender["identity_bytes"] < 10_000                # at 92 it was 15,292 bytes
    the_voice_went_on(receiver)
    assert receiver["on_wire"]["total_kbps"] <= 16, receiver["on_wire"]     # voice, face, every header
    assert receiver["features"]["packets"] >= 0.9 * sender["packets_sent"] > 0
    assert not receiver["rejected_packets"]


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def test_through_a_16_kbps_link_the_still_goes_beside_the_lowest_tier_s_voice(tmp_path):
    """`--budget auto` sends the still with the lowest tier's plan (the voice in 120 ms frames), and the
    call starts at the tier its delivery showed the link carries. With the voice at the first tier, 32 kbps,
    the policer shared between voice and data left the still ~1 kbps: it was not through in the 30 s the
    features wait for it (2 runs, README "Within a budget"); now 10-11 s (3 runs)."""
    said, sender, receiver = _auto_budget_call(tmp_path, ["--kbps", "16"], 300)
    assert "dropped" in said
    assert sender["still_delivery_ms"] is not None and sender["still_delivery_ms"] < 20_000, sender["still_delivery_ms"]
    first = sender["plan_changes"][0]
    assert first["budget_kbps"] == 16 and "the still took the link" in first["why"], sender["plan_changes"]
    assert receiver["features"]["packets"] > 0 and not receiver["rejected_packets"]
    the_voice_went_on(receiver)


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def test_through_a_16_kbps_link_both_sides_of_a_two_way_call_start_where_their_still_showed(tmp_path):
    """In a two-way call each side's receipt for the other's still waits behind its own still on its
    ordered identity channel, so through a narrow link a side can see its still acknowledged by SCTP long
    before it is confirmed: that time counts as its delivery (one side had no figure and started at 32)."""
    out = tmp_path / "call"
    _demo(out, ["--kbps", "16"], "--two-way", "--video2", str(data_root() / "video/hdtf/WDA_KatieHill_000.mp4"),
          "--budget", "auto", "--max-frames", "300")
    for side in "ab":
        sent = json.loads((out / f"{side}_stats.json").read_text())["sent"]
        first = sent["plan_changes"][0]
        assert first["budget_kbps"] == 16 and "the still took the link" in first["why"], (side, sent["plan_changes"])


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def test_auto_budget_sends_the_still_small_then_sharp(tmp_path):
    """Not knowing the link, `--budget auto` sends the still as its lowest tier carries it (through a
    16 kbit/s policer the full one came 38 s after the call connected, the small one 25 s, 10 s once the
    voice went at that tier too: README), and
    once the link has been quiet SHARPEN_AFTER_S at 48 kbps or more (the call probes up to 48 at 10 s) the
    full one in parts (at the pace the room beside the voice carries it: 16 parts in about 5 s), which the
    receiver swaps in without a break. On loopback."""
    from sender.stream import SHARPEN_AFTER_S

    _, sender, receiver = _auto_budget_call(tmp_path, None, 750)
    events = [e["event"] for e in receiver["events"]]
    cached = next(e for e in events if e.startswith("still cached"))
    assert int(cached.split("(")[1].split()[0]) < 10_000, events            # the small one first
    (sharpened,) = sender["still_sharpened"]
    assert sharpened["bytes"] > 10_000 and sharpened["at_s"] >= SHARPEN_AFTER_S
    assert f"still sharpened ({sharpened['bytes']} bytes)" in events
    assert not receiver["rejected_packets"] and not any("same face" in e or "face changed" in e for e in events)
    the_voice_went_on(receiver)


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def test_auto_budget_on_a_link_that_loses_at_random_is_not_held_down(tmp_path):
    """10 % of all UDP lost at random, whatever is sent: the chooser steps down for it, sees the loss stay
    at the lower tier and comes back up (before, it stayed at 24 kbps for the rest of the call, where a lost
    packet of five frames' is a concealed gap: 581-611 of 1402 frames concealed against 164-287, README)."""
    _, sender, receiver = _auto_budget_call(tmp_path, ["--loss", "10"], 1175)
    changes = sender["plan_changes"]
    # it went down to 24 kbps or 16 (the first report's loss looks like a policer's) and came up again: at
    # once, the loss there being as before ("the link's own loss"), or by a probe once that loss counts as
    # the link's own (in 7 runs of 2026-12-02, 5 the one, 2 the other). The whole clip, 47 s: a call that
    # dips to 16 (8 voice packets a second) is judged there only after ~10 s, and in 2 of 7 runs of
    # 2026-12-03 was back at 24 at 20 s, over it only at the next probe, after the 30 s this call had been
    down = [i for i, c in enumerate(changes) if c["budget_kbps"] in (24, 16)]
    assert not down or any(c["budget_kbps"] is None or c["budget_kbps"] > 24 for c in changes[down[0]:]), changes
    the_voice_went_on(receiver)


def test_a_sharper_still_goes_before_waiting_references_but_after_the_one_under_way():
    """The receiver puts one message's parts together at a time (wire.PartAssembler): the sharper still
    cannot cut into a reference still under way, but it need not wait behind those not started."""
    from collections import deque

    from sender.stream import FaceStream

    stream = FaceStream.__new__(FaceStream)          # the queue alone: no camera, no call
    stream.identity_parts, stream.message_id = deque(), 0
    stream._queue_parts(bytes(2500), "reference")    # message 1, 3 parts
    stream._queue_parts(bytes(1500), "reference")    # message 2, 2 parts
    stream.identity_parts.popleft()                  # message 1 under way
    stream._queue_parts(bytes(1200), "still", first=True)
    assert [(q.kind, q.part[4], q.part[5]) for q in stream.identity_parts] == [
        ("reference", 1, 1), ("reference", 1, 2), ("still", 3, 0), ("still", 3, 1),
        ("reference", 2, 0), ("reference", 2, 1)]


def test_on_wire_rates_run_from_the_still_to_the_start_of_the_goodbyes():
    """WireCounter: what came before mark() (the still) and after close() (the hang-up exchange, the
    transports closing) is not the call's rate; what came after close() is said apart."""
    from callsynth.rtc import UDP_IPV4_HEADERS, WireCounter

    counter = WireCounter()
    counter.count(bytes([23]) + bytes(999))          # DTLS: the still's part
    counter.mark()
    counter.count(bytes([23]) + bytes(99))
    counter.count(bytes([128]) + bytes(49))          # SRTP: voice
    counter.close()
    counter.count(bytes([23]) + bytes(199))          # the goodbyes
    counter.close()                                  # a second close keeps the first end
    assert counter.since_mark() == {"data": (100 + UDP_IPV4_HEADERS, 1), "audio": (50 + UDP_IPV4_HEADERS, 1),
                                    "other": (0, 0)}
    assert counter.after_close() == 200 + UDP_IPV4_HEADERS
    assert counter.seconds_since_mark() == counter.closed[0] - counter.marked[0]


def test_one_stall_of_the_event_loop_is_not_taken_for_a_queue_on_the_link():
    """A round trip includes any stall of either side's event loop between a report's arrival and its
    handling; a 1.5 s one (a slow machine warming up) lifted aiortc's smoothed round trip 225 ms for several
    reports, and `--budget auto` stepped down for "round trip 228 ms" on a loopback link. LinkWatch now
    takes the shorter of the last two measured: a stall lengthens one, a queue every one."""
    import asyncio
    import time

    from aiortc.mediastreams import AudioStreamTrack

    from callsynth.rtc import LinkWatch, new_peer_connection

    async def call() -> tuple[list[float], list[float]]:
        caller, callee = new_peer_connection(), new_peer_connection()
        sender = caller.addTrack(AudioStreamTrack())
        stall = {"reports": 0}

        async def handle_late(packet, handle=sender._handle_rtcp_packet):
            stall["reports"] += 1
            if stall["reports"] == 4:
                time.sleep(1.5)                         # the event loop stalls as the report arrives
            await handle(packet)

        sender._handle_rtcp_packet = handle_late
        try:
            await _negotiate(caller, callee)
            watch, smoothed, watched = LinkWatch(caller), [], []
            for _ in range(120):                        # until 4 reports after the stall, 30 s at most
                if stall["reports"] >= 8:
                    break
                await asyncio.sleep(0.25)
                report = await watch.report(0.0)
                stats = [s for s in (await sender.getStats()).values() if s.type == "remote-inbound-rtp"]
                if stats and stats[0].roundTripTime is not None:
                    smoothed.append(stats[0].roundTripTime * 1000)
                if report.rtt_ms is not None:
                    watched.append(report.rtt_ms)
            assert stall["reports"] >= 8, stall
            # once the voice ends its sender has no track, and the round trip is still RTCP's (it was
            # SCTP's smoothed one, seconds long on a policed link: a step down as every call ended)
            sender.replaceTrack(None)
            assert (await watch.report(0.0)).rtt_ms == watched[-1]
            return smoothed, watched
        finally:
            await caller.close()
            await callee.close()

    smoothed, watched = asyncio.run(call())
    # what the old LinkWatch read (aiortc's smoothed round trip) rose past the chooser's threshold ...
    assert max(smoothed) >= min(smoothed) + RTT_RISE_MS, smoothed
    # ... what it reads now did not
    assert watched and max(watched) < min(watched) + RTT_RISE_MS, watched


def _through_a_slow_link(pc, delay_s: float = 0.0, loss: float = 0.0, seed: int = 0, cut=None) -> None:
    """What `pc` sends from now on goes through a link made here: each datagram is lost at random with
    probability `loss` (every one while the event `cut` is set) and otherwise arrives `delay_s` late (in
    order). Its ICE sockets' own sends are wrapped: what aiortc and aioice do above them runs as ever."""
    import asyncio
    import random

    draw, loop = random.Random(seed), asyncio.get_running_loop()
    for protocol in pc.sctp.transport.transport._connection._protocols:
        socket = protocol.transport
        send = socket.sendto

        def arrive(data, addr, socket=socket, send=send):
            if not socket.is_closing():
                send(data, addr)

        def through(data, addr=None, arrive=arrive):
            if draw.random() >= loss and not (cut is not None and cut.is_set()):
                loop.call_later(delay_s, arrive, data, addr)

        socket.sendto = through


async def _negotiate(caller, callee) -> None:
    """The offer and answer between two peer connections, exchanged directly (no signalling server)."""
    from aiortc import RTCSessionDescription

    await caller.setLocalDescription(await caller.createOffer())
    await callee.setRemoteDescription(caller.localDescription)
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(RTCSessionDescription(callee.localDescription.sdp, "answer"))


def _connected_pair(label: str = "features", **options):
    """Two real peer connections on loopback, a data channel between them, as a call makes them (the
    features channel unless told)."""
    from callsynth.rtc import new_peer_connection

    options = options or {"ordered": False, "maxRetransmits": 0}

    async def connect():
        import asyncio

        caller, callee = new_peer_connection(), new_peer_connection()
        channel, opened, heard = caller.createDataChannel(label, **options), asyncio.Event(), []
        channel.on("open", opened.set)
        callee.on("datachannel", lambda ch: ch.on("message", heard.append))
        await _negotiate(caller, callee)
        await asyncio.wait_for(opened.wait(), 20)
        return caller, callee, channel, heard

    return connect()


def test_features_wait_for_a_still_the_link_still_holds(monkeypatch, caplog):
    """The features go once the other side confirms the still; one that has not confirmed it within
    RECEIPT_WAIT_S got them anyway, and through a 15 %-lossy link the still came later still: its first
    packets were refused ("early", a CI run of the two-way call). Now, past that wait, they go once SCTP has
    the still acknowledged (an older peer never confirms: it has the still then), and on a link that takes
    nothing they give up after `timeout` more seconds, saying so. Real peers on loopback, the still's
    datagrams lost while the link is cut; the wait shortened to 0.5 s."""
    import asyncio
    import logging
    import time

    from sender import stream

    monkeypatch.setattr(stream, "RECEIPT_WAIT_S", 0.5)

    async def call():
        caller, callee, channel, heard = await _connected_pair("identity", ordered=True)
        cut = asyncio.Event()
        _through_a_slow_link(caller, cut=cut)
        try:
            receipt = asyncio.get_running_loop().create_future()     # never confirmed: an older peer
            cut.set()
            channel.send(bytes(15_000))                                 # a still's size
            asyncio.get_running_loop().call_later(1.5, cut.clear)      # the link carries again at 1.5 s
            start = time.monotonic()
            confirmed = await stream.still_through(receipt, channel, timeout=20)
            through = (confirmed, time.monotonic() - start, len(heard))
            cut.set()                                                   # a link that carries nothing
            channel.send(bytes(15_000))
            start = time.monotonic()
            confirmed = await stream.still_through(receipt, channel, timeout=1.5)
            return through, (confirmed, time.monotonic() - start, len(heard))
        finally:
            await caller.close()
            await callee.close()

    with caplog.at_level(logging.WARNING, logger=stream.log.name):
        (confirmed, waited, heard), (gave_up, waited_dead, heard_dead) = asyncio.run(call())
    # the features waited until the still had arrived (after the cut, by a retransmission), not 0.5 s
    assert confirmed is False and heard == 1 and waited >= 1.5, (confirmed, waited, heard)
    # and on a dead link 0.5 + 1.5 s, then went, said
    assert gave_up is False and heard_dead == 1 and 2.0 <= waited_dead < 10, waited_dead
    said = caplog.text
    assert "not through after 0.5 s (a lossy link" in said, said
    assert "not through after 2 s: streaming features all the same" in said, said
    assert "has not confirmed it (its receipt behind its own still on a slow link, or an older peer)" in said, said


def test_a_call_lasts_on_a_link_whose_round_trip_is_over_half_a_second(monkeypatch):
    """Consent to send (RFC 7675) lapses when no check is answered for 30 s; aioice counted an answer
    later than 500 ms as none, and a slow link's full buffer (1.4 s at 32 kbit/s) or a satellite's 600 ms
    ended every call after 30 s. Here checks go every 0.5 s (consent lasts 3 s) and the answers take 0.8 s:
    the old checks closed the call within 4 s; now it lasts, and what is sent still arrives."""
    import asyncio

    import aioice.ice

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)

    async def call():
        caller, callee, channel, heard = await _connected_pair()
        try:
            _through_a_slow_link(callee, delay_s=0.4)
            _through_a_slow_link(caller, delay_s=0.4)
            for i in range(40):                         # 8 s: consent's 3 s over twice
                channel.send(b"pose %d" % i)
                await asyncio.sleep(0.2)
            return caller.connectionState, callee.connectionState, len(heard)
        finally:
            await caller.close()
            await callee.close()

    states = asyncio.run(call())
    assert states[:2] == ("connected", "connected"), states
    assert states[2] >= 35, states                      # all but those still on the way


def test_without_a_voice_the_round_trip_is_not_lengthened_by_lost_packets():
    """A call without a voice has no RTCP: `--budget auto` reads the round trip from SCTP. aiortc's smoothed
    one is measured on the oldest chunk each acknowledgement takes in, which had waited for the next (a
    receiver acknowledges every second packet) or for a retransmission: on a link that loses 10 % at random
    it rose 150 ms over its lowest and a call without voice stepped down for "round trip 188 ms" (and
    concealed 298 of 1076 frames; 30 and 44 now, README). LinkWatch's reading stays near the link's."""
    import asyncio

    from callsynth.rtc import LinkWatch, delay_sacks

    async def call():
        delay_sacks(True)
        caller, callee, channel, _ = await _connected_pair()
        try:
            for _ in range(6):                          # the first packets, on loopback as it is
                channel.send(bytes(40))
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            _through_a_slow_link(caller, delay_s=0.02, loss=0.1, seed=3)
            _through_a_slow_link(callee, delay_s=0.02, loss=0.1, seed=4)
            watch, smoothed, watched = LinkWatch(caller), [], []
            for i in range(100):                        # 20 s: a feature packet every 200 ms (24 kbps)
                channel.send(bytes(40))
                await asyncio.sleep(0.2)
                if i % 5 == 4:
                    report = await watch.report(0.0)
                    smoothed.append(caller.sctp._srtt * 1000)
                    if report.rtt_ms is not None:
                        watched.append(report.rtt_ms)
            return smoothed, watched, report.lowest_rtt_ms
        finally:
            delay_sacks(False)
            await caller.close()
            await callee.close()

    smoothed, watched, lowest = asyncio.run(call())
    # what the old LinkWatch read (SCTP's smoothed round trip) rose past the chooser's threshold ...
    assert max(smoothed) >= min(smoothed) + RTT_RISE_MS, smoothed
    # ... what it reads now stays near the link's 40 ms
    assert len(watched) >= 15 and max(watched) < 40 + RTT_RISE_MS, watched
    # and the shortest since the call's first packets, before the link was slowed, is passed on
    assert lowest is not None and lowest < 20 < min(watched[3:]), (lowest, watched)
