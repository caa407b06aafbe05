"""The full-frame generator's repair of the still, in a process of its own at a lower CPU priority.

A call's frames warp the still; the generator repairs that still now and then (GeneratorRenderer.repair_still,
README "The generator"). In a thread of the receiver it shared the receiver's GIL: niced, on a machine
emulated 3-4x slower (busy processes beside `callsynth demo`), a repair took 5 s of wall time for 0.2 s of
CPU and the frames waited behind it, up to 190 ms between two, while the descheduled thread held the GIL
the eager generator takes between its operations; at the usual priority the frames kept their rate there
but on one core the repairs took the tracker's and the frames' turns (p50 103 ms against 60). A process
has its own GIL and its own priority for all its threads, torch's included: the frames never wait for it,
and a starved machine simply repairs less often.

The process holds what it needs to repair as the receiver does: the still, the reference stills (the
frame it repairs is the warp with their mouth and eyes, as trained), the generator. Messages go in the
order they were sent, all from the call's event loop, so a repair uses the still and references the
receiver's renderer held when it asked for it, and its answer belongs to that renderer."""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time

import numpy as np

from callsynth.face.basis import ExpressionBasis
from callsynth.face.still import Still

log = logging.getLogger("callsynth.receive")
NICE = 10                 # the process's priority below the call's (Linux nice value)
START_TIMEOUT_S = 300.0   # loading torch and the generator on a starved machine; past that it has failed
ANSWER_TIMEOUT_S = 60.0   # one repair on a starved machine (seconds there); past that the process is stuck


def _proportional_mb() -> float | None:
    """This process's proportional set size (Linux): its memory with the pages it shares with others (torch's
    and OpenCV's libraries, which the receiver maps too) divided among them; None where unknown."""
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class RepairError(RuntimeError):
    """The repairing process failed or went away; the call goes on with the still it has. `unusable`: the
    generator's file could not be used (GeneratorModelError in the process)."""

    def __init__(self, text: str, unusable: bool = False):
        super().__init__(text)
        self.unusable = unusable


def _serve(conn, basis: ExpressionBasis, generator: str | None, threads: int | None) -> None:
    """The process: load the generator (at the usual priority: niced, on a busy single core, loading torch
    took longer than a 15 s call), then, niced, answer each message in order (see the module's docstring).
    One torch thread unless told: two kept both cores of a 2-core machine busy through each repair."""
    import os

    import torch

    from callsynth.model.runtime import GeneratorModelError
    from callsynth.stop_signals import leave_ctrl_c_to_the_parent

    from .renderer import Renderers
    from .stats import peak_memory_mb

    leave_ctrl_c_to_the_parent()          # the receiver ends the call, then this process (`close`)
    torch.set_num_threads(threads or 1)
    try:
        renderers = Renderers(basis, "generator", generator, compiled=False, mouth_on_frames=False)
    except Exception as exc:  # noqa: BLE001 - said to the receiver, which goes on without repairs
        unusable = isinstance(exc, GeneratorModelError)
        conn.send(("failed", str(exc) if unusable else f"{type(exc).__name__}: {exc}", unusable))
        return
    try:
        os.nice(NICE)
    except (AttributeError, OSError):      # not on this system, or not allowed: the usual priority
        pass
    conn.send(("ready",))
    renderer = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "close":
            return
        try:
            if kind == "still":
                renderer = renderers(message[1])
            elif kind == "reference" and renderer is not None:
                renderer.add_reference(message[1], message[2])
            elif kind == "repair":
                if renderer is None:
                    conn.send(("failed", "no still to repair yet", False))
                    continue
                cpu = time.process_time()
                with torch.inference_mode():
                    renderer.repair_still(message[1], carry=True)
                conn.send(("repaired", renderer.warper.still, (time.process_time() - cpu) * 1000,
                           peak_memory_mb(), _proportional_mb()))
        except Exception as exc:  # noqa: BLE001 - one failed repair is said; the next may work
            if kind == "repair":
                conn.send(("failed", f"{type(exc).__name__}: {exc}", False))


