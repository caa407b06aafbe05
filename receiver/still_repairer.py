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
frame it repairs is the warp with their mouth and eyes, as trained), the generator. Messages go in order
over one pipe, so a repair always uses the still and references sent before it; a repair of a still that
has since been replaced is thrown away by the caller (`generation`)."""

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


def _unshared_mb() -> float | None:
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
    """The repairing process failed or went away; the call goes on with the still it has."""


def _serve(conn, basis: ExpressionBasis, generator: str | None, threads: int | None) -> None:
    """The process: load the generator (at the usual priority: niced, on a busy single core, loading torch
    took longer than a 15 s call), then, niced, answer each message in order (see the module's docstring).
    One torch thread unless told: two kept both cores of a 2-core machine busy through each repair."""
    import os

    import torch

    from .stats import peak_memory_mb

    from .renderer import Renderers

    torch.set_num_threads(threads or 1)
    try:
        renderers = Renderers(basis, "generator", generator, script=False)
    except Exception as exc:  # noqa: BLE001 - said to the receiver, which goes on without repairs
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
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
                    conn.send(("failed", "no still to repair yet"))
                    continue
                wall, cpu = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    renderer.repair_still(message[1], carry=True)
                conn.send(("repaired", renderer.warper.still, (time.perf_counter() - wall) * 1000,
                           (time.process_time() - cpu) * 1000,
                           peak_memory_mb(), _unshared_mb()))
        except Exception as exc:  # noqa: BLE001 - one failed repair is said; the next may work
            if kind == "repair":
                conn.send(("failed", f"{type(exc).__name__}: {exc}"))


class StillRepairer:
    """The receiver's side of the repairing process. `set_still` and `add_reference` are called from the
    call's event loop and never wait: messages go down the pipe from a thread of their own (a still is
    larger than a pipe's buffer, and the process reads nothing while it loads or repairs: sent inline,
    the first still held the call's frames for the 2 s the process took to load torch). `repair` waits
    for its answer and is meant for a thread beside the frames. Started, and waited for, before the call;
    a process that failed is started again at the next repair, with the still and references it needs, up
    to MAX_STARTS times."""

    MAX_STARTS = 3

    def __init__(self, basis: ExpressionBasis, generator: str | None = None, threads: int | None = None):
        self.basis, self.generator, self.threads = basis, generator, threads
        self.lock = threading.Lock()          # the still and its references change in two threads
        self.generation = 0                   # which still the process holds (one more per still)
        self.still: Still | None = None
        self.references: dict[int, Still] = {}
        self.starts = 0
        self.peak_memory_mb: float | None = None      # the process's peak resident memory
        self.proportional_mb: float | None = None     # its largest proportional set size (shared pages split)
        self.process = self.conn = self.outbox = None
        self.ready = False
        self._start()
        self._wait_ready()

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

    @staticmethod
    def _post(conn, outbox: queue.Queue) -> None:
        while (message := outbox.get()) is not None:
            try:
                conn.send(message)
            except (OSError, ValueError):     # the process went away: the next repair starts another
                return

    def _send(self, message) -> None:
        self.outbox.put(message)

    def set_still(self, still: Still) -> None:
        """A new still (its references are forgotten, as the receiver's renderer forgets them)."""
        with self.lock:
            self.generation += 1
            self.still, self.references = still, {}
        self._send(("still", still))

    def add_reference(self, index: int, still: Still) -> None:
        self.references[index] = still
        self._send(("reference", index, still))

    def ready_now(self) -> bool:
        """Whether the process has loaded its generator (never waits). Only while no repair is waiting for
        its answer: both read the same pipe. Raises RepairError when it could not start."""
        if self.ready:
            return True
        while self.conn.poll(0):
            try:
                reply = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise RepairError(f"the still's repairer went away ({exc or 'closed'})") from exc
            if reply[0] == "failed":
                raise RepairError(reply[1])
            self.ready = self.ready or reply[0] == "ready"
        if not self.ready and not self.process.is_alive():
            raise RepairError(f"the still's repairer ended (exit code {self.process.exitcode})")
        return self.ready

    def repair(self, state) -> tuple[int, np.ndarray, float]:
        """(the generation of the still repaired, the repaired still, the process's CPU ms for it); raises
        RepairError when the process failed (it is started again next time, while starts are left)."""
        if not self.process.is_alive():
            if self.starts >= self.MAX_STARTS:
                raise RepairError(f"the still's repairer stopped {self.starts} times; no more repairs")
            self._start()
            with self.lock:
                still, references = self.still, dict(self.references)
            if still is not None:
                self._send(("still", still))
                for index, reference in references.items():
                    self._send(("reference", index, reference))
        generation = self.generation
        self._send(("repair", state))
        while True:
            if not self.conn.poll(START_TIMEOUT_S if not self.ready else 60.0):
                self.process.kill()
                raise RepairError("the still's repairer did not answer")
            try:
                reply = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise RepairError(f"the still's repairer went away ({exc or 'closed'})") from exc
            if reply[0] == "ready":
                self.ready = True
                continue
            if reply[0] == "failed":
                raise RepairError(reply[1])
            _, repaired, _wall_ms, cpu_ms, peak_mb, proportional_mb = reply
            if peak_mb is not None:
                self.peak_memory_mb = round(max(self.peak_memory_mb or 0.0, peak_mb), 1)
            if proportional_mb is not None:
                self.proportional_mb = round(max(self.proportional_mb or 0.0, proportional_mb), 1)
            return generation, repaired, cpu_ms

    def close(self) -> None:
        self._send(("close",))
        self.outbox.put(None)
        if self.process is not None:
            self.process.join(timeout=2)
            if self.process.is_alive():
                self.process.kill()
