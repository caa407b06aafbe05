"""The call on a screen: the other person large, yourself small in a corner (when there is a self-view), a
status line with what the call is doing, and keys — q or Esc to hang up, m to mute, c for the camera.

Drawn into one picture (CallScreen.compose, testable without a display) and shown in a window of a child
process of its own (ScreenProcess, `python -m receiver.screen`) that imports numpy, OpenCV and Tk only. The
window is Tk's (Python's own toolkit, on the system's X library): it says it shows a frame only once the X
server has mapped it and the frame is drawn, so a window that never reached the screen is seen and started
again. Without tkinter, OpenCV's window (Qt here) is used; Qt's first window hangs — not always — in a
process that has loaded PyAV's libraries, which every call process has, and it once said it drew while the
X server showed nothing. The child also keeps the window's work off the call's event loop; a frame it is
not ready for is skipped, never waited for. The owner decides what a key does (the one-way receiver hangs
up on q and says that m and c act on a sender's side)."""

from __future__ import annotations

import logging
import os
import queue
import struct
import subprocess
import sys
import threading
import time

import cv2
import numpy as np

from callsynth.stop_signals import leave_ctrl_c_to_the_parent

log = logging.getLogger("callsynth.receive")
FRAME_HEADER = struct.Struct("<4sHHHHH")      # magic, remote h, w, self-view h, w, status bytes
FRAME_MAGIC = b"CSFR"

REMOTE_SIDE = 512           # the other person, scaled up from the 256² rebuilt crop
SELF_SIDE = 128             # the self-view, bottom right
STATUS_HEIGHT = 30
KEYS = {"q": "quit", "\x1b": "quit", "m": "mute", "c": "camera"}    # by the character a key types


class CallScreen:
    """What the window shows, drawn into one picture."""

    @staticmethod
    def compose(remote: np.ndarray, self_view: np.ndarray | None = None, status: str = "") -> np.ndarray:
        """RGB picture of the screen: remote large, self-view (if any) inset, status line below. The
        self-view is mirrored, as a mirror shows you and every video-call app does (unmirrored, raising
        your right hand raised the hand on the right of the picture); the other side sees you unmirrored."""
        canvas = np.zeros((REMOTE_SIDE + STATUS_HEIGHT, REMOTE_SIDE, 3), np.uint8)
        canvas[:REMOTE_SIDE] = cv2.resize(remote, (REMOTE_SIDE, REMOTE_SIDE), interpolation=cv2.INTER_LINEAR)
        if self_view is not None:
            inset = cv2.resize(self_view[:, ::-1], (SELF_SIDE, SELF_SIDE), interpolation=cv2.INTER_AREA)
            y0, x0 = REMOTE_SIDE - SELF_SIDE - 8, REMOTE_SIDE - SELF_SIDE - 8
            canvas[y0 - 2:y0 + SELF_SIDE + 2, x0 - 2:x0 + SELF_SIDE + 2] = 255
            canvas[y0:y0 + SELF_SIDE, x0:x0 + SELF_SIDE] = inset
        canvas[REMOTE_SIDE:] = (32, 32, 32)
        cv2.putText(canvas, status[:80], (8, REMOTE_SIDE + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (235, 235, 235), 1, cv2.LINE_AA)
        return canvas


class TkWindow:
    """A Tk window showing RGB pictures. `showing` is the X server's word, not the toolkit's: true once the
    window is mapped (Tk learns it from the server's MapNotify) and a picture was drawn into it."""

    def __init__(self, title: str):
        import tkinter
        self.root = tkinter.Tk(className="callsynth")
        self.root.withdraw()                # shown with the first picture
        self.root.title(title)
        self.root.resizable(False, False)
        self.photo = tkinter.PhotoImage(width=REMOTE_SIDE, height=REMOTE_SIDE + STATUS_HEIGHT)
        tkinter.Label(self.root, image=self.photo, borderwidth=0, highlightthickness=0).pack()
        self.actions: list[str] = []
        self.drawn = False
        self.root.bind("<KeyPress>", lambda e: self.actions.append(KEYS[e.char]) if e.char in KEYS else None)
        self.root.protocol("WM_DELETE_WINDOW", lambda: self.actions.append("quit"))

    def show(self, picture: np.ndarray) -> None:
        height, width = picture.shape[:2]
        self.photo.configure(data=b"P6 %d %d 255\n" % (width, height) + picture.tobytes(), format="PPM")
        if not self.drawn:
            self.root.deiconify()
        self.drawn = True

    def pump(self) -> list[str]:
        """Let the window draw and take its events; the actions of keys pressed since the last pump."""
        self.root.update()
        actions, self.actions = self.actions, []
        return actions

    @property
    def showing(self) -> bool:
        return self.drawn and bool(self.root.winfo_viewable())

    def close(self) -> None:
        self.root.destroy()


class OpenCvWindow:
    """OpenCV's window, where tkinter is missing. It cannot tell whether the X server shows it: `showing`
    is true once a picture was handed to it."""

    def __init__(self, title: str):
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)   # no Qt toolbar
        self.showing = False

    def show(self, picture: np.ndarray) -> None:
        cv2.imshow(self.title, picture[:, :, ::-1])
        self.showing = True

    def pump(self) -> list[str]:
        key = cv2.waitKey(1)
        return [KEYS[chr(key & 0xFF)]] if key >= 0 and chr(key & 0xFF) in KEYS else []

    def close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


def open_window(title: str):
    """Tk's window, or OpenCV's where Python has no tkinter."""
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return OpenCvWindow(title)
    return TkWindow(title)


