import numpy as np

from callsynth.face.pose import Pose
from callsynth.wire import CAPTURE_MASK, FrameFeatures
from receiver.jitter import JitterBuffer, unwrap_ms
from receiver.playout import CATCH_UP_MS, SWITCH_MS, SourceSwitch

REST = Pose(np.zeros(3), np.array([0.5, 0.5, 0.0]), 0.2)
T0 = 1_790_000_000_000  # a wall-clock time in ms, far above the wire's wrap (2**29)


def packet(t_full, value):
    return FrameFeatures(t_full & CAPTURE_MASK, Pose(np.zeros(3), np.array([0.5, 0.5, 0.0]), 0.2),
                         np.full(3, float(value)))


def test_unwrap_recovers_full_time_around_the_wrap():
    for t in (T0, (T0 | CAPTURE_MASK) - 5, (T0 | CAPTURE_MASK) + 5):
        assert unwrap_ms(t & CAPTURE_MASK, t + 40) == t
        assert unwrap_ms(t & CAPTURE_MASK, t - 10) == t   # a clock slightly behind


def test_reordered_packets_are_placed_by_timestamp_and_stale_ones_dropped():
    jb = JitterBuffer(REST, 3, delay_ms=50)
    assert jb.push(packet(T0, 0), T0 + 5) == "accepted"
    assert jb.push(packet(T0 + 66, 2), T0 + 71) == "accepted"
    assert jb.push(packet(T0 + 33, 1), T0 + 80) == "accepted"   # late but still useful
    state, concealed = jb.state_at(T0 + 50)
    assert not concealed and 1.0 < state[1][0] < 2.0            # interpolated between 33 and 66
    jb.state_at(T0 + 100)                                       # frames up to 100 are shown
    assert jb.push(packet(T0 + 40, 9), T0 + 200) == "stale"     # older than what covers them
    assert jb.push(packet(T0 + 66, 2), T0 + 201) == "duplicate"
    assert jb.counts == {"accepted": 3, "stale": 1, "duplicate": 1, "future": 0, "clock_steps": 0}


def test_playout_runs_a_fixed_delay_behind_the_fastest_transit():
    jb = JitterBuffer(REST, 3, delay_ms=60)
    jb.push(packet(T0, 0), T0 + 12)
    jb.push(packet(T0 + 66, 0), T0 + 66 + 30)   # a slow one does not move the clock
    assert jb.playout_ms(T0 + 1000) == T0 + 1000 - 12 - 60


def test_a_lost_packet_is_concealed_by_extrapolation_then_hold():
    jb = JitterBuffer(REST, 3, delay_ms=0, extrapolate_ms=100, silence_ms=10_000)
    jb.push(packet(T0, 0), T0)
    jb.push(packet(T0 + 100, 1), T0 + 100)
    state, concealed = jb.state_at(T0 + 150)
    assert concealed and np.allclose(state[1], 1.5)       # continues the motion
    state, _ = jb.state_at(T0 + 900)
    assert np.allclose(state[1], 2.0)                     # then holds after extrapolate_ms


def test_long_silence_eases_back_to_rest():
    jb = JitterBuffer(REST, 3, delay_ms=0, extrapolate_ms=0, silence_ms=500)
    jb.push(packet(T0, 4), T0)
    assert np.allclose(jb.state_at(T0 + 400)[0][1], 4)
    assert np.allclose(jb.state_at(T0 + 5000)[0][1], 0)


def _call(jb, packets, seconds=30, step_at_s=None, step_ms=0):
    """Packets every 66 ms (from `packets`: index -> (capture offset, value) overrides), frames every
    33 ms, 40 ms transit; returns the concealed flag of every frame shown."""
    concealed, sent = [], 0
    for tick in range(int(seconds * 1000 / 33)):
        now = T0 + tick * 33
        while sent * 66 <= tick * 33:
            shift = step_ms if step_at_s is not None and sent * 66 >= step_at_s * 1000 else 0
            capture = T0 + sent * 66 + shift
            capture, value = packets.get(sent, (capture, sent))
            jb.push(packet(capture, value), T0 + sent * 66 + 40)
            sent += 1
        state, hidden = jb.state_at(jb.playout_ms(now))
        if state is not None:
            concealed.append(hidden)
    return concealed


def test_one_packet_from_the_future_conceals_no_more_than_a_second():
    """A forged (or clock-stepped) packet 10 s ahead used to move the playout point 10 s ahead, every
    genuine packet then stale: 598 of 900 frames concealed. Now it is refused and nothing changes."""
    jb = JitterBuffer(REST, 3, delay_ms=60)
    concealed = _call(jb, {150: (T0 + 150 * 66 + 10_000, 99)})
    assert jb.counts["future"] == 1 and jb.counts["clock_steps"] == 0
    assert sum(concealed) <= 30
    assert jb.counts["stale"] == 0


