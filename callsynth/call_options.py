"""The call's defaults, in one place: the sender's and receiver's options dataclasses, the jitter buffer,
the offline reenactment, the demo and every command line read them from here instead of repeating them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallDefaults:
    # A live call sends a packet for every frame: a frame is interpolated (not extrapolated) only once the
    # packet after it has arrived, so the playout delay must cover the packet spacing, and at one packet
    # every 2nd frame of a 25 fps camera (80 ms) glass to glass could not stay under 100 ms. `--budget`
    # trades this for fewer packets (callsynth.budget). Counted at 30 fps: a 60 fps camera sends every 2nd
    # frame, 33 ms apart as from a 30 fps one (budget.frames_per_packet).
    send_every: int = 1
    # Offline reenactment (`reenact`, `eval`) measures the 4 kbps operating point: 15 packets a second, every
    # 2nd frame at 30 fps, 3 of every 5 at 25, every 4th at 60 (callsynth.budget.frames_per_packet).
    reenact_send_every: int = 2
    # The jitter buffer plays out this far behind the sender's clock; None: adapt to the packet spacing
    # and the jitter seen (receiver.jitter), up to max_playout_delay_ms, past which it extrapolates.
    playout_delay_ms: float | None = None
    max_playout_delay_ms: float = 120.0
    display_fps: float = 30.0        # the receiver shows frames at this rate whatever the packet rate
    rejoin_wait_s: float = 30.0      # after losing the sender, wait this long for it to come back
    # The full-frame generator repairs the still on every Nth frame and the frames between warp it
    # (receiver.generator_renderer): 1 repairs every frame, at 12-21x the warp's cost in `callsynth bench`.
    # By the evaluator's tool on the seven validation clips 8, 12 and 16 kept the same SSIM gain (the still,
    # once repaired, stays repaired), and 24 kept 91 % of 12's, above the warp on all seven, NME at most
    # +0.05 above it, blinks the warp's; with the mouth generator on every frame, 12 cost 2.8x the warp in
    # `bench` and 24 costs 2.4x, under the generator issue's 2.5x (README "The generator").
    repair_still_every: int = 24
    # How frames are rebuilt unless told otherwise (reenact, receive, demo, the Receiver): the generator,
    # which beats the warp alone on SSIM, mouth-region error and landmark NME on the validation identities.
    model: str = "generator"
    # Where a call listens and offers its ICE candidates unless told otherwise: loopback, so nothing outside
    # this machine is reached until the caller names an address (--host, --ice-host, --signal).
    host: str = "127.0.0.1"
    signalling_port: int = 8765
    # With no face in view this long, the sender's voice drives the face (--speech-after).
    speech_after_no_face_s: float = 3.0
    # Feature packets the sender drops on purpose, to show concealment (--loss): none.
    loss: float = 0.0


# The ways a receiver rebuilds frames (receiver.renderer): the warp alone, the full-frame generator, the mouth
# generator.
MODELS = ("warp", "generator", "mouth")


CALL = CallDefaults()