class ScreenProcess:
    """A CallScreen in a child process: frames go down a pipe (through a one-frame queue, so a slow window
    drops frames instead of holding up the call), key actions come back a line each. The child says
    'ready' once its window shows a frame; one that has not within OPEN_WITHIN_S of the first frame (Qt's
    first window now and then never opens on a busy machine) is replaced, up to MAX_STARTS times."""

    OPEN_WITHIN_S = 4.0
    MAX_STARTS = 3

    def __init__(self, title: str = "callsynth", event=None):
        """`event(text, level)`: where the window's opening and restarts are said (default: the log), so a
        call's summary shows when its window opened."""
        self.title = title
        self.event = event or (lambda text, level=logging.INFO: log.log(level, text))
        self.starts = 0
        self._start()

    def _start(self) -> None:
        self.starts += 1
        self.child = subprocess.Popen([sys.executable, "-m", "receiver.screen", self.title],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        os.set_blocking(self.child.stdout.fileno(), False)
        self.frames: queue.Queue = queue.Queue(maxsize=1)
        self.writer = threading.Thread(target=self._write, args=(self.child, self.frames), daemon=True,
                                       name="screen")
        self.writer.start()
        self.pending, self.ready, self.first_frame_at = b"", False, None

    @staticmethod
    def _write(child, frames) -> None:
        while True:
            message = frames.get()
            if message is None:
                return
            try:
                child.stdin.write(message)
            except (BrokenPipeError, OSError, ValueError):
                return

    def show(self, remote: np.ndarray, self_view: np.ndarray | None = None, status: str = "") -> str | None:
        """Queue a frame for the window (replacing one it has not taken yet); returns a key's action, or
        'closed' when the window's process has gone."""
        if self.child.poll() is not None:
            return "closed"
        now = time.monotonic()
        self.first_frame_at = self.first_frame_at or now
        if not self.ready and now - self.first_frame_at > self.OPEN_WITHIN_S and self.starts < self.MAX_STARTS:
            self.event(f"the window did not open within {self.OPEN_WITHIN_S:.0f} s; starting it again",
                       logging.WARNING)
            self._stop(kill=True)
            self._start()
            return None
        remote = np.ascontiguousarray(remote, np.uint8)
        me = np.zeros((0, 0, 3), np.uint8) if self_view is None else np.ascontiguousarray(self_view, np.uint8)
        text = status.encode("utf-8")[:200]
        message = (FRAME_HEADER.pack(FRAME_MAGIC, *remote.shape[:2], *me.shape[:2], len(text))
                   + remote.tobytes() + me.tobytes() + text)
        _replace(self.frames, message)          # one the window has not taken yet is dropped
        try:
            self.pending += self.child.stdout.read() or b""
        except (BlockingIOError, OSError):
            pass
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            action = line.decode("ascii", "replace").strip()
            if action == "ready":
                self.ready = True
                self.event(f"window showing its first frame, {now - self.first_frame_at:.1f} s after the "
                           f"call's first (start {self.starts})")
            elif action:
                return action
        return None

    def close(self) -> None:
        self._stop(kill=False)

    def _stop(self, kill: bool) -> None:
        _replace(self.frames, None)
        if kill:
            self.child.kill()
        self.writer.join(timeout=2)
        try:
            self.child.stdin.close()
            self.child.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.child.kill()


def _replace(one_slot: queue.Queue, item) -> None:
    """Put `item` in a queue of one slot, dropping what it holds (one producer per queue)."""
    try:
        one_slot.get_nowait()
    except queue.Empty:
        pass
    one_slot.put_nowait(item)


def _read_exactly(stream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_frames(stream, latest: queue.Queue) -> None:
    """Frames from the pipe into `latest`, which holds only the newest; None when the pipe ends or carries
    something that is not a frame."""
    while True:
        header = _read_exactly(stream, FRAME_HEADER.size)
        if header is None:
            break
        magic, rh, rw, sh, sw, n = FRAME_HEADER.unpack(header)
        if magic != FRAME_MAGIC:
            break
        remote = _read_exactly(stream, rh * rw * 3)
        me = _read_exactly(stream, sh * sw * 3) if sh * sw else b""
        text = _read_exactly(stream, n) if n else b""
        if remote is None or me is None or text is None:
            break
        frame = (np.frombuffer(remote, np.uint8).reshape(rh, rw, 3),
                 np.frombuffer(me, np.uint8).reshape(sh, sw, 3) if sh * sw else None,
                 text.decode("utf-8", "replace"))
        _replace(latest, frame)             # one not drawn yet: the newer replaces it
    _replace(latest, None)


def main(title: str) -> int:
    """The window's process: frames from stdin until it closes, 'ready' once the window shows one, key
    actions to stdout. The window takes its events every 20 ms whether or not frames come."""
    leave_ctrl_c_to_the_parent()          # the call ends on Ctrl-C, then closes this window
    try:
        window = open_window(title)
    except Exception as error:          # tkinter.TclError: no display, or one that refuses us
        print(f"callsynth window: cannot open a window: {error}", file=sys.stderr)
        return 3
    latest: queue.Queue = queue.Queue(maxsize=1)
    threading.Thread(target=_read_frames, args=(sys.stdin.buffer, latest), daemon=True).start()
    told_ready = False
    try:
        while True:
            try:
                frame = latest.get(timeout=0.02)
            except queue.Empty:
                frame = False
            if frame is None:
                return 0
            if frame is not False:
                window.show(CallScreen.compose(*frame))
            out = [action.encode() for action in window.pump()]
            if not told_ready and window.showing:
                out.insert(0, b"ready")
                told_ready = True
            if out:
                sys.stdout.buffer.write(b"\n".join(out) + b"\n")
                sys.stdout.buffer.flush()
    except Exception as error:          # the window closed under us (tkinter.TclError), or the pipe did
        print(f"callsynth window: {error}", file=sys.stderr)
        return 0
    finally:
        try:
            window.close()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "callsynth"))