def test_a_real_step_of_the_senders_clock_is_followed_within_a_second():
    for step in (10_000, -10_000):
        jb = JitterBuffer(REST, 3, delay_ms=60)
        concealed = _call(jb, {}, seconds=20, step_at_s=10, step_ms=step)
        assert jb.counts["clock_steps"] == 1
        after = concealed[int(10 * 1000 / 33):]
        # at most about a second of frames without a fresh packet after the step, then none
        assert sum(after) <= 36 and not any(after[60:])


def _sparse_call(catch_up_ms: float) -> tuple[list[float], list[float], list[bool]]:
    """Packets every 400 ms (the 16 kbps tier's, a packet every 10 frames at 25 fps) of a code moving
    steadily (1 a 100 ms), 40 ms transit, frames every 33 ms at a fixed 60 ms delay: each frame's shown
    value, the timeline's own, and whether it was concealed."""
    jb = JitterBuffer(REST, 3, delay_ms=60, catch_up_ms=catch_up_ms)
    shown, timeline, concealed, sent = [], [], [], 0
    for tick in range(150):
        now = T0 + tick * 33
        while T0 + sent * 400 + 40 <= now:
            jb.push(packet(T0 + sent * 400, sent * 4), T0 + sent * 400 + 40)
            sent += 1
        if jb.newest_ms is None:
            continue
        playout = jb.playout_ms(now)
        state, hidden = jb.state_at(playout)
        shown.append(float(state[1][0]))
        timeline.append(float(jb.timeline.at(playout)[1][0]))
        concealed.append(hidden)
    return shown, timeline, concealed


def test_after_concealed_frames_the_face_catches_up_instead_of_jumping():
    """On a sparse link most frames are concealed (extrapolated 100 ms, then held), and each packet that
    ends such a stretch moved the face at once to where the packets put it: a jump of 2.6 to 3.6 where a
    frame moves 0.33. Now it gets there over CATCH_UP_MS (the jump and the motion shared among its frames),
    and from then on shows the timeline's state exactly."""
    shown, timeline, concealed = _sparse_call(catch_up_ms=0)
    assert np.mean(concealed) > 0.5
    jump = max(np.abs(np.diff(shown)))
    assert jump > 2.5
    shown, timeline, concealed = _sparse_call(catch_up_ms=CATCH_UP_MS)
    frames = CATCH_UP_MS / 33
    assert max(np.abs(np.diff(shown))) < jump / frames + 0.5     # a share of it a frame, with the motion
    ends = [i for i in range(1, len(concealed)) if concealed[i - 1] and not concealed[i]]
    assert len(ends) >= 8
    for i, following in zip(ends, ends[1:]):
        assert abs(shown[i] - timeline[i]) > 0.5                 # on its way...
        after = [j for j in range(i, following) if (j - i) * 33 >= CATCH_UP_MS]
        assert after and all(shown[j] == timeline[j] for j in after)   # ...there within CATCH_UP_MS


def test_when_the_voice_takes_over_or_hands_back_the_head_moves_there_over_switch_ms():
    """The voice's head is the still's at rest, swaying, where the packets' is the caller's as last tracked:
    a change of source moved the whole head in one frame (up to 15 px in a receiver's recording). Now the
    face gets there over SWITCH_MS, a share a frame, then shows the new source's state exactly; the
    packets' gaze, lip correction and mouth cue (the voice's state has none) are the new source's at once."""
    k = 4
    tracked = (Pose(np.array([0.0, 0.35, 0.0]), np.array([0.1, 0.0, 0.0]), 1.1),
               np.r_[np.full(k, 2.0), [0.3, -0.2, 0.05, 1.0, 3.0]])          # code, gaze, lips, cue
    voice = (Pose(np.zeros(3), np.zeros(3), 1.0), np.zeros(k))
    switch, frame_ms = SourceSwitch(k), 1000 / 30
    shown = [switch(tracked, "packets", i * frame_ms) for i in range(3)]
    assert shown[-1] is tracked                                              # one source: as it comes
    for source, state, other in (("voice", voice, tracked), ("packets", tracked, voice)):
        start = len(shown)
        shown += [switch(state, source, i * frame_ms) for i in range(start, start + 12)]
        yaws = [pose.rotvec[1] for pose, _ in shown[start - 1:]]
        codes = [code[0] for _, code in shown[start - 1:]]
        steps = int(np.ceil(SWITCH_MS / frame_ms))
        for values, total in ((yaws, 0.35), (codes, 2.0)):
            moves = np.abs(np.diff(values))
            assert max(moves) <= total / steps + 1e-9                       # a share a frame, no jump
            assert np.isclose(sum(moves[:steps]), total)                    # all the way within SWITCH_MS
        assert all(pose is state[0] or np.allclose(pose.rotvec, state[0].rotvec)
                   for pose, _ in shown[start + steps:])
        assert all(len(code) == len(state[1]) for _, code in shown[start:])  # the new source's layout
        if source == "packets":
            assert all(np.array_equal(code[k:], tracked[1][k:]) for _, code in shown[start:])
        assert len(other[1]) != len(state[1])
    assert switch(None, "voice", 10_000) is None
