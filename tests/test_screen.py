"""The call's screen: composed without a display, and shown in a real call under a real X server (Xvfb),
checked from a screenshot of that server."""

import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from callsynth.call_key import CallKey
from callsynth.demo import free_port, stop_processes
from callsynth.split import data_root
from receiver.screen import REMOTE_SIDE, SELF_SIDE, STATUS_HEIGHT, CallScreen

CLIP = data_root() / "video/hdtf/WDA_KatieHill_000.mp4"     # 8 s
KEY = CallKey.new().text


def test_the_screen_shows_the_other_person_large_yourself_small_and_a_status_line():
    rng = np.random.default_rng(0)
    remote = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    me = np.zeros((256, 256, 3), np.uint8)
    me[:, :128] = (200, 30, 30)                 # red on the camera's left, blue on its right
    me[:, 128:] = (30, 30, 200)
    screen = CallScreen.compose(remote, me, "29 fps | 118 ms")
    assert screen.shape == (REMOTE_SIDE + STATUS_HEIGHT, REMOTE_SIDE, 3)
    inset = screen[REMOTE_SIDE - SELF_SIDE - 8:REMOTE_SIDE - 8, REMOTE_SIDE - SELF_SIDE - 8:REMOTE_SIDE - 8]
    half = SELF_SIDE // 2
    assert np.all(inset[:, :half - 1] == (30, 30, 200)) and np.all(inset[:, half + 1:] == (200, 30, 30))  # mirrored
    assert abs(float(screen[:200, :200].mean()) - float(remote.mean())) < 5       # the remote, scaled up
    status = screen[REMOTE_SIDE:]
    assert (status > 150).any() and np.median(status) == 32                       # light text on dark grey
    assert not (CallScreen.compose(remote, None, "")[REMOTE_SIDE:] > 150).any()


def read_xwd(data: bytes) -> np.ndarray:
    """An xwd screenshot (ZPixmap of a depth-24 screen, 24 or 32 bits a pixel) as RGB."""
    header = np.frombuffer(data[:100], dtype=">u4")
    header_size, width, height = int(header[0]), int(header[4]), int(header[5])
    byte_order, bits_per_pixel, bytes_per_line, ncolors = (int(header[7]), int(header[11]), int(header[12]),
                                                            int(header[19]))
    assert bits_per_pixel in (24, 32), bits_per_pixel
    size = bits_per_pixel // 8
    start = header_size + ncolors * 12
    pixels = np.frombuffer(data[start:start + bytes_per_line * height], np.uint8)
    pixels = pixels.reshape(height, bytes_per_line)[:, :width * size].reshape(height, width, size)
    return pixels[:, :, [2, 1, 0]] if byte_order == 0 else pixels[:, :, [size - 3, size - 2, size - 1]]


def _xvfb_missing():
    if shutil.which("Xvfb") is None or shutil.which("xwd") is None:
        return "Xvfb or xwd not installed (apt-get install xvfb x11-apps)"
    return None


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """A real X server on a free display: (its process, ':N')."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    return xvfb, ":" + os.read(read, 16).decode().strip()


def wait_for_window(display: str, tries: int = 40):
    """xwd screenshots every 0.5 s until a window shows (it appears with the call's first frame): (the
    last screenshot, X's windows when it was taken)."""
    for _ in range(tries):
        time.sleep(0.5)
        shot = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, timeout=30)
        tree = x_windows(display)
        if shot.returncode == 0 and (read_xwd(shot.stdout).max(axis=2) > 0).sum() > 100_000:
            break
    return shot, tree


def x_windows(display: str) -> str:
    """The X server's top-level windows with their geometry (xwininfo), for a failure's message."""
    if not shutil.which("xwininfo"):
        return "(xwininfo not installed)"
    return subprocess.run(["xwininfo", "-root", "-children", "-display", display], capture_output=True,
                          text=True, timeout=30, check=False).stdout


