"""`callsynth bench`: milliseconds per frame of the receiver's renderers at 256² on this machine.

The mouth generator is timed as a call runs it (ONNX Runtime on one thread, both mouth references held)
on codes that open the mouth: its costly case, since a closed mouth runs no network (`open_weight`), and
traced by TorchScript beside it; the full-frame generator as the default renderer runs it (repairing the
still on every Nth frame: a sequence of whole cycles is timed, so its mean cost per frame), and repairing
every frame in the ways worth trying on a CPU (threads, channels-last memory, TorchScript, ONNX Runtime)."""

from __future__ import annotations

import time
from itertools import chain, islice

import numpy as np
import torch

from .face.basis import ExpressionBasis
from .face.still import Still
from .tool_options import TOOLS


def _time(fn, frames: int, warm_up: bool = True) -> float:
    if warm_up:
        fn(0)
        fn(1)
    start = time.perf_counter()
    for i in range(frames):
        fn(i)
    return (time.perf_counter() - start) * 1000 / frames


def bench(still: Still, basis: ExpressionBasis, generator: str | None, frames: int = TOOLS.bench_frames) -> list[dict]:
    from receiver.renderer import Renderers

    warp = Renderers(basis, "warp")(still)
    rng = np.random.default_rng(0)
    states = [(warp.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(frames)]
    rows = [{"renderer": "warp", "variant": "numpy + OpenCV", "ms": _time(lambda i: warp.render(states[i]),
                                                                         frames)}]
    if generator is None:
        return rows
    rows += _networks(still, basis, generator, frames, warp, states, rng)
    # the warp again at the end, and its figure the mean of both: this machine's speed drifted within a run
    # (the warp alone took 4.8 ms in one run and 7.2 ms in the next), and every ratio is taken against it
    rows[0]["ms"] = (rows[0]["ms"] + _time(lambda i: warp.render(states[i]), frames)) / 2
    return rows


def _networks(still: Still, basis: ExpressionBasis, generator: str, frames: int, warp, states, rng) -> list[dict]:
    """The rows of the renderers with a network."""
    from receiver.renderer import Renderers

    from .face.regions import OPEN_MOUTH, lip_gap
    from .model.mouth_generator import MOUTH_SOURCES
    from .model.runtime import onnx_full_frame, traced, traced_mouth

    rows = []
    mouth = Renderers(basis, "mouth")(still)        # as a call runs it: ONNX Runtime, one thread
    for index in MOUTH_SOURCES:              # a call's receiver has both by the time a mouth opens
        mouth.add_reference(index, still)
    more = ((warp.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(20 * frames))
    opened = list(islice((s for s in chain(states, more) if lip_gap(warp.target_landmarks(*s)) >= OPEN_MOUTH),
                         frames))
    opened = opened if len(opened) >= 2 else states
    rows.append({"renderer": "warp + mouth gen.", "variant": "ONNX Runtime, 1 thread (a call's)",
                 "ms": _time(lambda i: mouth.render(opened[i % len(opened)]), frames)})
    onnx_run, mouth.run = mouth.run, traced_mouth(mouth.net)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows.append({"renderer": "warp + mouth gen.", "variant": f"TorchScript, {threads} thread(s)",
                     "ms": _time(lambda i: mouth.render(opened[i % len(opened)]), frames)})
    mouth.run = onnx_run

    # the default renderer: the generator repairs the still on every Nth frame, every frame warps it and the
    # mouth generator repairs its mouth (receiver.generator_renderer); timed over whole cycles of N frames,
    # each beginning with a repair (a call repairs in a process of its own: its frames cost the row above)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        repairer = Renderers(basis, "generator", generator or None)(still)    # ONNX Runtime on `threads`
        every = repairer.every
        repairer.render(states[0])
        repairer.render(states[1])                                   # warm-up
        repairer.frames = 0
        cycles = -(-frames // every) * every
        label = f"still repaired 1 in {every}" + (" + mouth" if repairer.mouth else "")
        rows.append({"renderer": label, "variant": f"ONNX Runtime, {threads} thread(s)",
                     "ms": _time(lambda i, r=repairer: r.render(states[i % frames]), cycles, warm_up=False)})

    gen = Renderers(basis, "generator", generator or None, compiled=False, repair_every=1)(still)
    full_size = still.image.shape[0]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for layout in ("contiguous", "channels_last"):
            gen.net.to(memory_format=torch.channels_last if layout == "channels_last"
                       else torch.contiguous_format)
            rows.append({"renderer": "full gen. every frame", "variant": f"eager, {threads} thread(s), {layout}",
                         "ms": _time(lambda i: gen.render(states[i]), frames)})
        gen.net.to(memory_format=torch.contiguous_format)
        for variant, run in ((f"TorchScript, {threads} thread(s)", lambda: traced(gen.net, full_size)),
                             (f"ONNX Runtime, {threads} thread(s)",
                              lambda: onnx_full_frame(gen.net, full_size, threads))):
            gen.run = run()
            rows.append({"renderer": "full gen. every frame", "variant": variant,
                         "ms": _time(lambda i: gen.render(states[i]), frames)})
        gen.run = None
    return rows
