"""`--budget auto`: the budget follows what the link shows.

The chooser's rules on reports made here, then a real call on a real narrow link: a network namespace
whose iptables polices UDP to 24 kbit/s per destination port (scripts/policed_link.py), where the call's
starting tier (32 kbps, about 27 on the wire) loses packets, and `--budget auto` must step down to the tier the link carries,
with the voice still flowing after each change of Opus encoder."""

import itertools
import json
import os
import subprocess
import sys

import pytest

from callsynth.budget import (
    AUTO_TIERS,
    MAX_QUIET_S,
    QUIET_S,
    SETTLE_S,
    BudgetChooser,
    LinkReport,
    plan,
)

from callsynth.split import data_root

from .conftest import namespace_tools_missing

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
    assert chooser.observe(LinkReport(1.0, 0.08, 20.0)) == AUTO_TIERS[1]
    # reports within SETTLE_S still describe the old rate
    assert chooser.observe(LinkReport(1.0 + SETTLE_S / 2, 0.08, 20.0)) is False
    assert chooser.observe(LinkReport(1.0 + SETTLE_S, 0.30, 20.0)) == AUTO_TIERS[3]
    assert "30% of packets lost" in chooser.history[-1]["why"]


def test_a_growing_round_trip_or_a_queue_at_the_sender_steps_down():
    chooser = BudgetChooser(start=TOP)
    assert chooser.observe(LinkReport(1.0, 0.0, 30.0)) is False
    assert chooser.observe(LinkReport(2.0, 0.0, 200.0)) == AUTO_TIERS[1]      # 170 ms over the lowest
    assert "round trip" in chooser.history[-1]["why"]
    assert chooser.observe(LinkReport(2.0 + SETTLE_S, None, 40.0, queued_s=0.5)) == AUTO_TIERS[2]
    assert "queued" in chooser.history[-1]["why"]


def test_it_probes_up_after_a_quiet_spell_and_waits_longer_after_a_failed_probe():
    chooser = BudgetChooser(start=TOP)
    chooser.observe(LinkReport(1.0, 0.1, 20.0))                      # down to AUTO_TIERS[1]
    t, changes = 1.0, []
    while t < 200:
        t += 1.0
        # the link carries the first tier down, not the top
        budget = chooser.observe(LinkReport(t, 0.1 if chooser.tier == 0 else 0.0, 20.0))
        if budget is not False:
            changes.append((t, budget))
    ups = [t for t, budget in changes if budget is None]
    assert ups[0] == 1.0 + QUIET_S                                    # the first probe after QUIET_S
    assert ups[1] - ups[0] >= 2 * QUIET_S                             # failed: the next spell doubled
    assert all(b - a <= MAX_QUIET_S + SETTLE_S for a, b in itertools.pairwise(ups))
    assert chooser.budget_kbps == AUTO_TIERS[1] or chooser.tier == 0


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


@pytest.mark.skipif(_policing_missing() is not None, reason=str(_policing_missing()))
def test_auto_budget_finds_what_a_24_kbps_link_carries(tmp_path):
    out = tmp_path / "call"
    run = subprocess.run(
        [sys.executable, "scripts/policed_link.py", "--kbps", "24", "--timeout", "240", "--",
         sys.executable, "-m", "callsynth.cli", "demo", "--video", str(LONG_CLIP), "--model", "warp",
         "--budget", "auto", "--max-frames", "500", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, CALLSYNTH_DATA=str(data_root())))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "dropped" in run.stdout                       # the policer was there and did drop
    stats = json.loads((out / "STATS.json").read_text())
    sender, receiver = stats["sender"], stats["receiver"]
    changes = sender["plan_changes"]
    # it came down to the tier that fits 24 kbps on the wire, and said why (a probe up may come first: in
    # a fresh-clone run of 2026-12-01 the start tier's first 10 s fitted under the policer: it probed 48 first)
    down = [c for c in changes if c["budget_kbps"] == 24]
    assert down, changes
    assert "lost" in down[0]["why"] or "queued" in down[0]["why"]
    assert sender["wire_plan"]["budget_kbps"] in (24, 32)      # at the end: there, or probing up
    # the voice went on through every change of Opus encoder: about 16 frames a second at 60 ms
    assert receiver["audio_frames"] >= 0.5 * receiver["on_wire"]["seconds"] * 1000 / 60
    # packets that came before the still (held back by the link) are the only ones refused
    # (how many packets depends on how fast the machine tracks: 110 here, 7 on one a quarter as fast)
    assert receiver["features"]["packets"] > 0 and set(receiver["rejected_packets"]) <= {"early"}


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
