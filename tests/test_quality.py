"""The adaptive quality ladder, driven with render costs as a fast and a slow machine would measure them."""

from callsynth.quality import PROBE_FIRST_S, QualityLadder, describe_tracking


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def play(ladder, clock, seconds, generator_ms, warp_ms):
    """Frames at the display rate, each probe's cost coming back a frame after it was due (as the receiver
    runs probes beside the frames); returns how many frames the generator repaired and how many probes ran."""
    repaired = probes = 0
    pending = False
    for _ in range(int(seconds * ladder.fps)):
        if pending:
            ladder.record_probe(generator_ms)
            pending = False
        repair = ladder.costly_next()
        if ladder.probe_due():
            assert not repair                 # a probe never takes a frame's place
            pending, probes = True, probes + 1
            assert not ladder.probe_due()     # one at a time
        repaired += repair
        ladder.record(repair, generator_ms if repair else warp_ms)
        clock.t += 1 / ladder.fps
    if pending:
        ladder.record_probe(generator_ms)
    return repaired, probes


def test_a_fast_machine_keeps_the_generator_on_every_frame():
    clock = Clock()
    ladder = QualityLadder(30, clock=clock)
    assert play(ladder, clock, 5, generator_ms=12, warp_ms=4) == (150, 0)
    assert ladder.every == 1 and ladder.steps == []


def test_a_slow_machine_steps_down_at_once_and_back_up_when_it_can():
    clock = Clock()
    ladder = QualityLadder(30, clock=clock)
    # the evaluating machine's figures: 105.6 ms with the generator, 14.5 ms the warp alone
    play(ladder, clock, 2, generator_ms=105.6, warp_ms=14.5)
    assert ladder.every == 0 and len(ladder.steps) == 1          # straight to the warp, in one step
    assert ladder.frames[True] == 1                              # after a single slow frame
    assert "over the 27 ms" in ladder.steps[0]["why"]
    # at the warp alone, the generator is tried now and then beside the frames (no frame is repaired), less
    # often while it stays slow
    repaired, probes = play(ladder, clock, 60, generator_ms=105.6, warp_ms=14.5)
    assert repaired == 0 and 2 <= probes <= 60 / PROBE_FIRST_S and ladder.every == 0
    assert ladder.summary()["probes"] == probes and ladder.summary()["frames_costly"] == 1
    # the machine got faster (another program ended): a probe notices, and it climbs back step by step
    play(ladder, clock, 70, generator_ms=15, warp_ms=4)
    assert ladder.every == 1
    assert [s["now"] for s in ladder.steps[1:]][-1] == "generator every frame"


def test_a_middling_machine_settles_between():
    clock = Clock()
    ladder = QualityLadder(30, clock=clock)
    play(ladder, clock, 10, generator_ms=40, warp_ms=8)            # every 2nd: (40 + 8) / 2 = 24 ms ≤ 26.7
    assert ladder.every == 2
    assert ladder.expected_ms(2) <= ladder.budget_ms


def test_the_warp_alone_has_one_level_and_never_repairs():
    clock = Clock()
    ladder = QualityLadder(30, (0,), clock=clock)
    assert play(ladder, clock, 3, generator_ms=100, warp_ms=60) == (0, 0)
    assert ladder.steps == [] and ladder.summary()["now"] == "warp only"


def test_a_slow_tracker_tracks_only_the_frames_it_sends():
    clock = Clock()
    ladder = QualityLadder(30, (1, 2), describe_tracking, clock=clock, patience=3)
    tracked = 0
    for _ in range(90):                       # 3 s at 30 fps; tracking costs 40 ms, skipping nothing
        track = ladder.costly_next()
        tracked += track
        ladder.record(track, 40 if track else 0)
        clock.t += 1 / 30
    assert ladder.every == 2 and ladder.steps[0]["now"] == "tracking 1 frame in 2"
    assert 45 <= tracked <= 48                # three slow frames in a row, then one in two


