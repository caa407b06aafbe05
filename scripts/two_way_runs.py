"""Run `callsynth demo --two-way` several times and print each side's figures, one row per run, with the
CPU that measured them: a two-way call on one 2-core machine shares it with the other side's process, and
its figures vary from run to run with whatever else the machine does, so one run says little.

    python scripts/two_way_runs.py --runs 6 [--budget 24] [--video A --video2 B] [--model warp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.call_commands import budget_arg  # noqa: E402
from callsynth.demo import run_two_way_demo  # noqa: E402
from callsynth.machine import cpu_description  # noqa: E402
from callsynth.split import data_root  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--video", type=Path, default=data_root() / "video/hdtf/WDA_KatieHill_000.mp4")
    parser.add_argument("--video2", type=Path, default=data_root() / "video/retalking/4.mp4")
    parser.add_argument("--model", default="warp", choices=["warp", "generator"])
    parser.add_argument("--budget", type=budget_arg, metavar="KBPS|auto")
    args = parser.parse_args()
    extra = ["--budget", str(args.budget)] if args.budget else []
    rows = []
    print(f"{args.video.name} (a) and {args.video2.name} (b), --model {args.model}"
          + (f", --budget {args.budget}" if args.budget else "") + f"; on {cpu_description()}")
    print("run side  fps (lowest 1 s)  p50 ms  p95 ms  interpolated  received on the wire kbps")
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as out:
            report = run_two_way_demo((args.video, args.video2), Path(out), extra, model=args.model)
        for side, h in report["headline"].items():
            rows.append(h)
            print(f"{run:3d} {side:>4}  {h['fps']:5.1f} ({h['fps_min_1s']})  {h['latency_ms_p50']:8.1f} "
                  f"{h['latency_ms_p95']:7.1f}  {h['interpolated_share']:11.1%}  {h['received_on_wire_kbps']:8.1f}",
                  flush=True)
    meet = [h for h in rows if h["fps"] >= 25 and h["latency_ms_p50"] <= 100 and h["interpolated_share"] >= 0.95]
    print(f"median over {len(rows)} sides: p50 {statistics.median(h['latency_ms_p50'] for h in rows):.1f} ms, "
          f"interpolated {statistics.median(h['interpolated_share'] for h in rows):.1%}, "
          f"{statistics.median(h['received_on_wire_kbps'] for h in rows):.1f} kbps on the wire; "
          f"{len(meet)} of {len(rows)} sides at >= 25 fps, p50 <= 100 ms and >= 95 % interpolated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
