"""How far behind its arrival the loudspeaker plays the voice (receiver.speaker.Speaker through aplay).

No sound card here: this process's ~/.asoundrc makes the default output ALSA's file plug-in over the null
device, which takes the sound as a device plays it (in real time) and writes it to a file. Voice frames of
20 ms are handed to the Speaker in real time (silence, with a click every second), after `--burst` ms of
frames handed over at once as the device opens (what waits while it opens, or a link that stalled and
caught up); each click's delay is the time from its handing over to its appearing in the file.

    python scripts/speaker_delay.py [--burst 0 300] [--seconds 4]

The file plug-in writes its file one device buffer (sound_devices.BUFFER_MS) behind what it is given, so the
delay printed is that buffer plus what the Speaker and aplay hold before it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callsynth.machine import cpu_description  # noqa: E402

RATE, FRAME = 48000, 960


def _frame(index: int, click: bool) -> av.AudioFrame:
    pcm = np.zeros((1, FRAME), np.int16)
    if click:
        pcm[0, :48] = 20000
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate, frame.pts = RATE, index * FRAME
    return frame


def measure(burst_ms: float, seconds: float) -> dict:
    from receiver.speaker import Speaker

    folder = Path(tempfile.mkdtemp(prefix="speaker_delay_"))
    played = folder / "played.raw"
    (folder / ".asoundrc").write_text(
        f'pcm.!default {{\n type file\n slave.pcm "null"\n file "{played}"\n format "raw"\n}}\n')
    os.environ["HOME"] = str(folder)
    for name in [k for k in os.environ if k.startswith("ALSA_")]:
        del os.environ[name]
    appeared: list[float] = []
    done = threading.Event()

    def watch() -> None:
        at, last = 0, np.zeros(1, np.int16)
        while not done.is_set():
            try:
                data = played.read_bytes()[at:]
            except FileNotFoundError:
                data = b""
            data = data[:len(data) // 2 * 2]
            samples = np.concatenate([last, np.frombuffer(data, "<i2")])     # a click may open a read
            last = samples[-1:]
            rising = np.nonzero((samples[1:] > 10000) & (samples[:-1] <= 10000))[0]
            appeared.extend([time.monotonic()] * len(rising))
            at += len(data)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    speaker = Speaker()
    index = 0
    for _ in range(int(burst_ms / 20)):
        speaker.add(_frame(index, False))
        index += 1
    handed: list[float] = []
    start = time.monotonic()
    for tick in range(int(seconds * 50)):
        time.sleep(max(0.0, start + tick * 0.02 - time.monotonic()))
        click = tick % 50 == 25
        if click:
            handed.append(time.monotonic())
        speaker.add(_frame(index, click))
        index += 1
    summary = speaker.close()
    time.sleep(0.3)
    done.set()
    watcher.join()
    delays = [(a - h) * 1000 for h, a in zip(handed, appeared)]
    return {"burst_ms": burst_ms, "click_delays_ms": [round(d) for d in delays],
            "median_ms": round(statistics.median(delays)) if delays else None, "speaker": summary}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=float, nargs="+", default=[0.0, 300.0], metavar="MS",
                        help="voice handed over at once as the device opens (default: 0 and 300)")
    parser.add_argument("--seconds", type=float, default=4.0, help="voice handed over in real time after it")
    args = parser.parse_args(argv)
    for burst in args.burst:
        result = measure(burst, args.seconds)
        print(f"burst {burst:g} ms: clicks played {result['click_delays_ms']} ms after handing over "
              f"(median {result['median_ms']} ms); skipped {result['speaker'].get('late_ms_skipped')} ms, "
              f"through {result['speaker']['through']}")
    print(f"measured on {cpu_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