def test_the_still_is_repaired_no_more_often_than_its_pace_allows():
    from callsynth.quality import RepairPacing

    clock = Clock()
    pacing = RepairPacing(30, 8, clock=clock)
    assert pacing.due() and not pacing.due()            # at once, then one at a time
    clock.t = 0.05
    pacing.done(50.0, 45.0)
    clock.t = 0.2
    assert not pacing.due()                             # 8 display frames (0.27 s) between starts
    clock.t = 0.27
    assert pacing.due()
    clock.t = 0.9
    pacing.done(400.0, 120.0)                           # a starved repair: 0.4 s of wall time
    clock.t = 1.0
    assert not pacing.due()                             # its wall time at most half the time between
    clock.t = 0.27 + 0.8
    assert pacing.due()
    pacing.done(None)                                   # a failed one is counted, and waits as long
    summary = pacing.summary()
    assert (summary["started"], summary["repairs"], summary["failed"]) == (3, 2, 1)
    assert summary["ms"]["wall"] == 225.0 and summary["interval_s"] == round((0.27 + 0.8) / 2, 3)
    clock.t = 2.0
    assert pacing.due()
    pacing.done(50.0, 45.0, slower=4)                   # the frames have stepped down twice: 4x the wait
    clock.t = 2.0 + 4 * 8 / 30 - 0.01
    assert not pacing.due()
    clock.t = 2.0 + 4 * 8 / 30
    assert pacing.due()


def _picture(basis, model, clock):
    from callsynth.call_key import CallKey
    from receiver.call import ReceiverOptions
    from receiver.frame_clock import FrameClock
    from receiver.stats import ReceiverStats

    stats = ReceiverStats()
    picture = FrameClock(basis, ReceiverOptions(url="ws://127.0.0.1:1", room="x", key=CallKey.new().text,
                                                model=model), stats, hang_up=lambda _: None)
    picture.quality = QualityLadder(30, clock=clock, describe=picture.quality.describe)
    return picture, stats


