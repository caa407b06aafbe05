import numpy as np

from callsynth.face.pose import Pose
from callsynth.wire import FrameFeatures
from receiver.jitter import JitterBuffer, unwrap_ms

REST = Pose(np.zeros(3), np.array([0.5, 0.5, 0.0]), 0.2)
T0 = 1_790_000_000_000  # a wall-clock time in ms, far above 2**32


def packet(t_full, value):
    return FrameFeatures(0, t_full & 0xFFFFFFFF, Pose(np.zeros(3), np.array([0.5, 0.5, 0.0]), 0.2),
                         np.full(3, float(value)))


def test_unwrap_recovers_full_time_around_the_wrap():
    for t in (T0, (T0 | 0xFFFFFFFF) - 5, (T0 | 0xFFFFFFFF) + 5):
        assert unwrap_ms(t & 0xFFFFFFFF, t + 40) == t
        assert unwrap_ms(t & 0xFFFFFFFF, t - 10) == t   # a clock slightly behind


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
    assert jb.counts == {"accepted": 3, "stale": 1, "duplicate": 1}


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
