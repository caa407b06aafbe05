"""`callsynth bench`: milliseconds per frame of the receiver's renderers at 256² on this machine, and each
one's cost over the warp's.

The mouth generator is timed as a call runs it (ONNX Runtime on one thread, both mouth references held)
on codes that open the mouth: its costly case, since a closed mouth runs no network (`open_weight`), and
traced by TorchScript beside it; the full-frame generator as the default renderer runs it (repairing the
still on every Nth frame: whole cycles are timed, so its mean cost per frame), and repairing every frame
in the ways worth trying on a CPU (threads, channels-last memory, TorchScript, ONNX Runtime).

A shared machine's speed drifts within seconds (the warp alone took 4.8 ms in one run and 7.2 ms in the
next, and the mouth generator's row read 1.6× and 2.3× the warp in two runs a minute apart, 2-core AMD
EPYC), so every row is timed in ROUNDS short rounds, each between two timings of the warp, and its
ratio is the median over rounds of its time over the warp's around it: what the ratio targets mean."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np
import torch

from .face.basis import ExpressionBasis
from .face.still import Still
from .tool_options import TOOLS

ROUNDS = 5


@dataclass
class Timed:
    """One row: `render(i)` renders frame i; `cycle`: frames a round must be a whole number of;
    `setup()` runs before each of its rounds (the threads it runs on)."""

    renderer: str
    variant: str
    render: object
    cycle: int = 1
    setup: object = None


def _ms(render, frames: int) -> float:
    start = time.perf_counter()
    for i in range(frames):
        render(i)
    return (time.perf_counter() - start) * 1000 / frames


def bench(still: Still, basis: ExpressionBasis, generator: str | None, frames: int = TOOLS.bench_frames) -> list[dict]:
    """Rows of {renderer, variant, ms (median over rounds), ratio (median over rounds of its time over the
    warp's around it; the warp's own row 1)}; `frames` timed per row, in ROUNDS rounds."""
    from receiver.renderer import Renderers

    warp = Renderers(basis, "warp")(still)
    rng = np.random.default_rng(0)
    states = [(warp.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(max(frames, 2))]
    state = lambda i: states[i % len(states)]     # noqa: E731
    warp_row = Timed("warp", "numpy + OpenCV", lambda i: warp.render(state(i)))
    timed = [] if generator is None else _networks(still, basis, generator, warp, states, rng)
    per_round = max(1, -(-frames // ROUNDS))
    results = {id(t): [] for t in timed}
    for t in [warp_row] + timed:        # warm-up: the warp's compiled kernels load, a network's first runs allocate
        if t.setup:
            t.setup()
        t.render(0)
        t.render(1)
    warp_ms = [_ms(warp_row.render, per_round) for _ in range(1 if timed else ROUNDS)]
    for _ in range(ROUNDS if timed else 0):
        for t in timed:
            if t.setup:
                t.setup()
            n = -(-per_round // t.cycle) * t.cycle
            ms = _ms(t.render, n)
            warp_ms.append(_ms(warp_row.render, per_round))
            results[id(t)].append((ms, ms / ((warp_ms[-2] + warp_ms[-1]) / 2)))
    rows = [{"renderer": warp_row.renderer, "variant": warp_row.variant, "ms": float(np.median(warp_ms)),
             "ratio": 1.0}]
    for t in timed:
        ms, ratio = np.median(np.array(results[id(t)]), axis=0)
        rows.append({"renderer": t.renderer, "variant": t.variant, "ms": float(ms), "ratio": float(ratio)})
    return rows


def _threads(n: int):
    return lambda: torch.set_num_threads(n)


def _networks(still: Still, basis: ExpressionBasis, generator: str, warp, states, rng) -> list[Timed]:
    """The rows of the renderers with a network."""
    from receiver.renderer import Renderers

    from .face.regions import OPEN_MOUTH, lip_gap
    from .model.mouth_generator import MOUTH_SOURCES
    from .model.runtime import onnx_full_frame, traced, traced_mouth

    frames = len(states)
    timed = []
    renderers = Renderers(basis, "mouth")          # as a call runs it: ONNX Runtime, one thread
    mouths = {"onnx": renderers(still), "script": renderers(still)}   # one each, so the rounds interleave them
    mouths["script"].run = traced_mouth(renderers.loaded)
    for mouth in mouths.values():
        for index in MOUTH_SOURCES:              # a call's receiver has both by the time a mouth opens
            mouth.add_reference(index, still)
    more = ((warp.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(20 * frames))
    opened = list(islice((s for s in chain(states, more) if lip_gap(warp.target_landmarks(*s)) >= OPEN_MOUTH),
                         frames))
    opened = opened if len(opened) >= 2 else states
    timed.append(Timed("warp + mouth gen.", "ONNX Runtime, 1 thread (a call's)",
                       lambda i: mouths["onnx"].render(opened[i % len(opened)])))
    for threads in (1, 2):
        timed.append(Timed("warp + mouth gen.", f"TorchScript, {threads} thread(s)",
                           lambda i: mouths["script"].render(opened[i % len(opened)]), setup=_threads(threads)))

    # the default renderer: the generator repairs the still on every Nth frame, every frame warps it and the
    # mouth generator repairs its mouth (receiver.generator_renderer); timed over whole cycles of N frames,
    # each beginning with a repair (a call repairs in a process of its own: its frames cost the rows above).
    # The generator is loaded once, and exported to ONNX Runtime once for each thread count, for both rows.
    from receiver.generator_renderer import GeneratorRenderer

    repairers = Renderers(basis, "generator", generator or None)
    net, size = repairers.loaded
    full_size = still.image.shape[0]
    onnx = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        onnx[threads] = repairers.run = onnx_full_frame(net, full_size, threads)
        repairer = repairers(still)             # as a call builds it, on this thread count's run
        label = f"still repaired 1 in {repairer.every}" + (" + mouth" if repairer.mouth else "")
        timed.append(Timed(label, f"ONNX Runtime, {threads} thread(s)",
                           lambda i, r=repairer: r.render(states[i % frames]), cycle=repairer.every,
                           setup=_threads(threads)))

    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    script = traced(net, full_size)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for variant, loaded, run in ((f"eager, {threads} thread(s), contiguous", net, None),
                                     (f"eager, {threads} thread(s), channels_last", last, None),
                                     (f"TorchScript, {threads} thread(s)", net, script),
                                     (f"ONNX Runtime, {threads} thread(s)", net, onnx[threads])):
            gen = GeneratorRenderer(basis, still, loaded=(loaded, size), run=run, every=1)
            timed.append(Timed("full gen. every frame", variant, lambda i, g=gen: g.render(states[i % frames]),
                               setup=_threads(threads)))
    return timed
