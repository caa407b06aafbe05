"""The call on a screen: the other person large, yourself small in a corner (when there is a self-view), a
status line with what the call is doing, and keys — q or Esc to hang up, m to mute, c for the camera.

Drawn into one picture (CallScreen.compose, testable without a display) and shown with OpenCV's window
(Qt here); the owner decides what a key does (the one-way receiver hangs up on q and says that m and c
act on a sender's side)."""

from __future__ import annotations

import logging
import sys

import cv2
import numpy as np

log = logging.getLogger("callsynth.receive")

REMOTE_SIDE = 512           # the other person, scaled up from the 256² rebuilt crop
SELF_SIDE = 128             # the self-view, bottom right
STATUS_HEIGHT = 30
KEYS = {ord("q"): "quit", 27: "quit", ord("m"): "mute", ord("c"): "camera"}


def start_gui() -> None:
    """Start OpenCV's GUI (Qt) before anything imports PyAV: with PyAV's bundled libraries loaded first,
    the first window hangs for good (opencv-contrib-python 5.1 with av 18 here, under Xvfb). Commands that
    show a window call this first."""
    if "av" in sys.modules:
        log.warning("PyAV was loaded before the window system: the window may not open")
    cv2.namedWindow("callsynth", cv2.WINDOW_AUTOSIZE)
    cv2.destroyWindow("callsynth")
    cv2.waitKey(1)


class CallScreen:
    def __init__(self, title: str = "callsynth"):
        self.title = title
        self.opened = False

    @staticmethod
    def compose(remote: np.ndarray, self_view: np.ndarray | None = None, status: str = "") -> np.ndarray:
        """RGB picture of the screen: remote large, self-view (if any) inset, status line below."""
        canvas = np.zeros((REMOTE_SIDE + STATUS_HEIGHT, REMOTE_SIDE, 3), np.uint8)
        canvas[:REMOTE_SIDE] = cv2.resize(remote, (REMOTE_SIDE, REMOTE_SIDE), interpolation=cv2.INTER_LINEAR)
        if self_view is not None:
            inset = cv2.resize(self_view, (SELF_SIDE, SELF_SIDE), interpolation=cv2.INTER_AREA)
            y0, x0 = REMOTE_SIDE - SELF_SIDE - 8, REMOTE_SIDE - SELF_SIDE - 8
            canvas[y0 - 2:y0 + SELF_SIDE + 2, x0 - 2:x0 + SELF_SIDE + 2] = 255
            canvas[y0:y0 + SELF_SIDE, x0:x0 + SELF_SIDE] = inset
        canvas[REMOTE_SIDE:] = (32, 32, 32)
        cv2.putText(canvas, status[:80], (8, REMOTE_SIDE + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (235, 235, 235), 1, cv2.LINE_AA)
        return canvas

    def show(self, remote: np.ndarray, self_view: np.ndarray | None = None, status: str = "") -> str | None:
        """Draw a frame; returns the action of a key pressed since the last one ('quit', 'mute',
        'camera') or None."""
        if not self.opened:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)   # no Qt toolbar
            self.opened = True
        cv2.imshow(self.title, self.compose(remote, self_view, status)[:, :, ::-1])
        return KEYS.get(cv2.waitKey(1) & 0xFF)

    def close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self.opened = False