def one_way_call_on_screen(tmp_path) -> tuple[np.ndarray, dict, str, str]:
    """A one-way call whose receiver shows its window on a fresh Xvfb: (a screenshot of the X server while
    the call ran, the receiver's summary, its log, X's windows when the screenshot was taken)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    xvfb, display = start_xvfb()
    processes = [xvfb]
    try:
        env = dict(os.environ, DISPLAY=display, PYTHONPATH=os.getcwd(), CALLSYNTH_DATA=str(data_root()),
                   CALLSYNTH_CALL_KEY=KEY)
        port = free_port()
        cli = [sys.executable, "-m", "callsynth.cli"]
        url = f"ws://127.0.0.1:{port}"
        logs = {name: tmp_path / f"{name}.log" for name in ("signal", "receiver", "sender")}
        processes.append(subprocess.Popen(cli + ["signal", "--port", str(port)], env=env,
                                          stdout=logs["signal"].open("w"), stderr=subprocess.STDOUT))
        time.sleep(1.5)
        receiver = subprocess.Popen(cli + ["receive", "--signal", url, "--room", "screen", "--window", "--model",
                                           "warp", "--stats", str(tmp_path / "rx.json"), "--rejoin-wait", "5"],
                                    env=env, stdout=logs["receiver"].open("w"), stderr=subprocess.STDOUT)
        processes.append(receiver)
        sender = subprocess.Popen(cli + ["send", "--signal", url, "--room", "screen", "--video", str(CLIP),
                                         "--max-frames", "200", "--audio", "none"],
                                  env=env, stdout=logs["sender"].open("w"), stderr=subprocess.STDOUT)
        processes.append(sender)
        deadline = time.time() + 60
        while "still cached" not in logs["receiver"].read_text() and time.time() < deadline:
            time.sleep(0.1)
        cached_at = time.time()
        shot, tree = wait_for_window(display)
        print(f"window seen {time.time() - cached_at:.1f} s after the still was cached")
        assert sender.wait(timeout=60) == 0, logs["sender"].read_text()[-2000:]
        assert receiver.wait(timeout=30) == 0, logs["receiver"].read_text()[-2000:]
    finally:
        stop_processes(processes)
    summary = json.loads((tmp_path / "rx.json").read_text())
    return read_xwd(shot.stdout), summary, logs["receiver"].read_text(), tree


@pytest.mark.skipif(_xvfb_missing() is not None, reason=str(_xvfb_missing()))
def test_a_call_on_screen_under_a_real_x_server(tmp_path):
    """`callsynth receive --window` in a real call, on a real X server: a screenshot of the server shows
    the window — the rebuilt face at 512 x 512 over the status line with its text.

    One call is tried again when its screenshots stayed black for the whole call although the receiver's
    window said it showed a frame: so it went once in the project's clean-clone CI on the slow 2-core
    machine (the receiver itself went on at 30 fps; whether Qt's window was on the X server and undrawn is
    what the message of a failure now shows, with X's windows). Two black calls in a row fail."""
    image, summary, log, tree = one_way_call_on_screen(tmp_path / "first")
    if (image.max(axis=2) > 0).sum() <= 100_000 and "window showing its first frame" in log:
        print(f"no window drawn in the first call; X's windows then:\n{tree}\ntrying the call again")
        image, summary, log, tree = one_way_call_on_screen(tmp_path / "again")
    assert summary["frames_shown"] >= 30
    cv2.imwrite(str(tmp_path / "screen.png"), image[:, :, ::-1])
    ys, xs = np.nonzero(image.max(axis=2) > 0)
    assert ys.size > 100_000, f"no window on the screen; X's windows:\n{tree}\nthe receiver said:\n{log[-3000:]}"
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    # the window: the rebuilt face at 512 x 512 over the status line
    assert abs(width - REMOTE_SIDE) <= 4 and abs(height - (REMOTE_SIDE + STATUS_HEIGHT)) <= 4, (width, height)
    top, left = ys.min(), xs.min()
    face = image[top:top + REMOTE_SIDE, left:left + REMOTE_SIDE]
    status = image[top + REMOTE_SIDE:top + REMOTE_SIDE + STATUS_HEIGHT, left:left + REMOTE_SIDE]
    assert face.std() > 20                                          # a picture, not a blank
    assert (status > 150).sum() > 200 and np.median(status) == 32   # the status line's text


def start_two_way(tmp_path, display: str, room: str, a_args: list[str], b_args: list[str], processes: list,
                  a_clip=CLIP, b_clip=None):
    """A signalling server and two `callsynth call` processes on `display` (a shows its window, plays
    a_clip, writes a.json; b plays b_clip, retalking/4 unless given, writes b.json), appended to
    `processes`: (env, logs, a, b)."""
    env = dict(os.environ, DISPLAY=display, PYTHONPATH=os.getcwd(), CALLSYNTH_DATA=str(data_root()),
               CALLSYNTH_CALL_KEY=KEY)
    port = free_port()
    cli = [sys.executable, "-m", "callsynth.cli"]
    logs = {name: tmp_path / f"{name}.log" for name in ("signal", "a", "b")}
    processes.append(subprocess.Popen(cli + ["signal", "--port", str(port)], env=env,
                                      stdout=logs["signal"].open("w"), stderr=subprocess.STDOUT))
    time.sleep(1.5)
    common = ["--signal", f"ws://127.0.0.1:{port}", "--room", room, "--model", "warp", "--rejoin-wait", "5",
              "--max-frames", "200"]
    a = subprocess.Popen(cli + ["call", *common, "--window", "--video", str(a_clip),
                                "--stats", str(tmp_path / "a.json"), *a_args],
                         env=env, stdout=logs["a"].open("w"), stderr=subprocess.STDOUT)
    b = subprocess.Popen(cli + ["call", *common, "--video", str(b_clip or data_root() / "video/retalking/4.mp4"),
                                "--stats", str(tmp_path / "b.json"), *b_args],
                         env=env, stdout=logs["b"].open("w"), stderr=subprocess.STDOUT)
    processes += [a, b]
    return env, logs, a, b


@pytest.mark.skipif(_xvfb_missing() is not None, reason=str(_xvfb_missing()))
def test_a_two_way_call_on_screen_shows_the_other_large_and_yourself_small(tmp_path):
    """`callsynth call --window` on one side of a two-way call, on a real X server: the screenshot shows the
    other person's rebuilt face large, this side's own camera crop in the inset, and the status line."""
    xvfb, display = start_xvfb()
    processes = [xvfb]
    try:
        _, logs, a, b = start_two_way(tmp_path, display, "screen2", ["--audio", "none"], ["--audio", "none"],
                                      processes)
        deadline = time.time() + 60
        while "still cached" not in logs["a"].read_text() and time.time() < deadline:
            time.sleep(0.1)
        shot, tree = wait_for_window(display)
        time.sleep(1.0)         # a later frame: the self-view comes with this side's first tracked frames
        later = subprocess.run(["xwd", "-root", "-silent", "-display", display], capture_output=True, timeout=30,
                               check=False)
        if later.returncode == 0 and (read_xwd(later.stdout).max(axis=2) > 0).sum() > 100_000:
            shot = later        # (on a slow machine the window may open late, and the call end within 1 s)
        assert a.wait(timeout=60) == 0, logs["a"].read_text()[-2000:]
        assert b.wait(timeout=60) == 0, logs["b"].read_text()[-2000:]
    finally:
        stop_processes(processes)
    summary = json.loads((tmp_path / "a.json").read_text())
    # (counts, not rates: beside six busy processes this side sent 3 packets in the call, once 16; what
    # it sends depends on how fast it tracks, and the screen is the point here)
    assert summary["received"]["frames_shown"] >= 30 and summary["sent"]["packets_sent"] >= 1
    image = read_xwd(shot.stdout)
    cv2.imwrite(str(tmp_path / "screen.png"), image[:, :, ::-1])
    ys, xs = np.nonzero(image.max(axis=2) > 0)
    window = [e for e in summary["received"]["events"] if "window" in e["event"]]
    assert ys.size > 100_000, (f"no window on the screen; side a's window events: {window}; X's windows:\n{tree}"
                               f"\nside a said:\n{logs['a'].read_text()[-3000:]}")
    top, left = ys.min(), xs.min()
    assert abs(xs.max() - left + 1 - REMOTE_SIDE) <= 4, (xs.min(), xs.max())
    face = image[top:top + REMOTE_SIDE, left:left + REMOTE_SIDE].astype(float)
    y0 = x0 = REMOTE_SIDE - SELF_SIDE - 8
    inset = face[y0:y0 + SELF_SIDE, x0:x0 + SELF_SIDE]
    frame = face[y0 - 2:y0 + SELF_SIDE + 2, x0 - 2:x0 + SELF_SIDE + 2]
    assert inset.std() > 20                                                    # a picture in the inset
    assert np.all(frame[0] > 200) and np.all(frame[:, 0] > 200)               # inside its white border
    assert face[:y0 - 4].std() > 20                                            # the other person above it
    status = image[top + REMOTE_SIDE:top + REMOTE_SIDE + STATUS_HEIGHT, left:left + REMOTE_SIDE]
    assert (status > 150).sum() > 200 and np.median(status) == 32


def _xdotool_missing():
    return _xvfb_missing() or (None if shutil.which("xdotool") else "xdotool not installed (apt-get install xdotool)")


def find_window(env: dict, calls: tuple, logs: dict, name: str = "callsynth", limit_s: float = 120.0) -> str:
    """The id of the first window on the screen (mapped) whose name has `name`, asked every 0.5 s while both
    call processes run (the window opens with the call's first frame: on a busy machine that took over 50 s
    once, and a fixed wait failed with nothing to show why); fails with the calls' logs when they end or
    time runs out."""
    deadline = time.time() + limit_s
    while time.time() < deadline and all(call.poll() is None for call in calls):
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], env=env,
                               capture_output=True, text=True, timeout=30)
        if found.returncode == 0 and found.stdout.split():
            return found.stdout.split()[0]
        time.sleep(0.5)
    tails = "\n".join(f"--- {side} ---\n{logs[side].read_text()[-1500:]}" for side in ("a", "b"))
    raise AssertionError(f"no window named {name!r} within {limit_s:.0f} s "
                         f"(exit codes {[call.poll() for call in calls]})\n{tails}")


