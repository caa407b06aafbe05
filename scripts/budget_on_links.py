"""How `--budget auto` (callsynth.budget.BudgetChooser) fares on simulated links: the share of a call's
time it spends at each budget, on links that lose a share of all packets at random (a poor radio link),
police a rate (drop what is over it), or both. A real link is slow to try (tests/test_link.py runs one
policed call; scripts/policed_link.py runs any); this tries fifteen links over many seeds in seconds.

The simulated call: each second it sends about 85 % of its tier's budget (without a budget, what the plan
estimates at 30 fps); the other side's RTCP receiver report comes every 0.5-1.5 s (aiortc's interval) on
the voice packets since the last one (one per Opus frame: 50 a second without a budget, 16.7 or 8.3
within one), each lost at random
with the link's loss over the rates sent in between: 1 - (1 - own loss) x min(1, policed kbps / rate).

    python scripts/budget_on_links.py [--seeds 10] [--seconds 300] [--json]

An older chooser runs on the same links from an older checkout: `PYTHONPATH=/tmp/old python
scripts/budget_on_links.py` (its LinkReport may not take `packets`: then it is not given)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random

from callsynth.budget import AUTO_TIERS, BudgetChooser, LinkReport, plan

# (the link's own loss, the policer's kbps or None)
LINKS = [(0.0, None), (0.02, None), (0.05, None), (0.10, None), (0.20, None),
         (0.0, 16.0), (0.0, 20.0), (0.0, 24.0), (0.0, 40.0), (0.0, 56.0),
         (0.02, 40.0), (0.05, 24.0), (0.10, 28.0), (0.10, 40.0), (0.10, 56.0)]
SENT_SHARE = 0.85
REPORTS_EVERY_S = (0.5, 1.5)
TAKES_PACKETS = "packets" in {f.name for f in dataclasses.fields(LinkReport)}


def sent_kbps(budget_kbps: float | None) -> float:
    return SENT_SHARE * (budget_kbps if budget_kbps is not None else sum(plan(None, 30.0).estimate_kbps.values()))


def voice_pps(budget_kbps: float | None) -> float:
    """Voice packets a second at this budget: one an Opus frame (20 ms without a budget, 60 or 120 within)."""
    return 1000 / plan(budget_kbps, 30.0).opus_frame_ms


def simulated_call(own_loss: float, policed_kbps: float | None, seconds: int, seed: int) -> dict:
    """Seconds spent at each budget (None: none) in one call."""
    draw, chooser = random.Random(seed), BudgetChooser()
    rates, time_at, last, due = [], {}, 0, draw.uniform(*REPORTS_EVERY_S)
    for t in range(1, seconds + 1):
        rates.append(sent_kbps(chooser.budget_kbps))
        time_at[chooser.budget_kbps] = time_at.get(chooser.budget_kbps, 0) + 1
        loss = packets = None
        if t >= due:
            kept = [min(1.0, policed_kbps / rate) if policed_kbps else 1.0 for rate in rates[last:]]
            share = 1 - (1 - own_loss) * sum(kept) / len(kept)
            packets = int(voice_pps(chooser.budget_kbps) * (t - last))
            loss = sum(draw.random() < share for _ in range(packets)) / packets
            last, due = t, t + draw.uniform(*REPORTS_EVERY_S)
        extra = {"packets": packets} if TAKES_PACKETS else {}
        chooser.observe(LinkReport(float(t), loss, 20.0, **extra))
    return time_at


def shares(own_loss: float, policed_kbps: float | None, seconds: int, seeds: int) -> dict:
    """The share of all the calls' time at each budget ("none": no budget), over `seeds` calls."""
    total: dict = {}
    for seed in range(1, seeds + 1):
        for budget, spent in simulated_call(own_loss, policed_kbps, seconds, seed).items():
            total[budget] = total.get(budget, 0) + spent
    return {("none" if b is None else f"{b:g}"): round(total.get(b, 0) / (seconds * seeds), 3) for b in AUTO_TIERS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="calls per link (each its own random draws)")
    parser.add_argument("--seconds", type=int, default=300, help="each call's length")
    parser.add_argument("--json", action="store_true", help="print the shares as JSON, one object per link")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.seconds < 10:
        parser.error("--seeds at least 1, --seconds at least 10")
    rows = [{"own_loss": loss, "policed_kbps": kbps, "share_of_time": shares(loss, kbps, args.seconds, args.seeds)}
            for loss, kbps in LINKS]
    if args.json:
        print(json.dumps(rows))
        return 0
    tiers = ["none" if b is None else f"{b:g}" for b in AUTO_TIERS]
    print(f"share of {args.seeds} calls of {args.seconds} s spent at each budget (kbps)")
    print(f"{'link':<36}" + "".join(f"{t:>7}" for t in tiers))
    for row in rows:
        link = " + ".join(([f"{row['own_loss']:.0%} lost at random"] if row["own_loss"] else [])
                          + ([f"policed at {row['policed_kbps']:g}"] if row["policed_kbps"] else [])) or "clean"
        print(f"{link:<36}" + "".join(f"{row['share_of_time'][t]:>7.0%}" for t in tiers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
