"""This machine's microphone and loudspeaker: the system's default capture and playback devices.

Through ALSA's own tools when they are installed (alsa-utils' `arecord` and `aplay`, as raw 16-bit PCM on a
pipe): they use the system's ALSA library, configuration and plug-ins, so a PipeWire or PulseAudio desktop's
default device works as it does for any program. Without them, through the ALSA library inside PyAV's
wheel, pointed at the system's configuration (use_system_alsa); that library cannot load the system's
plug-ins (they are built against the system's library, not this copy), so there only plain ALSA devices
open, and one that does not is said, not crashed on."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

SYSTEM_ALSA_CONFIG = Path("/usr/share/alsa")
RATE = 48000
STARTUP_S = 0.3         # a tool that cannot open its device exits within this
# The device's buffer and the pieces it is handed over in. aplay's and arecord's own defaults are a buffer of
# up to 500 ms moved in quarters (125 ms), and aplay starts the device only once that buffer is full (its
# --start-delay 0 means "the buffer's size"): the voice was kept a whole buffer behind its arrival. Now a
# 200 ms buffer in 20 ms periods, started once the Speaker's cushion is there. `python
# scripts/speaker_delay.py` through ALSA's file plug-in (which writes its file a buffer behind what it is
# given, so the figure is the buffer's): a click played 621 ms after its handing over, now 222 ms (2-core
# Intel Xeon at 2.6 GHz). A real device's delay is not measured: no sound card here.
BUFFER_MS = 200
PERIOD_MS = 20


class SoundDeviceError(OSError):
    """No such device, or it cannot be opened."""


def use_system_alsa() -> None:
    """PyAV's wheel carries its own ALSA library, built to read its configuration from a folder of its
    build machine (/tmp/vendor/share/alsa) that no user has: it then knew no 'default' device, and
    `--audio mic` found no microphone on any Linux machine. Point it at the system's configuration unless
    the user has chosen one. (Not at the system's plug-ins: loaded into this copy of the library they would
    mix two libraries' structures.)"""
    if not {"ALSA_CONFIG_DIR", "ALSA_CONFIG_PATH"} & set(os.environ) and (SYSTEM_ALSA_CONFIG / "alsa.conf").is_file():
        os.environ["ALSA_CONFIG_DIR"] = str(SYSTEM_ALSA_CONFIG)


def _pcm_arguments(device: str, *more: str) -> list[str]:
    return ["-q", "-D", device, "-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c", "1",
            f"--buffer-time={BUFFER_MS * 1000}", f"--period-time={PERIOD_MS * 1000}", *more, "-"]


def _started(command: list[str], **pipes) -> subprocess.Popen:
    """`command` started, once it has not failed at once (a device it cannot open: SoundDeviceError). What
    it says after that (aplay's "underrun!!!" on every late frame) is read as it comes, its last line kept
    as `last_said` and its under/overruns counted as `underruns`: left in the pipe, a long call's worth
    filled it and the tool stopped, blocked on it."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, **pipes)
    try:
        if process.wait(timeout=STARTUP_S) != 0:
            return _failed(command, process)
    except subprocess.TimeoutExpired:
        pass
    process.last_said, process.underruns = "", 0

    def listen() -> None:
        for line in process.stderr:
            said = line.decode(errors="replace").strip()
            process.underruns += "underrun" in said or "overrun" in said     # the device ran dry / over
            process.last_said = said or process.last_said

    process.listener = threading.Thread(target=listen, name=f"{Path(command[0]).name} says", daemon=True)
    process.listener.start()
    return process


def _failed(command: list[str], process: subprocess.Popen):
    said = process.stderr.read().decode(errors="replace").strip().splitlines()
    raise SoundDeviceError(f"{Path(command[0]).name}: {said[-1] if said else f'exited with {process.returncode}'}")


def playback_process(device: str = "default", start_ms: float = PERIOD_MS) -> subprocess.Popen | None:
    """`aplay` playing mono 16-bit PCM at RATE written to its stdin, starting once `start_ms` of it is
    there, or None when alsa-utils is not installed. Raises SoundDeviceError when the device cannot be
    opened. Blocks up to STARTUP_S."""
    tool = shutil.which("aplay")
    start = f"--start-delay={int(max(start_ms, PERIOD_MS) * 1000)}"
    return None if tool is None else _started([tool, *_pcm_arguments(device, start)], stdin=subprocess.PIPE)


def capture_process(device: str = "default") -> subprocess.Popen | None:
    """`arecord` giving mono 16-bit PCM at RATE on its stdout, or None when alsa-utils is not installed.
    Raises SoundDeviceError when the device cannot be opened. Blocks up to STARTUP_S."""
    tool = shutil.which("arecord")
    return None if tool is None else _started([tool, *_pcm_arguments(device)], stdout=subprocess.PIPE)
