"""The adaptive quality ladder, driven with render costs as a fast and a slow machine would measure them."""

from callsynth.quality import PROBE_FIRST_S, QualityLadder, describe_tracking


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def play(ladder, clock, seconds, generator_ms, warp_ms):
    """Frames at the display rate; returns how many the generator repaired."""
    repaired = 0
    for _ in range(int(seconds * ladder.fps)):
        repair = ladder.costly_next()
        repaired += repair
        ladder.record(repair, generator_ms if repair else warp_ms)
        clock.t += 1 / ladder.fps
    return repaired


def test_a_fast_machine_keeps_the_generator_on_every_frame():
    clock = Clock()
    ladder = QualityLadder(30, clock=clock)
    assert play(ladder, clock, 5, generator_ms=12, warp_ms=4) == 150
    assert ladder.every == 1 and ladder.steps == []


def test_a_slow_machine_steps_down_at_once_and_back_up_when_it_can():
    clock = Clock()
    ladder = QualityLadder(30, clock=clock)
    # the evaluating machine's figures: 105.6 ms with the generator, 14.5 ms the warp alone
    play(ladder, clock, 2, generator_ms=105.6, warp_ms=14.5)
    assert ladder.every == 0 and len(ladder.steps) == 1          # straight to the warp, in one step
    assert ladder.frames[True] == 1                              # after a single slow frame
    assert "over the 27 ms" in ladder.steps[0]["why"]
    # at the warp alone, the generator is tried now and then, less often while it stays slow
    probes = play(ladder, clock, 60, generator_ms=105.6, warp_ms=14.5)
    assert 2 <= probes <= 60 / PROBE_FIRST_S and ladder.every == 0
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
    assert play(ladder, clock, 3, generator_ms=100, warp_ms=60) == 0
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
