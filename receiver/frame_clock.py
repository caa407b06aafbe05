"""The other person's face on this side of a call: the still and reference stills in, feature packets and
the voice in, frames out at the display rate — through the jitter buffer and the renderer, at the quality
the machine affords — to the sinks (a recording, the screen).

It knows nothing of signalling or peer connections: the one-way receiver and the two-way call both feed
it what their channels deliver, so neither copies the other."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import av
import numpy as np

from callsynth.errors import said
from callsynth.face.basis import ExpressionBasis
from callsynth.quality import RENDER_LEVELS, QualityLadder, RepairPacing, describe_mouth, describe_render
from callsynth.wire import FLAG_AUDIO, Codec, Part, PartAssembler, WireError, decode_control, decode_identity

from .jitter import JitterBuffer
from .playout import SourceSwitch
from .recorder import CallRecorder, RecordingThread
from .renderer import Renderers, WarpRenderer, mouth_renderers
from .screen import ScreenProcess
from .stats import ReceiverStats
from .still_repairer import RepairError, StillRepairer

log = logging.getLogger("callsynth.receive")
STATUS_EVERY_S = 5.0
MAX_VOICE_BACKLOG = 50                  # voice frames (1 s) the speech model may be behind before it skips


class FrameClock:
    """`options` is a ReceiverOptions (the picture's fields: output, window, fps, delay_ms, model, ...).
    `on_key(action)` gets the screen's keys other than quit ('mute', 'camera') and says whether it acted;
    `self_view()` gives the picture for the screen's inset (None: no inset); `hang_up(reason)` ends the
    call from the keyboard."""

    def __init__(self, basis: ExpressionBasis, options, stats: ReceiverStats, *,
                 hang_up: Callable[[str], None], on_key: Callable[[str], bool] | None = None,
                 self_view: Callable[[], np.ndarray | None] | None = None, title: str = "callsynth"):
        self.basis, self.options, self.stats = basis, options, stats
        self.codec = Codec(basis)
        self.hang_up, self.on_key, self.self_view = hang_up, on_key, self_view
        self.renderer: WarpRenderer | None = None
        self.jitter: JitterBuffer | None = None
        self.recorder: RecordingThread | None = None
        self.unrecorded = False               # --output could not be written
        self.speaker = None                   # receiver.speaker.Speaker, opened at the first voice frame
        self.echo = None                      # callsynth.echo.EchoCanceller the loudspeaker tells what it plays
        self.speaker_said = False
        self.plays_voice = options.plays_voice
        self.expect_audio = False
        self.speech = None                    # SpeechDriver when --audio-fallback
        self.speech_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voice")
        self.speech_backlog = 0               # voice frames handed to speech_thread and not yet back
        self.speech_state = None
        # the speech model and its features' filterbank loaded now, before the call: at the still's
        # arrival, on the event loop, they held the call 2 s on a 2-core EPYC (librosa's import)
        self.speech_model = self._load_speech_model() if options.audio_fallback else None
        self.last_packet_s: float | None = None
        self.in_fallback = False
        self.switch = SourceSwitch(basis.k)     # the face moved, not jumped, when the voice takes over or hands back
        self.final_ms: float | None = None      # after a hang-up: the last capture time to show
        self.finished_playout = False
        self.after_hang_up = False              # this side hung up: nothing guessed past the last packet
        self.last_status = time.time()
        self.window = options.window and self._display_available()
        self.screen = ScreenProcess(title, self.stats.event) if self.window else None
        self.status_at, self.status_bytes, self.status_text = 0.0, 0, ""
        self.wire_bytes: Callable[[], int] = lambda: 0   # bytes received on the wire so far (status line)
        self.status_extra: Callable[[], str] | None = None   # what the owner adds to the status line
        self.face_check: asyncio.Future | None = None
        self.parts = PartAssembler()
        self.render_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        # Work beside the frames runs here at a lower CPU priority: the ladder's probes of the mouth
        # generator, and the wait for the still's repairing process (which does its work in a process of
        # its own). A slow machine's generator held the picture for its whole cost when it ran in the
        # frame's path.
        self.beside_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside", initializer=_lower_priority)
        self.beside: asyncio.Future | None = None
        self.beside_probe = False             # whether what runs beside is a probe (in this process)
        from callsynth.face import raster, reference_blend

        raster.warm_up()          # before the call, not at its first frame (or its first open mouth)
        reference_blend.warm_up()
        # Loaded before the call: a bad file stops us here, clearly, and the still's arrival costs only a
        # triangulation. The full-frame generator never builds a frame here: it repairs the still in a
        # process of its own (receiver/still_repairer.py), as often as RepairPacing lets it (on a 2-core
        # EPYC a repair cost 110-140 ms of CPU, 3-4 display periods), and the frames are the repaired
        # still's warp with the mouth repaired by the mouth generator. The network on the frame's path
        # (the mouth generator, under either model) gets the ladder: a machine that cannot afford it every
        # frame runs it every 2nd, 4th, or never.
        full = options.model == "generator"
        self.repairer = None
        if full:
            try:       # a generator file that cannot be used is refused here, clearly (GeneratorModelError)
                started = time.monotonic()
                self.repairer = StillRepairer(basis, options.generator, options.threads)
                self.stats.event(f"the still's repairer (the full-frame generator in a process of its own) "
                                 f"loaded in {time.monotonic() - started:.1f} s")
            except RepairError as exc:
                self.stats.event(f"the still's repairer could not start ({exc}); the frames warp the still "
                                 "as it came", logging.WARNING)
        self.renderers = mouth_renderers(basis) if full else Renderers(basis, options.model, options.generator)
        self.frame_network = self.renderers.repairs      # a network on the frame's path: the mouth generator
        self.quality = QualityLadder(options.fps, RENDER_LEVELS if self.frame_network else (0,),
                                     describe=describe_mouth if full else describe_render)
        self.still_repair = RepairPacing(options.fps, options.repair_every) if full else None
        if options.threads and self.renderers.repairs:
            import torch

            torch.set_num_threads(options.threads)

    def _display_available(self) -> bool:
        import os

        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            return True
        self.stats.event("no display here: --window ignored", logging.WARNING)
        return False

    # --- what the channels deliver ------------------------------------------------------------------

    def parse_control(self, message):
        """A message of the identity channel as its typed object (wire.decode_control), or None when it
        cannot be used (counted and said as a rejected identity message)."""
        try:
            return decode_control(message, self.basis)
        except WireError as exc:
            self.reject(exc, "identity")
            return None

    def accept_identity(self, parsed, size: int) -> int | None:
        """A still or a reference still (wire.IdentityMessage), or a part of one (wire.Part): the identity
        index it cached (0: a new still), for the caller to send the receipt of; None when nothing was
        cached. A new still in the same call (not a sharper copy of the one before) is checked for being the
        same person."""
        if isinstance(parsed, Part):
            try:
                whole = self.parts.add(parsed)
                if whole is None:
                    return None
                parsed, size = decode_identity(whole, self.basis), len(whole)
            except WireError as exc:
                self.reject(exc, "identity")
                return None
        if parsed.is_reference:
            return parsed.index if self.accept_reference(parsed, size) else None
        before = self.renderer.still if self.renderer is not None else None
        sharper = self.sharper_copy(parsed.still, size)
        if not self.accept_still(parsed.still, size, sharper):
            return None
        if before is not None and not sharper:
            self.face_check = check_same_face(self.stats, before, parsed.still)
        return 0

    def sharper_copy(self, still, size: int) -> bool:
        """Whether `still` is the one shown again (the same landmarks, exactly: they travel on a grid) in a
        bigger, better JPEG: `--budget auto` sends the still small first (sender.stream). The same again, or
        smaller (a sender that rejoined the call), is a new still."""
        before = self.renderer.still if self.renderer is not None and self.jitter is not None else None
        return before is not None and size > self.stats.identity_bytes \
            and before.image.shape == still.image.shape and np.array_equal(before.landmarks, still.landmarks)

    def accept_still(self, still, size: int, sharper: bool | None = None) -> bool:
        """A new still (index 0): True when cached (the caller then sends the receipt). One that cannot be
        rebuilt is refused and the last good one kept. A sharper copy of the still shown (`sharper`, or
        sharper_copy's say) replaces the picture, and the packets waiting and the reference stills held go
        on with it."""
        sharper = self.sharper_copy(still, size) if sharper is None else sharper
        try:
            renderer = self.renderers(still)
        except Exception as exc:  # noqa: BLE001 - a still that cannot be rebuilt must not cost the last good one
            self.reject(WireError(f"still cannot be rebuilt ({type(exc).__name__}: {exc}); keeping the "
                                  "last good one"), "identity")
            return False
        before, self.renderer = self.renderer, renderer
        self.stats.identity_bytes = size
        if self.repairer is not None:
            self.repairer.set_still(still)       # in order with the renderer: see _render
        if sharper:
            for index, reference in before.held_references().items():
                renderer.add_reference(index, reference)
                if self.repairer is not None:
                    self.repairer.add_reference(index, reference)
            self.stats.event(f"still sharpened ({size} bytes)")
        else:
            self.jitter = JitterBuffer(self.renderer.rest_pose, self.renderer.coder.expression_size,
                                       delay_ms=self.options.delay_ms)
            self.stats.event(f"still cached ({size} bytes)")
            if self.options.audio_fallback:
                self._start_speech_driver()
        if self.options.output:
            self._keep_recording(Path(self.options.output), still)
        return True

    def _keep_recording(self, out: Path, still) -> None:
        """Keep the still beside the recording (OUT_still.png), and start the recording at the first still;
        a place that cannot be written leaves the call unrecorded, said once, not ended."""
        import cv2

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out.with_name(out.stem + "_still.png")), still.image[:, :, ::-1]):
                raise OSError("the still's picture could not be written there")
            if self.recorder is None and not self.unrecorded:
                self.recorder = RecordingThread(CallRecorder(out, time.time(), with_audio=self.expect_audio,
                                                             fps=self.options.fps))
        except (OSError, ValueError, av.FFmpegError) as exc:    # ValueError: a container without H.264
            # in words, without Python's "[Errno 17] File exists: ..." (a folder on the way that is a file)
            why = f"{exc.filename} is a file, not a folder" if isinstance(exc, FileExistsError) else said(exc)
            if self.recorder is not None:
                self.stats.event(f"cannot keep the new still beside the recording: {why}", logging.WARNING)
            elif not self.unrecorded:
                self.stats.event(f"cannot record the call to {out}: {why}; the call goes on unrecorded",
                                 logging.WARNING)
                self.unrecorded = True

    def accept_reference(self, parsed, size: int) -> bool:
        """A reference still: cached by the renderer from the next frame on (it is warped like the still,
        so building it costs one triangulation); False when refused."""
        if self.renderer is None:
            self.reject(WireError("reference still before the still"), "early")
            return False
        self.renderer.add_reference(parsed.index, parsed.still)
        if self.repairer is not None:
            self.repairer.add_reference(parsed.index, parsed.still)
        self.stats.references_received += 1
        self.stats.reference_bytes += size
        self.stats.event(f"reference still {parsed.index} cached ({size} bytes)")
        return True

    def accept_features(self, message) -> None:
        arrival = int(time.time() * 1000)
        size = len(message) if isinstance(message, (bytes, bytearray, str)) else 0
        self.stats.feature_packets += 1
        self.stats.feature_bytes += size
        if self.jitter is None:
            self.reject(WireError("packet before the still"), "early")
            return
        try:
            packets = self.codec.decode_all(message)
        except WireError as exc:
            self.reject(exc, type(exc).__name__)
            return
        self.stats.feature_codes += len(packets)
        for features in packets:
            self.stats.speech_packets += bool(features.flags & FLAG_AUDIO)   # arrived, in time or late
            if self.jitter.push(features, arrival) == "accepted":
                self.last_packet_s = arrival / 1000

    def fault(self, channel: str) -> Callable[[Exception], None]:
        """What a message of `channel` that failed here (not the sender's fault: a bug, a full disk) is
        counted and said as: a rejected '<channel> (failed here)' message; the call goes on."""
        return lambda exc: self.reject(RuntimeError(f"{type(exc).__name__}: {exc}"), f"{channel} (failed here)")

    def reject(self, exc: Exception, kind: str) -> None:
        count = self.stats.rejected.get(kind, 0) + 1
        self.stats.rejected[kind] = count
        if count <= 3 or count in (10, 100, 1000):
            self.stats.event(f"rejected {kind} packet #{count}: {exc}", logging.WARNING)

    def accept_audio(self, frame) -> None:
        """One frame of the received voice: to the loudspeaker, the recording, and the speech fallback when
        it runs."""
        self.stats.audio_frames += 1
        if self.plays_voice:
            self._play(frame)
        if self.speech is not None:
            self._drive_from_speech(frame)
        if self.recorder is not None:
            self.recorder.add_audio(frame, time.time())

    def _play(self, frame) -> None:
        """Out of the loudspeaker, opened (in its own thread) at the first frame; a machine without one is
        said once and the call goes on silent."""
        if self.speaker is None:
            from .speaker import Speaker

            self.speaker = Speaker(echo=self.echo)
        if self.speaker.failure is not None:
            self.stats.event(f"no sound output ({self.speaker.failure}): the voice is not played", logging.WARNING)
            self.plays_voice = False
            return
        if self.speaker.opened.is_set() and not self.speaker_said:
            self.speaker_said = True
            self.stats.event(f"playing the voice on the default sound output ({self.speaker.through})")
        self.speaker.add(frame)

    def _load_speech_model(self):
        from audio2exp.model import ModelError, load_model

        try:
            return load_model(self.options.audio_model, self.basis)
        except ModelError as exc:
            self.stats.event(f"no audio fallback: {exc}", logging.WARNING)
            return None

    def _start_speech_driver(self) -> None:
        from audio2exp.driver import SpeechDriver

        if self.speech_model is not None:
            # it listens from the start; its silence is news only while it drives the face
            self.speech = SpeechDriver(self.speech_model, self.renderer.rest_pose, self.options.fps,
                                       driving=False)

    def _drive_from_speech(self, frame) -> None:
        """The voice through the speech model in a thread of its own, in order (as the sender does it,
        sender/speech.py): on the event loop its 2-3 ms a frame (a 2-core EPYC; three times that on a
        slower one) held up the packets and the still behind it for as long as the call listened. A
        machine that cannot keep up skips voice rather than fall ever further behind."""
        if self.speech_backlog >= MAX_VOICE_BACKLOG:
            self.stats.voice_frames_skipped += 1
            if self.stats.voice_frames_skipped == 1:
                self.stats.event("the voice-driven face falls behind the voice: skipping voice frames",
                                 logging.WARNING)
            return
        driver = self.speech
        self.speech_backlog += 1
        done = asyncio.get_running_loop().run_in_executor(self.speech_thread, driver.push_frame, frame)

        def took(future: asyncio.Future) -> None:
            self.speech_backlog -= 1
            if future.cancelled() or driver is not self.speech:
                return                     # the call ended, or a new still brought a new driver
            if future.exception() is not None:
                self.stats.event(f"the voice could not drive the face on one frame "
                                 f"({type(future.exception()).__name__}: {future.exception()})", logging.WARNING)
            elif future.result():
                self.speech_state = future.result()[-1][1:]

        done.add_done_callback(took)

    # --- play-out -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Frames at the display rate, for as long as the call lasts."""
        period = 1.0 / self.options.fps
        next_tick = time.time()
        while True:
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - time.time()))
            if time.time() - next_tick > 2 * period:
                next_tick = time.time()  # fell behind: skip, never burst
            if self.jitter is None or (self.jitter.newest_ms is None and self.speech_state is None):
                continue
            try:
                await self._show_frame()
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the call's picture
                # A frame that cannot be rebuilt is said and skipped; the loop (and the call) go on, so the
                # next packet's frame is shown. Before, the task died silently and nothing was shown again.
                self.stats.render_errors += 1
                if self.stats.render_errors <= 3 or self.stats.render_errors in (10, 100, 1000):
                    self.stats.event(f"frame not rebuilt ({type(exc).__name__}: {exc}); "
                                     f"{self.stats.render_errors} so far", logging.WARNING)

    def hung_up(self) -> None:
        """This side hung up and listens for the other's answer: what the other sent while the hang-up
        travelled is still shown as it arrives, but no frame is guessed past the newest packet (the other
        side has stopped; on a lossy link the answer took up to 2 s, and each side showed up to 66 frames
        of a concealed face after its own hang-up, a third of a short call's frames)."""
        self.after_hang_up = True

    async def play_out_buffer(self) -> None:
        """After a hang-up: show what is still buffered, up to the last packet, and no further."""
        if self.jitter is None or self.jitter.newest_ms is None:
            return
        self.final_ms = self.jitter.newest_ms
        deadline = time.time() + 2.0
        while not self.finished_playout and time.time() < deadline:
            await asyncio.sleep(0.01)

    async def _render(self, state) -> np.ndarray:
        """A frame at the quality the ladder chooses, built in the render thread, the warp alone too: the
        networks (torch) and the warp's compiled raster, remap and numpy let go of the GIL, so that packets
        keep being received and sent while a frame is built. Inline, the warp held up a two-way call's
        outgoing packets and added tens of ms to their jitter; on a machine emulated 3-4x slower (busy
        processes beside `callsynth demo --model warp`) it made the packets' jitter p95 150-170 ms against
        50-64 ms from the thread, and glass to glass p50 182-198 ms against 142-161 ms. The still's repair
        and the ladder's probes start here, beside."""
        costly = self.frame_network and self.quality.costly_next()
        if self.still_repair is not None and self.beside is None and self._repairer_ready() and self.still_repair.due():
            self.beside_probe = False
            # asked here, on the event loop, in order with the stills and references the renderer took: the
            # answer repairs this renderer's still, whatever arrives meanwhile
            self.repairer.request(state)
            self._beside(self._repair_into, self.renderer, self._repaired, self.repairer)
        elif self.frame_network and self.beside is None and self.quality.probe_due():
            self.beside_probe = True
            self._beside(self.renderer.render, state, self._probed, True)
        started = time.perf_counter()
        frame = await asyncio.get_running_loop().run_in_executor(self.render_thread, self.renderer.render, state,
                                                                 costly)
        if self.beside is not None and self.beside_probe:
            # a frame built while a probe runs beside it, in this process, pays for that too (the GIL, the
            # cores): a passing load, not what the level costs; counted, it stepped the mouth generator
            # down to the warp for the 9 s the ladder takes to climb back. (One built while the still's
            # repairer works is counted: that niced process may run for seconds on a starved machine, and
            # the ladder, blind meanwhile, kept the mouth generator on every frame at 14.5 fps.)
            return frame
        self._record(self.quality, costly, (time.perf_counter() - started) * 1000)
        return frame

    def _beside(self, work, state, done: Callable, *args) -> None:
        """Run work(state, *args) in the niced thread beside the frames; then `done(wall_ms, cpu_ms)` with its
        cost, or done(None, None) when it failed (said as a render error). One at a time: the frames never
        wait for it."""
        self.beside = asyncio.get_running_loop().run_in_executor(self.beside_thread, _cost_ms, work, state, *args)

        def finished(future: asyncio.Future) -> None:
            self.beside = None
            if future.cancelled():
                return
            if future.exception() is not None:
                # said like a frame that cannot be rebuilt; what it was for is tried again later
                self.stats.render_errors += 1
                self.stats.event(f"{getattr(work, '__name__', 'work')} beside the frames failed "
                                 f"({type(future.exception()).__name__}: {future.exception()})", logging.WARNING)
                done(None, None)
            else:
                done(*future.result())

        self.beside.add_done_callback(finished)

    def _repairer_ready(self) -> bool:
        """Whether the still's repairing process can take a repair now (one that went away is started
        again); one that cannot start is said once, and the frames warp the still as it stands."""
        if self.repairer is None:
            return False
        try:
            return self.repairer.ready_now()
        except RepairError as exc:
            self.stats.event(f"the still's repairer could not start ({exc}); the frames warp the still as it "
                             "stands", logging.WARNING)
            self.repairer.close()
            self.repairer = None
            return False

    @staticmethod
    def _repair_into(renderer: WarpRenderer, repairer: StillRepairer) -> float:
        """(In the thread beside the frames.) The repairing process's answer swapped into `renderer`'s
        warper whole (its frames warp it from their next one on; a renderer replaced meanwhile by a new
        still's is simply dropped); returns the process's CPU ms for it."""
        repaired, cpu_ms = repairer.result()
        renderer.warper.still = repaired
        return cpu_ms

    def _repaired(self, wall_ms: float | None, cpu_ms: float | None) -> None:
        # the lower the frames' ladder has had to step (mouth every 2nd, 4th frame, the warp alone), the
        # longer the next repair waits: 2x, 4x, 8x. In a two-way demo on two cores (both calls, both
        # trackers) the repairs at the usual pace held glass to glass at p50 148-154 ms, against 78-84 ms
        # with the mouth generator alone.
        self.still_repair.done(wall_ms, cpu_ms, slower=2.0 ** self.quality.level)
        if self.still_repair.repairs == 1 and wall_ms is not None:
            self.stats.event(f"the generator repaired the still beside the frames ({wall_ms:.0f} ms); "
                             "the frames warp the repaired still from now on")

    def _probed(self, wall_ms: float | None, cpu_ms: float | None) -> None:
        """A probe's cost tells the ladder whether this machine can afford its network again: CPU time when
        torch runs on one thread (the thread is niced, so its wall time would count the frames' turns)."""
        import torch

        ms = None if wall_ms is None else cpu_ms if torch.get_num_threads() == 1 else wall_ms
        self._announce(self.quality, self.quality.level, self.quality.record_probe(ms))

    def _record(self, ladder: QualityLadder, costly: bool, ms: float) -> None:
        self._announce(ladder, ladder.level, ladder.record(costly, ms))

    def _announce(self, ladder: QualityLadder, level: int, step: dict | None) -> None:
        if step is not None:
            self.stats.event(f"quality: {step['now']} ({step['why']})",
                             logging.WARNING if ladder.level > level else logging.INFO)

    async def _show_frame(self) -> None:
        now = time.time()
        if not self.after_hang_up and self._use_fallback(now):
            state = self.switch(self.speech_state, "voice", now * 1000)
            self._count_shown(self._present(await self._render(state), now))
            self.stats.fallback_frames += 1
            self.finished_playout = self.final_ms is not None
            return
        if self.jitter.newest_ms is None:
            return
        playout = self.jitter.displayed_ms(self.jitter.playout_ms(now * 1000))
        if self.final_ms is not None and playout > self.final_ms:
            self.finished_playout = True
            return
        if self.after_hang_up and playout > self.jitter.newest_ms:
            return
        state, concealed = self.jitter.state_at(playout)
        # the sender's own switch between its camera and its voice changes the packets' kind: glided too
        state = self.switch(state, "voice packets" if self.jitter.from_audio else "packets", now * 1000)
        if state is None:
            return
        shown = self._present(await self._render(state), now)
        stats = self._count_shown(shown)
        stats.concealed_frames += concealed
        stats.latencies_ms.append(shown * 1000 - playout)   # glass to glass: shown − captured
        stats.frame_log.append((round(playout), round(shown * 1000), concealed))
        if shown - self.last_status >= STATUS_EVERY_S:
            self.last_status = shown
            log.info("%s", stats.live_line())

    def _count_shown(self, shown: float) -> ReceiverStats:
        stats = self.stats
        stats.frames += 1
        stats.first_frame = stats.first_frame or shown
        stats.last_frame = shown
        stats.frame_times.append(shown)
        return stats

    def _use_fallback(self, now: float) -> bool:
        """Packets have stopped (or never came) while the voice goes on: let the voice drive the face."""
        stopped = self.last_packet_s is None or (now - self.last_packet_s) * 1000 > self.options.fallback_after_ms
        use = self.speech is not None and self.speech_state is not None and stopped
        if use != self.in_fallback:
            self.in_fallback = use
            if self.speech is not None:
                self.speech.silence.driving = use
                if use and self.switch.shown is not None:
                    self.speech.start_from(self.switch.shown[0])   # the head goes on from where it is shown
            self.stats.event("feature packets stopped: the received voice drives the face" if use else
                             "feature packets are back")
        return use

    def _present(self, frame: np.ndarray, now: float) -> float:
        """Record and/or show a frame; returns the time it was shown."""
        if self.recorder is not None:
            self.recorder.add_video(frame, now)
        if self.window:
            inset = self.self_view() if self.self_view is not None else None
            action = self.screen.show(frame, inset, self._status_line(now))
            if action == "quit":
                self.stats.event("hung up from the keyboard")
                self.hang_up("hung up from the keyboard")
            elif action == "closed":
                self.stats.event("the window has closed; the call goes on without it", logging.WARNING)
                self.window = False
            elif action is not None and not (self.on_key is not None and self.on_key(action)):
                self.stats.event(f"'{action}' acts on the sending side; this one-way receiver sends nothing")
        return time.time()

    def _finish_recording(self) -> None:
        recorder = self.recorder
        finished = recorder.close()
        self.stats.recording = {"path": str(recorder.path), "frames": recorder.frames,
                                "frames_skipped": recorder.dropped["video"],
                                "voice_frames_skipped": recorder.dropped["audio"],
                                "finished": finished and recorder.error is None}
        if recorder.error is not None:
            self.stats.recording["error"] = str(recorder.error)
            self.stats.event(f"the recording {recorder.path} stopped: {recorder.error}", logging.WARNING)
        elif not finished:
            self.stats.event(f"the recording {recorder.path} was still being written at the end", logging.WARNING)
        if any(recorder.dropped.values()):
            self.stats.event(f"the recording skipped {recorder.dropped['video']} pictures and "
                             f"{recorder.dropped['audio']} voice frames: the encoder fell behind", logging.WARNING)

    def _status_line(self, now: float) -> str:
        """What the screen says under the picture, refreshed twice a second: frame rate and glass-to-glass
        latency of the last frames, kbps on the wire, the share of frames concealed, the renderer."""
        if now - self.status_at < 0.5 and self.status_text:
            return self.status_text
        stats, total = self.stats, self.wire_bytes()
        kbps = (total - self.status_bytes) * 8 / 1000 / max(1e-3, now - self.status_at) if self.status_at else 0.0
        fps, latency = stats.recent(30)
        concealed = np.mean([k for _, _, k in stats.frame_log[-150:]]) if stats.frame_log else 0.0
        self.status_at, self.status_bytes = now, total
        latency = "-" if np.isnan(latency) else f"{latency:.0f} ms"
        extra = f" | {self.status_extra()}" if self.status_extra is not None else ""
        self.status_text = (f"{fps:.0f} fps | {latency} | {kbps:.1f} kbps in | "
                            f"{concealed:.0%} concealed | {self.quality_now()}{extra} | q: hang up")
        return self.status_text

    def close(self) -> dict:
        """Stop the sinks; the picture's part of the summary (jitter buffer, quality)."""
        if self.recorder is not None:
            self._finish_recording()
        if self.speaker is not None:
            self.stats.speaker = self.speaker.close()
        if self.jitter is not None:
            self.stats.jitter = dict(self.jitter.counts, delay_ms=round(self.jitter.delay_ms, 1),
                                     delay="adaptive" if self.jitter.adaptive else "fixed",

                                     offset_ms=round(self.jitter.offset_ms, 1))
            spread = self.jitter.spread_ms()
            if spread is not None:
                self.stats.jitter.update({k: round(v, 1) for k, v in spread.items()})
        if self.renderer is not None:
            self.stats.mouth_sources = dict(self.renderer.blender.mouth_choices)
        if self.screen is not None:
            self.screen.close()
        self.render_thread.shutdown(wait=False)
        self.beside_thread.shutdown(wait=False, cancel_futures=True)
        self.speech_thread.shutdown(wait=False, cancel_futures=True)
        if self.repairer is not None:
            self.repairer.close()
        out = {"renderer": self.options.model, "quality": self.quality.summary(), "quality_now": self.quality_now()}
        if self.still_repair is not None:
            repairer = self.repairer
            out["still_repair"] = dict(self.still_repair.summary(),
                                       process_peak_memory_mb=repairer and repairer.peak_memory_mb,
                                       process_proportional_mb=repairer and repairer.proportional_mb)
        return out

    def quality_now(self) -> str:
        """What the renderer does now, in words: the ladder's level, and under the full-frame generator how
        often it has repaired the still."""
        if self.still_repair is None:
            return self.quality.now
        return f"{self.quality.now}; {self.still_repair.describe()}"


def _lower_priority() -> None:
    """Nice the calling thread (Linux: a thread has its own nice value) so the frames' threads come first."""
    import os
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):      # not Linux, or not allowed: it runs at the usual priority
        pass


