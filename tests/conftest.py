import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", module="google.protobuf")

from callsynth.media import iter_frames  # noqa: E402
from callsynth.split import data_root  # noqa: E402

# A validation clip (a person no basis fitting has seen) and a training clip.
VAL_CLIP = "video/pcavs/00067.mp4"
GRID_CLIP = "video/grid_s1/bbaf2n.mp4"


def faceless_clip(path: Path, frames: int = 10, fps: float = 25.0) -> Path:
    """A clip that shows no face (grey frames, each a little lighter), for what must refuse one."""
    from callsynth.media import VideoWriter

    with VideoWriter(path, fps) as writer:
        for i in range(frames):
            writer.write(np.full((128, 128, 3), 20 * i % 256, np.uint8))
    return path


@pytest.fixture(scope="session")
def data() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def val_frames(data) -> list[np.ndarray]:
    return list(iter_frames(data / VAL_CLIP, max_frames=40))


@pytest.fixture(scope="session")
def basis():
    from callsynth.face.basis import load_basis
    return load_basis()


@pytest.fixture(scope="session")
def still(val_frames):
    from callsynth.face.still import prepare_still
    return prepare_still(val_frames[0])


def sound_tools_env(through: str) -> dict:
    """The environment for a process that reaches the sound devices `through` alsa-utils ('tool') or PyAV's
    own ALSA library ('library': alsa-utils out of its PATH); skips where that way is not installed."""
    import shutil
    import sys

    if not os.path.isfile("/usr/share/alsa/alsa.conf"):
        pytest.skip("the system's ALSA configuration (Debian's libasound2-data) is not installed")
    if through == "tool" and not (shutil.which("aplay") and shutil.which("arecord")):
        pytest.skip("alsa-utils (aplay, arecord) is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALSA_")}
    return env if through == "tool" else dict(env, PATH=os.path.dirname(sys.executable))


def loudness_envelope(samples, rate: int = 48000) -> np.ndarray:
    """The RMS loudness of `samples` (at `rate`) in 20 ms steps: how the sound tests compare a voice heard
    with the voice played."""
    step = rate // 50
    samples = np.asarray(samples, dtype=np.float64)
    return np.sqrt(np.mean(samples[:len(samples) // step * step].reshape(-1, step) ** 2, 1))


def file_plugin_as_default(home, played="/dev/null", infile=None) -> None:
    """`home`/.asoundrc making ALSA's default device its file plug-in (no sound card here): what is played
    is written to `played`, and a microphone reads `infile` (raw 16-bit at the device's format)."""
    source = f'\n infile "{infile}"' if infile else ""
    (Path(home) / ".asoundrc").write_text(
        f'pcm.!default {{\n type file\n slave.pcm "null"\n file "{played}"{source}\n format "raw"\n}}\n')


def the_voice_went_on(received: dict, side: str = "") -> None:
    """A receiver's stats (STATS.json) say the voice went on: each voice datagram that arrived became a
    frame, and over 20 came. Counts, not rates. The datagrams are counted from the still, the frames from
    the start: 0.95-1.6 frames a datagram with 20 ms Opus, 0.99 with a budget's 60 ms (RTCP's among them)."""
    voice = received["on_wire"]["datagrams"]["audio"]
    assert received["audio_frames"] > 20 and received["audio_frames"] >= 0.8 * voice, (side, received)


def namespace_tools_missing() -> str | None:
    """Why a test in a network namespace of its own (root, `ip`, iptables) cannot run here; None if it can."""
    import shutil

    if os.geteuid() != 0:
        return "a network namespace needs root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"no `{tool}` here (apt-get install iproute2 iptables)"
    return None


class DroppingNamespace:
    """A network namespace with its loopback up and iptables INPUT rules that DROP what each rule matches
    (`rules`: iptables match arguments); `run` runs a command inside; removed on leaving."""

    def __init__(self, rules=()):
        import uuid

        self.name, self.rules = f"csns{uuid.uuid4().hex[:6]}", list(rules)

    def _ip(self, *args, **kwargs):
        import subprocess

        return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30, **kwargs)

    def __enter__(self):
        self._ip("netns", "add", self.name)
        try:
            self._ip("-n", self.name, "link", "set", "lo", "up")
            for rule in self.rules:
                self._ip("netns", "exec", self.name, "iptables", "-A", "INPUT", *rule, "-j", "DROP")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        import subprocess

        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)

    def run(self, command, timeout: float, env=None):
        import subprocess

        return subprocess.run(["ip", "netns", "exec", self.name, *command], capture_output=True, text=True,
                              timeout=timeout, check=False, env=env)

    def dropped(self) -> int:
        """Datagrams the rules have dropped so far."""
        listing = self._ip("netns", "exec", self.name, "iptables", "-L", "INPUT", "-v", "-n", "-x").stdout
        return sum(int(line.split()[0]) for line in listing.splitlines() if "DROP" in line)


@pytest.fixture
def ctrl_c_as_at_a_terminal():
    """SIGINT as a terminal's foreground command meets it (Python's KeyboardInterrupt), for the tests that
    send a real one. A shell that starts a command in the background, as a CI runner may, starts it with
    SIGINT ignored, and every process it starts inherits that: such a test then passed only after an
    in-process call had set SIGINT back (asyncio does when a loop that handled it closes)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before if before is not None else signal.SIG_DFL)