@pytest.mark.skipif(_xdotool_missing() is not None, reason=str(_xdotool_missing()))
def test_the_keys_mute_the_voice_and_turn_the_camera_off(tmp_path):
    """On a real X server, keys typed into side a's call window (xdotool, through the X server's XTEST
    extension, as a keyboard would): m mutes its voice, c turns its camera off, after which side b
    receives faces driven by a's voice instead of a's camera."""
    xvfb, display = start_xvfb()
    processes = [xvfb]
    try:
        # both clips last 12 s (cut from longer ones): time for a machine a quarter as fast as this one to
        # open the window, take both keys and send voice-driven faces while the call lasts (with 8 s and
        # 6 s clips the call ended first there)
        env, logs, a, b = start_two_way(tmp_path, display, "keys", ["--max-frames", "300"],
                                        ["--audio", "none", "--max-frames", "300"], processes,
                                        a_clip=data_root() / "video/lia_vox/obama.mp4",
                                        b_clip=data_root() / "video/styletalk/andrew_clip_2.mp4")
        window = find_window(env, (a, b), logs)
        for key in ("m", "c"):
            subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True, timeout=30)
            subprocess.run(["xdotool", "key", key], env=env, check=True, timeout=30)
            time.sleep(1.0)
        assert a.wait(timeout=60) == 0, logs["a"].read_text()[-2000:]
        assert b.wait(timeout=60) == 0, logs["b"].read_text()[-2000:]
    finally:
        stop_processes(processes)
    a_stats = json.loads((tmp_path / "a.json").read_text())
    b_stats = json.loads((tmp_path / "b.json").read_text())
    toggles = [t["what"] for t in a_stats["sent"]["toggles"]]
    assert toggles == ["voice muted", "camera off: the voice drives the face"], toggles
    # after the camera went off b received faces from a's voice, flagged as such (none come before: a's
    # camera sees a face the whole clip); how many depends on how fast the machine is
    assert b_stats["received"]["speech_driven_packets"] > 0, b_stats["received"]