def _cost_ms(work, state, *args) -> tuple[float, float]:
    """(wall ms, CPU ms) that work(state, *args) cost: this thread's, plus what the work says it spent
    elsewhere (a float it returns: the still repairer's process)."""
    import torch

    wall, cpu = time.perf_counter(), time.thread_time()
    with torch.inference_mode():
        elsewhere = work(state, *args)
    spent = elsewhere if isinstance(elsewhere, float) else 0.0
    return (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000 + spent


def check_same_face(stats: ReceiverStats, before, after) -> asyncio.Future:
    """A new still in the same call: say aloud whether it is still the same person (dlib's distance,
    computed off the event loop)."""
    from callsynth.model.identity import SAME_FACE, face_distance

    async def check():
        try:
            distance = await asyncio.get_running_loop().run_in_executor(
                None, face_distance, before.image, before.landmarks, after.image, after.landmarks)
        except Exception as exc:  # noqa: BLE001 - the check is a warning, never a failure
            stats.event(f"could not compare the new still's face: {exc}", logging.WARNING)
            return
        if distance > SAME_FACE:
            stats.event(f"the caller's face changed: the new still shows a different person "
                        f"(face distance {distance:.2f} > {SAME_FACE})", logging.WARNING)
        else:
            stats.event(f"a new still from the caller, the same face (distance {distance:.2f})")

    return asyncio.ensure_future(check())