def _open_mouth(basis, renderer):
    import numpy as np

    from callsynth.face.regions import OPEN_MOUTH, lip_gap

    rng = np.random.default_rng(1)
    return next(s for s in ((renderer.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(200))
                if lip_gap(renderer.target_landmarks(*s)) >= OPEN_MOUTH)      # a mouth to repair


def test_a_call_repairs_the_still_in_a_process_beside_its_frames_and_warps_it_after(basis, still):
    """Under the full-frame generator no frame waits for it: the first frame is the mouth generator's on
    the plain still while the generator repairs the still in its own process (receiver/still_repairer.py);
    the frames after warp the repaired still, which is the still the generator repairs in this process.
    The frame built meanwhile is counted in the ladder (the repair no longer shares its process)."""
    import asyncio
    import time

    import numpy as np

    from callsynth.quality import RepairPacing
    from receiver.renderer import Renderers

    clock = Clock()
    picture, stats = _picture(basis, "generator", clock)
    picture.still_repair = RepairPacing(30, 8, clock=clock)
    # a ladder that never steps down here (its budget: most of a second), so both frames are the mouth
    # generator's whatever this machine's load while the tests run
    picture.quality = QualityLadder(1, clock=clock, describe=picture.quality.describe)
    assert picture.accept_still(still, 1000)
    state = _open_mouth(basis, picture.renderer)
    before = picture.renderers(still).render(state, True)      # the same frame on the plain still
    deadline = time.time() + 120                                # the process loads torch and the generator
    while not picture.repairer.ready_now() and time.time() < deadline:
        time.sleep(0.2)

    async def frames():
        first = await picture._render(state)
        assert picture.beside is not None                        # the repair runs beside
        await asyncio.wait_for(picture.beside, 120)
        await asyncio.sleep(0)                                   # its done-callback runs on the loop
        assert picture.beside is None
        return first, await picture._render(state)               # not due again yet: no second repair

    try:
        first, after = asyncio.run(frames())
    finally:
        summary = picture.close()
    assert np.array_equal(first, before)
    here = Renderers(basis, "generator", compiled=False)(still)   # the same repair, in this process
    here.repair_still(state)
    assert np.abs(picture.renderer.warper.still.astype(int) - here.warper.still).mean() < 0.5
    assert not np.array_equal(picture.renderer.warper.still, still.image)
    assert np.array_equal(after, picture.renderer.render(state, True)) and not np.array_equal(after, first)
    repair = summary["still_repair"]
    assert (repair["started"], repair["repairs"], repair["failed"]) == (1, 1, 0) and repair["ms"]["wall"] > 0
    assert repair["ms"]["cpu"] > 0 and repair["process_peak_memory_mb"] > 0     # the process's, said
    assert picture.quality.summary()["frames_costly"] == 2      # both frames, the one beside the repair too
    assert stats.render_errors == 0 and "still repaired by the generator" in picture.quality_now()


def test_a_still_repairer_that_died_is_started_again_with_the_still_and_the_frames_go_on(basis, still):
    """The repairing process dies mid-call (here: killed): it is started again, handed the still and its
    references again, and repairs; the frames never wait for any of it."""
    import asyncio
    import time

    import numpy as np

    from callsynth.quality import RepairPacing
    from callsynth.wire import decode_identity, encode_identity

    clock = Clock()
    picture, stats = _picture(basis, "generator", clock)
    picture.still_repair = RepairPacing(30, 8, clock=clock)
    assert picture.accept_still(still, 1000)
    reference = encode_identity(still, basis, 1)
    picture.accept_reference(decode_identity(reference, basis), len(reference))
    picture.repairer.process.kill()
    picture.repairer.process.join(10)
    state = _open_mouth(basis, picture.renderer)
    deadline = time.time() + 120                 # started again, it loads torch and the generator
    while not picture._repairer_ready() and time.time() < deadline:
        time.sleep(0.2)

    async def frames():
        first = await picture._render(state)
        await asyncio.wait_for(picture.beside, 120)
        await asyncio.sleep(0)
        return first

    try:
        first = asyncio.run(frames())
        starts = picture.repairer.starts
    finally:
        summary = picture.close()
    assert first.shape == still.image.shape and starts == 2
    assert summary["still_repair"]["repairs"] == 1 and stats.render_errors == 0
    assert not np.array_equal(picture.renderer.warper.still, still.image)


def test_a_call_probes_the_mouth_generator_beside_its_frames_and_the_cost_comes_back(basis, still):
    """A receiver at "warp only" under the mouth generator: when a probe is due, the frame shown is still
    the warp's, the network runs in the thread beside, and its cost reaches the ladder as a probe — no
    frame is counted as repaired by it."""
    import asyncio

    import numpy as np

    clock = Clock()
    picture, stats = _picture(basis, "mouth", clock)
    picture.quality.record(True, 500.0)                   # one frame far over the budget: straight to the warp
    assert picture.quality.every == 0
    picture.renderer = picture.renderers(still)
    state = _open_mouth(basis, picture.renderer)

    async def frames():
        shown = [await picture._render(state)]
        clock.t += 10                                     # past the first probe's time
        shown.append(await picture._render(state))
        assert picture.quality.probes_started == 1
        if picture.beside is not None:                    # (it may have finished while the frame was built)
            await asyncio.wait_for(picture.beside, 60)
        await asyncio.sleep(0)
        return shown

    try:
        shown = asyncio.run(frames())
    finally:
        picture.close()
    warp = picture.renderer.render(state, False)
    assert all(np.array_equal(frame, warp) for frame in shown)
    assert not np.array_equal(warp, picture.renderer.render(state, True))
    summary = picture.quality.summary()
    assert summary["probes"] == 1 and summary["frames_costly"] == 1   # the first, slow frame alone
    assert summary["ms"]["costly"] != 500.0                           # the probe's own cost replaced it
    assert stats.render_errors == 0
