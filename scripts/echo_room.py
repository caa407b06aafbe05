"""How much of the other side's voice callsynth.echo takes back out of the microphone, in a simulated room.

No sound card here, so the room is simulated around the real canceller, fed as a call feeds it: the other
side's voice (an HDTF clip) arrives in bursts of 60 ms and is handed to the loudspeaker (`played`) as it
arrives, behind 40 ms of cushion; the loudspeaker plays it at a steady 48 kHz from its buffer; the room
(a 150 ms reverberant impulse response) and the capture add `--delay` ms before the microphone hears it,
beside this side's own voice (another person's clip) and a little noise. Seconds 0-5: the other talks
alone; 5-7: both talk; 7-9: this side alone.

    python scripts/echo_room.py [--delay 60 150] [--echo 1.0] [--json]      (default delays: 60 and 150 ms)

Prints, per delay: the echo's reduction while the other talks alone (dB, seconds 3-5, after the canceller
has found the delay and learnt the room); this side's voice kept while both talk and alone (level against
the voice itself, and the correlation of their 20 ms loudness envelopes, beside the untouched
microphone's); the canceller's CPU time per 20 ms frame, on this machine's CPU (named).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.echo import EchoCanceller  # noqa: E402
from callsynth.machine import cpu_description  # noqa: E402
from callsynth.split import data_root  # noqa: E402

RATE = 48000
TICK = 960                  # the microphone's 20 ms frames
FAR = "video/hdtf/WDA_KatieHill_000.mp4"
NEAR = "video/retalking/4.mp4"


def voice(path: Path, seconds: float) -> np.ndarray:
    container = av.open(str(path))
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    parts = [f.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[0])
             for f in resampler.resample(frame)]
    container.close()
    return np.concatenate(parts)[:int(RATE * seconds)].astype(np.float64)


def room_response(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.15 * RATE))
    response = rng.standard_normal(t.size) * np.exp(-t / (0.025 * RATE)) * 0.25
    response[0] += 1.0
    return response


def run(delay_ms: float, echo_gain: float, cancel: bool = True, stall_ms: float = 0.0,
        device_buffer_ms: float = 0.0, device_dry_ms: float = 0.0) -> dict:
    root = data_root()
    n = 9 * RATE
    far = np.zeros(n)
    far[:7 * RATE] = voice(root / FAR, 7)
    near = np.zeros(n)
    near[5 * RATE:] = voice(root / NEAR, 4)
    canceller = EchoCanceller() if cancel else None

    # the loudspeaker: written in bursts of three 20 ms frames after 40 ms of cushion, played steadily
    # (with --stall, the call hands it nothing for that long at 2.5 and 3.5 s, then all that waited at once;
    # with --device-buffer, the device holds that much more than the call's model of it knows: the stall
    # empties the model's queue but not the device's, and the echo moves earlier against the reference)
    writes = {0: np.zeros(RATE * 40 // 1000)}
    for tick in range(0, n // TICK, 3):
        writes.setdefault(tick, np.zeros(0))
        writes[tick] = np.concatenate([writes[tick], far[tick * TICK:(tick + 3) * TICK]])
    stall = int(stall_ms / 20)
    for start in ((125, 175) if stall else ()):
        held = [t for t in sorted(writes) if start <= t < start + stall]
        writes[start + stall] = np.concatenate([writes.pop(t) for t in held] + [writes.get(start + stall, np.zeros(0))])
    device = np.zeros(int(RATE * device_buffer_ms / 1000))
    played = np.zeros(n)
    for tick in range(n // TICK):
        device = np.concatenate([device, writes.get(tick, np.zeros(0))])
        take = min(TICK, device.size)
        played[tick * TICK:tick * TICK + take] = device[:take]
        device = device[take:]
    if device_dry_ms:       # the device stops for that long at 2.5 s, unknown to the call, and plays on late
        at = int(2.5 * RATE)
        played = np.concatenate([played[:at], np.zeros(int(RATE * device_dry_ms / 1000)), played[at:]])[:n]
    echo = np.convolve(played, room_response())[:n]
    shift = int(RATE * delay_ms / 1000)
    echo = np.concatenate([np.zeros(shift), echo])[:n]
    echo *= echo_gain * np.std(near[5 * RATE:]) / np.std(echo[RATE:5 * RATE])
    noise = np.random.default_rng(1).standard_normal(n) * np.std(near[5 * RATE:]) / 100
    mic = np.clip(echo + near + noise, -32768, 32767).astype(np.int16)

    # the call: each tick what arrived goes to the loudspeaker, and the microphone's frame through the canceller
    out = np.zeros(n, np.int16)
    spent = 0.0
    for tick in range(n // TICK):
        frame = av.AudioFrame.from_ndarray(mic[None, tick * TICK:(tick + 1) * TICK], format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, tick * TICK
        start = time.perf_counter()
        if canceller and tick in writes:
            canceller.played(writes[tick].astype(np.int16), at=tick * TICK / RATE)   # the simulation's clock
        done = canceller.cancel(frame, at=(tick + 1) * TICK / RATE) if canceller else frame
        spent += time.perf_counter() - start
        out[tick * TICK:(tick + 1) * TICK] = done.to_ndarray().reshape(-1)
    return {"delay_ms": delay_ms, **measure(mic, out, near), "cpu_ms_per_20ms": round(spent * 1000 / (n // TICK), 3),
            **({"canceller": canceller.summary()} if canceller else {})}


def _envelope(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    step = RATE // 50
    return np.sqrt(np.mean(x[:x.size // step * step].reshape(-1, step) ** 2, 1))


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(10 * np.log10(np.mean(a.astype(np.float64) ** 2) / np.mean(b.astype(np.float64) ** 2))), 1)


def measure(mic: np.ndarray, out: np.ndarray, near: np.ndarray) -> dict:
    def part(a, b):
        return slice(int(a * RATE), int(b * RATE))

    def r(x, seconds):
        return round(float(np.corrcoef(_envelope(x[seconds]), _envelope(near[seconds]))[0, 1]), 3)

    alone, both, this_alone = part(3, 5), part(5, 7), part(7.5, 9)
    return {"echo_reduced_db": _db(mic[alone], out[alone]),
            "both_talk": {"kept_db": _db(out[both], near[both]), "envelope_r": r(out, both),
                          "microphone_envelope_r": r(mic, both)},
            "this_side_alone": {"kept_db": _db(out[this_alone], near[this_alone]), "envelope_r": r(out, this_alone)}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, nargs="+", default=[60.0, 150.0], metavar="MS",
                        help="the room's and the capture's delay before the microphone hears the loudspeaker")
    parser.add_argument("--echo", type=float, default=1.0,
                        help="the echo's loudness against this side's voice (default %(default)s: as loud)")
    parser.add_argument("--stall", type=float, default=0.0, metavar="MS",
                        help="the call hands the loudspeaker nothing for MS ms at 2.5 and 3.5 s, then all at once")
    parser.add_argument("--device-buffer", type=float, default=0.0, metavar="MS",
                        help="sound the device holds beyond what the call's model of it knows (default none)")
    parser.add_argument("--device-dry", type=float, default=0.0, metavar="MS",
                        help="the device stops playing for MS ms at 2.5 s (a busy machine's sound server), which "
                             "the call's model of it does not know")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    results = [run(delay, args.echo, stall_ms=args.stall, device_buffer_ms=args.device_buffer,
                   device_dry_ms=args.device_dry) for delay in args.delay]
    if args.json:
        print(json.dumps({"cpu": cpu_description(), "runs": results}, indent=2))
        return 0
    for res in results:
        print(f"delay {res['delay_ms']:g} ms: echo reduced {res['echo_reduced_db']} dB while the other talks alone; "
              f"this side kept {res['both_talk']['kept_db']:+} dB (envelope r {res['both_talk']['envelope_r']}, "
              f"the microphone's {res['both_talk']['microphone_envelope_r']}) while both talk, "
              f"{res['this_side_alone']['kept_db']:+} dB (r {res['this_side_alone']['envelope_r']}) alone; "
              f"{res['cpu_ms_per_20ms']} ms of CPU a 20 ms frame")
    print(f"measured on {cpu_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
