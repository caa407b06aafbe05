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


def test_a_ladder_that_starts_low_probes_at_once_and_jumps_to_what_fits():
    """The call's full-frame generator: no first frame waits for it; the first probe decides."""
    for generator_ms, expected in ((12, 1), (30, 2), (50, 4), (105.6, 0)):
        clock = Clock()
        ladder = QualityLadder(30, clock=clock, start_low=True)
        assert ladder.every == 0 and not ladder.costly_next() and ladder.probe_due()
        ladder.record(False, 8)
        ladder.record_probe(generator_ms)
        assert ladder.every == expected and ladder.frames[True] == 0
        assert len(ladder.steps) == (expected != 0)
    # a first probe that did not fit (it also paid the network's first run) is retried as soon as usual
    clock.t += PROBE_FIRST_S - 0.1
    assert not ladder.probe_due()
    clock.t += 0.2
    assert ladder.probe_due()


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


def test_a_call_probes_the_generator_beside_its_frames_and_the_cost_comes_back(basis, still):
    """A receiver at "warp only" under the full-frame generator: when a probe is due, the frame shown is
    still the one its level draws (here the mouth generator's), the generator runs in the probe thread, and
    its cost reaches the ladder as a probe — no frame is counted as repaired by it."""
    import asyncio

    import numpy as np

    from callsynth.call_key import CallKey
    from callsynth.face.regions import OPEN_MOUTH, lip_gap
    from receiver.call import ReceiverOptions
    from receiver.frame_clock import FrameClock
    from receiver.stats import ReceiverStats

    clock = Clock()
    stats = ReceiverStats()
    picture = FrameClock(basis, ReceiverOptions(url="ws://127.0.0.1:1", room="x", key=CallKey.new().text,
                                                         model="generator"),
                         stats, hang_up=lambda _: None)
    picture.quality = QualityLadder(30, clock=clock)
    picture.mouth_quality = QualityLadder(30, (1,), clock=clock)   # the mouth on every frame, however slow
    picture.quality.record(True, 500.0)                   # one frame far over the budget: straight to the warp
    assert picture.quality.every == 0
    picture.renderer = picture.renderers(still)
    rng = np.random.default_rng(1)
    state = next(s for s in ((picture.renderer.rest_pose, rng.normal(0, 0.3, basis.k)) for _ in range(200))
                 if lip_gap(picture.renderer.target_landmarks(*s)) >= OPEN_MOUTH)   # a mouth to repair

    async def frames():
        shown = [await picture._render(state)]
        clock.t += 10                                     # past the first probe's time
        shown.append(await picture._render(state))
        assert picture.probe is not None
        await asyncio.wait_for(picture.probe, 60)
        await asyncio.sleep(0)                            # the probe's done-callback runs on the loop
        return shown

    try:
        shown = asyncio.run(frames())
    finally:
        picture.close()
    mouth = picture.renderer.render(state, "mouth")
    assert all(np.array_equal(frame, mouth) for frame in shown)
    assert not np.array_equal(mouth, picture.renderer.render(state, False))
    summary = picture.quality.summary()
    assert summary["probes"] == 1 and summary["frames_costly"] == 1   # the first, slow frame alone
    assert summary["ms"]["costly"] != 500.0                           # the probe's own cost replaced it
    assert stats.render_errors == 0