class StillRepairer:
    """The receiver's side of the repairing process, used from the call's event loop (`set_still`,
    `add_reference`, `ready_now`, `request`) but for `result`, which waits for the answer to a request
    and is meant for a thread beside the frames. Nothing else waits: messages go down the pipe from a
    thread of their own (a still is larger than a pipe's buffer, and the process reads nothing while it
    loads or repairs: sent inline, the first still held the call's frames for the 2 s the process took to
    load torch). Started, and waited for, before the call; a process that went away is started again by
    `ready_now`, with the still and references it needs, up to MAX_STARTS times."""

    MAX_STARTS = 3

    def __init__(self, basis: ExpressionBasis, generator: str | None = None, threads: int | None = None):
        """Raises GeneratorModelError when the generator's file cannot be used, RepairError when the
        process could not start otherwise."""
        self.basis, self.generator, self.threads = basis, generator, threads
        self.still: Still | None = None
        self.references: dict[int, Still] = {}
        self.starts = 0
        self.peak_memory_mb: float | None = None      # the process's peak resident memory
        self.proportional_mb: float | None = None     # its largest proportional set size (shared pages split)
        self.process = self.conn = self.outbox = None
        self.ready = False
        self._start()
        try:
            self._wait_ready()
        except RepairError as exc:
            if exc.unusable:
                from callsynth.model.runtime import GeneratorModelError   # torch: only a repairing receiver's

                raise GeneratorModelError(str(exc)) from None
            raise

    def _wait_ready(self) -> None:
        """Wait for the process to load its generator, before the call: loading torch while the call ran
        took the frames' and the tracker's turns on a busy machine (a 15 s call emulated 3-4x slower showed
        25-27 fps and no repair at all). Raises RepairError when it could not."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready_now():
            if time.monotonic() > deadline:
                self.process.kill()
                raise RepairError(f"the still's repairer did not load within {START_TIMEOUT_S:.0f} s")
            self.conn.poll(0.2)

    def _start(self) -> None:
        """A new process, handed the still and references the last one held."""
        if self.process is not None:
            self.outbox.put(None)             # the last process's poster ends
        context = multiprocessing.get_context("spawn")      # no fork of a process holding threads and torch
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, self.basis, self.generator, self.threads),
                                       daemon=True, name="still-repairer")
        self.process.start()
        child.close()
        self.starts += 1
        self.ready = False
        self.outbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._post, args=(self.conn, self.outbox), daemon=True,
                         name="still-repairer-post").start()
        if self.still is not None:
            self._send(("still", self.still))
            for index, reference in self.references.items():
                self._send(("reference", index, reference))

    @staticmethod
    def _post(conn, outbox: queue.Queue) -> None:
        while (message := outbox.get()) is not None:
            try:
                conn.send(message)
            except (OSError, ValueError):     # the process went away: ready_now starts another
                return

    def _send(self, message) -> None:
        self.outbox.put(message)

    def set_still(self, still: Still) -> None:
        """A new still (its references are forgotten, as the receiver's renderer forgets them)."""
        self.still, self.references = still, {}
        self._send(("still", still))

    def add_reference(self, index: int, still: Still) -> None:
        self.references[index] = still
        self._send(("reference", index, still))

    def ready_now(self) -> bool:
        """Whether the process can take a request (never waits); one that went away is started again, while
        starts are left. Only while no request waits for its answer: both read the same pipe. Raises
        RepairError when it could not start."""
        while not self.ready and self.conn.poll(0):
            try:
                reply = self.conn.recv()
            except (EOFError, OSError):
                break
            if reply[0] == "failed":
                raise RepairError(reply[1], unusable=reply[2])
            self.ready = reply[0] == "ready"
        if self.process.is_alive():
            return self.ready
        if self.starts >= self.MAX_STARTS:
            raise RepairError(f"the still's repairer stopped {self.starts} times (exit code "
                              f"{self.process.exitcode})")
        self._start()
        return False

    def request(self, state) -> None:
        """Ask for the still repaired for `state` (pose, code), after the still and references sent so far."""
        self._send(("repair", state))

    def result(self) -> tuple[np.ndarray, float]:
        """The answer to the request: (the repaired still, the process's CPU ms for it). Waits; raises
        RepairError when the process failed or went away (ready_now then starts another)."""
        if not self.conn.poll(ANSWER_TIMEOUT_S):
            self.process.kill()
            raise RepairError(f"the still's repairer did not answer within {ANSWER_TIMEOUT_S:.0f} s")
        try:
            reply = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise RepairError(f"the still's repairer went away ({exc or 'closed'})") from exc
        if reply[0] == "failed":
            raise RepairError(reply[1])
        _, repaired, cpu_ms, peak_mb, proportional_mb = reply
        if peak_mb is not None:
            self.peak_memory_mb = round(max(self.peak_memory_mb or 0.0, peak_mb), 1)
        if proportional_mb is not None:
            self.proportional_mb = round(max(self.proportional_mb or 0.0, proportional_mb), 1)
        return repaired, cpu_ms

    def close(self) -> None:
        self._send(("close",))
        self.outbox.put(None)
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
