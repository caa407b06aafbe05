"""The evaluator's own figures, per clip and renderer: `callsynth reenact` of each evaluation clip (still =
its first frame, as `callsynth eval` does) with each model, then `../shared/tools/face_metrics.py` compare,
eyes and teeth on the written videos — the way the evaluator measures a rebuilt face (mp4 files, SSIM and
NME on every 3rd frame), which `callsynth eval` reimplements on in-memory frames. Prints one row per clip
and model, each renderer's SSIM and NME against the warp's in the same run, and the CPU it ran on.

    python scripts/face_metrics_table.py [--models warp,mouth,generator] [--out out/face_metrics] [--repair-every N]
                                         [--tool ../shared/tools/face_metrics.py] [--clips A.mp4 ...]

About 15 minutes for the seven clips and three models on a 2-core AMD EPYC at 2.4 GHz.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.machine import cpu_description
from callsynth.split import eval_clips

REPO = Path(__file__).resolve().parents[1]


def _tool(tool: Path, kind: str, out: Path, ref: Path) -> dict:
    """The last line face_metrics.py prints (JSON) for `kind` on out against ref."""
    done = subprocess.run([sys.executable, str(tool), kind, str(out), str(ref)], capture_output=True, text=True,
                          check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise RuntimeError(f"face_metrics.py {kind} {out.name}: {done.stderr.strip()[-400:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="warp,mouth,generator", help="renderers, the first is the baseline")
    ap.add_argument("--out", type=Path, default=REPO / "out/face_metrics")
    ap.add_argument("--tool", type=Path, default=REPO.parent / "shared/tools/face_metrics.py")
    ap.add_argument("--clips", type=Path, nargs="*", help="clips (default: callsynth eval's seven)")
    ap.add_argument("--repair-every", type=int, help="reenact's --repair-every for the generator (default: its own)")
    args = ap.parse_args(argv)
    if not args.tool.is_file():
        print(f"error: the evaluator's tool is not at {args.tool} (--tool PATH)", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    clips = args.clips or eval_clips()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tqdm(total=len(clips) * len(models), desc="reenact + face_metrics") as bar:
        for clip in clips:
            ref = args.out / f"{clip.stem}_ref.mp4"
            for model in models:
                out = args.out / f"{clip.stem}_{model}.mp4"
                done = subprocess.run(["callsynth", "reenact", "--identity", str(clip), "--driving", str(clip),
                                       "--output", str(out), "--reference-out", str(ref), "--model", model,
                                       *(["--repair-every", str(args.repair_every)] if args.repair_every else []),
                                       "--quiet"], capture_output=True, text=True, check=False)
                if done.returncode:
                    print(f"{clip.name} {model}: reenact failed: {done.stderr.strip()[-400:]}", file=sys.stderr)
                    bar.update(1)
                    continue
                rows.append({"clip": clip.stem, "model": model, **_tool(args.tool, "compare", out, ref),
                             **{f"eyes_{k}": v for k, v in _tool(args.tool, "eyes", out, ref).items()},
                             **{f"teeth_{k}": v for k, v in _tool(args.tool, "teeth", out, ref).items()}})
                bar.update(1)
    (args.out / "face_metrics.json").write_text(json.dumps(rows, indent=1) + "\n")
    base = {r["clip"]: r for r in rows if r["model"] == models[0]}
    print(f"\nmeasured on {cpu_description()} with {args.tool}")
    print("| clip | model | SSIM | SSIM − " + models[0] + " | NME % | NME − " + models[0]
          + " | blinks shown | teeth share out / ref | interior error |")
    print("|---|---|---|---|---|---|---|---|---|")
    def fmt(v, spec):
        return "–" if v is None or math.isnan(v) else format(v, spec)

    for r in rows:
        b = base.get(r["clip"])
        d_ssim = r["ssim"] - b["ssim"] if b else None
        d_nme = r["nme"] - b["nme"] if b and r["nme"] is not None and b["nme"] is not None else None
        print(f"| {r['clip']} | {r['model']} | {r['ssim']:.5f} | {fmt(d_ssim, '+.5f')} | {fmt(r['nme'], '.3f')} | "
              f"{fmt(d_nme, '+.3f')} | {fmt(r['eyes_blinks_shown'], '.0%')} of {r['eyes_blink_frames']} | "
              f"{fmt(r['teeth_teeth_share_out'], '.1%')} / {fmt(r['teeth_teeth_share_ref'], '.1%')} | "
              f"{fmt(r['teeth_interior_l1'], '.1f')} |")
    for model in models[1:]:
        ours = [r for r in rows if r["model"] == model and r["clip"] in base]
        below = [r["clip"] for r in ours if r["ssim"] < base[r["clip"]]["ssim"]]
        print(f"{model}: SSIM at or above {models[0]}'s on {len(ours) - len(below)} of {len(ours)} clips"
              + (f" (below on {', '.join(below)})" if below else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
