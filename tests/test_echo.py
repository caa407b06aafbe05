"""Echo cancellation (callsynth.echo): the other side's voice, played out of the loudspeaker, taken back out of
the microphone before this side's voice is sent."""

import asyncio
import itertools
import fractions
import json
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from callsynth.call_key import CallKey
from callsynth.face.basis import load_basis
from callsynth.signalling import run_server
from callsynth.split import data_root
from receiver.call import ReceiverOptions
from sender.call import SenderOptions
from sender.capture import FileAudioTrack, LiveMicrophone, VideoFileSource
from twoway.call import TwoWayCall, TwoWayOptions

from .conftest import file_plugin_as_default, loudness_envelope, sound_tools_env

pytest.importorskip("pyaec", reason="pyaec (speexdsp's echo canceller) has no build for this machine")

KEY = CallKey.new().text
RATE, TICK = 48000, 960
ROOM_DEVICE_START_MS = 100   # what the room's loudspeaker holds before it starts playing (RoomMicrophone)
THIS_VOICE = data_root() / "video/retalking/4.mp4"        # the voice of the side whose microphone hears the room
THIS_FACE = data_root() / "video/hdtf/WDA_BobMenendez_000.mp4"        # 8 s
OTHER_SIDE = data_root() / "video/hdtf/WDA_KatieHill_000.mp4"         # 8 s: the voice played out of a's loudspeaker


def test_the_canceller_takes_the_loudspeaker_out_of_a_simulated_room():
    """scripts/echo_room.py: the other's voice handed to the canceller as a call's loudspeaker is (bursts of
    60 ms behind a 40 ms cushion), played steadily, heard through a reverberant room 60 or 200 ms later beside
    this side's own voice. The echo comes down by 25-31 dB (Intel Xeon, 2 cores); this side's voice stays."""
    _room_holds([])


@pytest.mark.parametrize("stall", ["160", "100"])
def test_the_canceller_keeps_the_echo_down_when_the_loudspeaker_runs_dry(stall):
    """scripts/echo_room.py --stall 160: twice the call hands the loudspeaker nothing for 160 ms (a busy
    machine), it runs dry, and then gets all that waited at once. What the resampler held back of the sound
    before the break was placed after it, moving the reference 1 ms against its echo: the echo then came down
    by 8-12 dB in all where 31 dB without breaks (2-core AMD EPYC); now 31 dB. The device did run dry: the
    canceller must not take it to have played on (nor with a 40 ms break, --stall 100)."""
    for run in _room_holds(["--stall", stall]):
        assert run["canceller"]["breaks"] >= 1 and run["canceller"]["breaks_played_on"] == 0, run


@pytest.mark.parametrize("stall, device_buffer, held_ms", [("160", "200", 100), ("100", "200", 40), ("160", "50", 50)])
def test_the_canceller_finds_a_loudspeaker_that_played_on_where_it_was_taken_to_run_dry(stall, device_buffer, held_ms):
    """scripts/echo_room.py --stall 160 --device-buffer 200: the device holds 200 ms more than the call's
    model of it (a desktop's sound server, aplay's buffer), so through the stall it plays on where the model
    puts a break, and the echo comes 100 ms before the reference. That was 6.6-7.1 dB in all (2-core AMD
    EPYC), the delay found again a second later; the echo's lag to the sample before and after the break
    tells, the break is taken out of the reference and the device counted as holding 100 ms more
    (28.3-28.8 dB). With a 40 ms break (--stall 100), which the loudness of the echo could not tell, the
    break was left in and the room learnt again (18.2-18.4 dB); now 26.9-27.6 dB. A device holding 50 ms
    more plays on through half of the 100 ms break (--device-buffer 50): 7.2-8.8 dB before (the echo at
    neither place the judgement looked, the break left in); now that half is taken out (19.9-29.2 dB at
    delays 20-400 ms)."""
    for run in _room_holds(["--stall", stall, "--device-buffer", device_buffer]):
        assert run["canceller"]["breaks_played_on"] == 1 and run["canceller"]["device_holds_ms"] == held_ms, run


@pytest.mark.parametrize("dry", ["20", "50"])
def test_the_canceller_follows_an_echo_that_moved_unseen(dry):
    """scripts/echo_room.py --device-dry 20: at 2.5 s the loudspeaker stops for 20 ms where the call's model
    of it sees no break (a sound server that stalled) and plays on that much later. The adaptive filter
    followed the move by itself over seconds: the echo 11.9 and 9.5 dB down at delays 60 and 200 ms, 16.5 and
    9.8 with 50 ms (2-core AMD EPYC; 31.7 without the stall). The echo's lag to the sample tells where it
    went, and what was played is moved with it, once, by as much: 25.1 and 19.8 dB; 25.2 and 24.0."""
    runs = _room_holds(["--device-dry", dry])
    moves = [run["canceller"]["echo_moves_unseen"] for run in runs]
    assert all(len(m) <= 1 and all(abs(ms - float(dry)) < 1 for _, ms in m) for m in moves), moves
    assert any(moves), moves


def _room_holds(options: list[str]) -> list[dict]:
    out = subprocess.run([sys.executable, "scripts/echo_room.py", "--json", "--delay", "60", "200", *options],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = json.loads(out.stdout)["runs"]
    for run in runs:
        assert run["echo_reduced_db"] >= 18, run
        assert run["this_side_alone"]["kept_db"] >= -8 and run["this_side_alone"]["envelope_r"] >= 0.6, run
        assert run["both_talk"]["envelope_r"] >= 0.5, run
        assert run["canceller"]["reference_dropped_ms"] == 0, run
    return runs


def _voice(path, seconds: float) -> np.ndarray:
    container = av.open(str(path))
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    parts = [f.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[0])
             for f in resampler.resample(frame)]
    container.close()
    return np.concatenate(parts)[:int(RATE * seconds)]


def _write_wav(path, samples: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


class RoomMicrophone(LiveMicrophone):
    """A microphone in a room with the loudspeaker: what `aplay` gave ALSA's file plug-in (the default
    output here, which writes it in real time) is heard `delay_ms` later at `gain` with one reflection,
    beside this side's own voice (`near`, from `near_at_s`) and a little hiss. Captured in real time in a
    thread of its own, 20 ms frames waiting for the call to read them, as `arecord`'s are (the sender's
    LiveMicrophone: a call that reads late gets older sound, up to its STALE_S, not sound of a later
    moment). Keeps each frame's parts, to measure what was sent."""

    def __init__(self, played_file, near: np.ndarray, near_at_s: float, seconds: float, delay_ms=60.0, gain=0.8):
        super().__init__(RATE)
        self.played_file, self.gain = played_file, gain
        self.near = np.concatenate([np.zeros(int(near_at_s * RATE), np.int16), near])
        self.frames = int(seconds * RATE / TICK)
        self.read_bytes = 0
        self.delay = int(delay_ms * RATE / 1000)
        self.echo_rms, self.near_rms, self.mic_energy = [], [], []
        self.ran_dry: list[tuple[float, float]] = []   # (second, ms): where its loudspeaker had too little to play
        self.noise = np.random.default_rng(0)

    def _played_since(self) -> np.ndarray:
        try:
            with open(self.played_file, "rb") as fh:
                fh.seek(self.read_bytes)
                data = fh.read()
        except FileNotFoundError:
            data = b""
        data = data[:len(data) // 2 * 2]
        self.read_bytes += len(data)
        return np.frombuffer(data, "<i2").astype(float)

    def _frames(self):
        start = time.monotonic()
        played = np.zeros(0)                   # all the file plug-in was given
        # what the loudspeaker has sent into the room, a tick at a time: the file's samples in order at RATE,
        # silence where it has none yet (a device that ran dry plays on from what comes next: late voice is
        # played late, never dropped). Mapping the file's samples to the clock from its first one instead
        # dropped the voice a busy machine's loudspeaker was given late, which the canceller's reference
        # (rightly) had, and put the echo up to 60 ms before it.
        # ALSA's file plug-in gets the sound when aplay writes it, on aplay's schedule: a loudspeaker that
        # played each sample the moment it was written ran dry for a tick whenever aplay was a little late
        # (aplay reporting no underrun) and moved the echo 20 ms against its reference for the rest of the
        # call (6.8 dB in one of three runs on a bare 2-core AMD EPYC). A sound card plays from its buffer on
        # its own clock: this one starts once ROOM_DEVICE_START_MS is written.
        out = np.zeros(700 + TICK + self.delay)
        device_at = 0
        started = False
        for index in range(self.frames):
            now = start + (index + 1) * TICK / RATE
            time.sleep(max(0.0, now - time.monotonic()))
            if self.stopping.is_set():
                break
            played = np.concatenate([played, self._played_since()])
            started = started or played.size >= RATE * ROOM_DEVICE_START_MS // 1000
            take = played[device_at:device_at + TICK] if started else played[:0]
            if 0 < device_at and take.size < TICK:
                self.ran_dry.append((round(index * TICK / RATE, 2), round((TICK - take.size) * 1000 / RATE, 1)))
            device_at += take.size
            out = np.concatenate([out[TICK:], take, np.zeros(TICK - take.size)])
            heard = out[:700 + TICK]           # `delay` ago, and a reflection 700 samples before that
            echo = self.gain * (heard[700:] + 0.4 * heard[:TICK])
            near = self.near[index * TICK:(index + 1) * TICK].astype(float)
            near = np.pad(near, (0, TICK - near.size))
            hiss = self.noise.standard_normal(TICK) * 10         # a microphone's own noise, 50 dB under speech
            mic = np.clip(echo + near + hiss, -32768, 32767).astype(np.int16)
            self.echo_rms.append(np.sqrt(np.mean(echo ** 2)))
            self.near_rms.append(np.sqrt(np.mean(near ** 2)))
            self.mic_energy.append(float(np.sum(mic.astype(float) ** 2)))
            yield mic


def test_a_two_way_call_sends_this_side_s_voice_without_the_other_s_echo(tmp_path, monkeypatch):
    """Side a plays b's voice through `aplay` (this user's ~/.asoundrc makes the default output ALSA's file
    plug-in: no sound card here) and its microphone hears that file played on in a room, beside a's own
    voice from 5 s, after b has stopped talking. What a sends is taken as it goes to the wire: once b has
    talked 3 s (the delay found, the room learnt), while b talks and a is silent it is at least 20 dB under
    what the microphone heard (34.1-36.9 dB on a 2-core AMD EPYC; 2.4 dB with the canceller's work taken
    out); once a talks, a's voice goes out (-2.8 dB: the 16 kHz band)."""
    import os

    env = sound_tools_env("tool")                 # skips without alsa-utils or the system's ALSA configuration
    played = tmp_path / "played.raw"
    file_plugin_as_default(tmp_path, played)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in set(os.environ) - set(env):       # the user's own ALSA settings
        monkeypatch.delenv(name)
    basis = load_basis()
    room = RoomMicrophone(played, _voice(THIS_VOICE, 2.5), near_at_s=5.0, seconds=8.0)
    other_voice = tmp_path / "other.wav"      # b talks for its first 4.5 s, then only shows its face
    _write_wav(other_voice, _voice(OTHER_SIDE, 4.5))
    sent: dict[int, float] = {}           # the room's frame index (from its pts): its energy as sent

    def options(url, room_name, echo):
        return TwoWayOptions(send=SenderOptions(url=url, room=room_name, key=KEY),
                             receive=ReceiverOptions(url=url, room=room_name, key=KEY, model="warp", rejoin_wait=5,
                                                     play_voice=echo),
                             echo_cancel=echo)

    async def main():
        ready, stop = asyncio.get_running_loop().create_future(), asyncio.Event()
        server = asyncio.create_task(run_server("127.0.0.1", 0, None, ready, stop))
        url = f"ws://127.0.0.1:{await ready}"
        a = TwoWayCall(VideoFileSource(THIS_FACE), basis, options(url, "echo", True), room)
        a.stream.audio_track.listener = lambda frame: sent.__setitem__(
            frame.pts // TICK, float(np.sum(frame.to_ndarray().astype(float) ** 2)))
        a_task = asyncio.create_task(a.run())
        await asyncio.sleep(0.5)
        # b in a process of its own, as the other party's machine would run it (this one holds a and the room)
        b = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callsynth.cli", "call", "--signal", url, "--room", "echo", "--key", KEY,
            "--video", str(OTHER_SIDE), "--audio", str(other_voice), "--model", "warp", "--no-play-voice",
            "--rejoin-wait", "5", "--stats", str(tmp_path / "b.json"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        a = await asyncio.wait_for(a_task, 60)
        _, said = await asyncio.wait_for(b.communicate(), 30)
        stop.set()
        await server
        return a, (b.returncode, said.decode(errors="replace"))

    a, (b_exit, b_said) = asyncio.run(main())
    assert b_exit == 0, b_said[-2000:]
    assert a["failure"] is None
    assert a["received"]["speaker"]["through"] == "aplay" and a["received"]["speaker"]["frames"] > 50
    assert a["echo"]["played_s"] > 1.5 and a["echo"]["while_the_other_talks"] > 50
    assert len(a["echo"]["echo_delays_found_ms"]) >= 1       # aplay and the file plug-in hold it back ~0.3 s
    # the room's frames a sent (one the call fell too far behind to send is dropped: LiveMicrophone)
    n = len(room.echo_rms)
    went = np.isin(np.arange(n), list(sent))
    echo_rms, near_rms, mic = np.array(room.echo_rms), np.array(room.near_rms), np.array(room.mic_energy)
    out = np.array([sent.get(i, 0.0) for i in range(n)])
    echo_only = (echo_rms > 300) & (near_rms < 1) & went
    assert echo_only.sum() >= 50, echo_only.sum()             # b's voice came back through the room
    # after three seconds of finding the delay (the file plug-in and aplay hold the sound back ~270 ms here)
    # and learning the room
    later = echo_only & (np.arange(n) > np.argmax(echo_only) + 150)
    # (how many depends on the machine: one that processes the microphone late sends fewer of its frames
    # before the call ends: 12-44 in runs beside two busy processes)
    assert later.sum() >= 10, later.sum()
    reduced = 10 * np.log10(mic[later].sum() / max(out[later].sum(), 1.0))
    print(f"what a sent: {reduced:.1f} dB under what its microphone heard while b talked (after 3 s); "
          f"echo found {a['echo']['echo_delays_found_ms']} ms behind; breaks in what was played "
          f"{a['echo']['breaks']}, played on through {a['echo']['breaks_played_on']} {a['echo']['breaks_judged']}; "
          f"speaker {a['received']['speaker']}; "
          f"the room's loudspeaker ran dry (s, ms) {[d for d in room.ran_dry if d[0] < 4.5]}; "
          f"the microphone's clock moved (s, ms) {a['echo']['microphone_clock_moves']}; "
          f"delays found at {a['echo']['found_at_s']} s; frames sent {len(sent)} of the room's "
          f"{len(room.echo_rms)} ({room.dropped} dropped late), echo heard until "
          f"{np.flatnonzero(np.array(room.echo_rms) >= 30)[-1:] * 0.02} s")
    assert reduced >= 20, (reduced, a["echo"], a["received"]["speaker"])
    near_only = (near_rms > 300) & (echo_rms < 30) & went
    assert near_only.sum() >= 10, near_only.sum()          # 62 in most runs, 18-36 in loaded ones (above)
    kept = 10 * np.log10(out[near_only].sum() / mic[near_only].sum())
    assert kept >= -8, kept


def test_a_machine_without_the_canceller_says_so_and_the_call_keeps_its_voice(monkeypatch):
    """pyaec has no build for every machine (none for Linux on ARM): the call says so (headphones) and
    sends the microphone as it is."""
    import callsynth.echo as echo

    def missing():
        raise echo.EchoUnavailable("pyaec could not be loaded (no build for this machine)")

    monkeypatch.setattr(echo, "_speex", missing)

    async def main():
        track = FileAudioTrack(OTHER_SIDE)
        options = TwoWayOptions(send=SenderOptions(url="ws://127.0.0.1:9", room="x", key=KEY),
                                receive=ReceiverOptions(url="ws://127.0.0.1:9", room="x", key=KEY, model="warp",
                                                        play_voice=True), echo_cancel=True)
        call = TwoWayCall(VideoFileSource(THIS_FACE, max_frames=10), load_basis(), options, track)
        frame = await call.stream.audio_track.recv()
        call.stream.close()
        return call, frame

    call, frame = asyncio.run(main())
    assert call.echo is None and isinstance(call.stream.audio_track.track, FileAudioTrack)   # not wrapped
    assert any("no echo cancellation on this machine" in e["event"] for e in call.stats.events)
    assert frame.samples > 0


def test_a_canceller_that_fails_leaves_the_voice_going_uncancelled():
    """A fault inside the canceller mid-call (a bug, a library that breaks) must not end this side's voice:
    said once, the microphone's frames go on as they are."""
    from callsynth.echo import EchoCanceller, EchoCancelledTrack

    class Broken(EchoCanceller):
        def cancel(self, frame, at=None):
            raise ValueError("broken")

    async def main():
        track = EchoCancelledTrack(FileAudioTrack(OTHER_SIDE), Broken())
        frames = [await track.recv() for _ in range(5)]
        track.stop()
        return track, frames

    track, frames = asyncio.run(main())
    assert track.failure == "ValueError: broken"
    assert len(frames) == 5 and all(f.samples == 960 for f in frames)


def test_a_microphone_processed_late_and_in_bursts_still_meets_its_echo():
    """A busy machine processed the microphone's frames up to 1.6 s late and in bursts (the call's threads
    wait their turn). The canceller paired each frame with what a queue of played sound held when it got to
    it, and that queue kept 1 s: in the loaded two-way test below, 219-599 ms of it dropped and the echo came
    only 5-15 dB down in 3 of 4 failing runs. Each microphone sample now meets what was played when it was
    captured (the microphone's clock, from its frames' arrival): simulated here, the loudspeaker played on
    time, the room 120 ms behind, the microphone's frames handed over 0.4-1.6 s late."""
    from callsynth.echo import EchoCanceller

    far = _voice(OTHER_SIDE, 7).astype(float)
    ticks = far.size // TICK
    delay = int(0.12 * RATE)
    echo = 0.6 * np.concatenate([np.zeros(delay), far])[:ticks * TICK]
    mic = np.clip(echo + np.random.default_rng(0).standard_normal(echo.size) * 10, -32768, 32767).astype(np.int16)
    canceller, waiting, out = EchoCanceller(), [], np.zeros(ticks * TICK, np.int16)
    bursts = itertools.cycle([80, 20, 55, 30])          # ticks (20 ms) between the microphone's turns
    turn = next(bursts)
    for tick in range(ticks):
        canceller.played(far[tick * TICK:(tick + 1) * TICK].astype(np.int16), at=tick * TICK / RATE)
        waiting.append(tick)
        if tick == turn or tick == ticks - 1:
            for k in waiting:
                frame = av.AudioFrame.from_ndarray(mic[None, k * TICK:(k + 1) * TICK], format="s16", layout="mono")
                frame.sample_rate, frame.pts = RATE, k * TICK
                out[k * TICK:(k + 1) * TICK] = canceller.cancel(frame, at=(k + 1) * TICK / RATE).to_ndarray()
            waiting, turn = [], turn + next(bursts)
    later = slice(3 * RATE, None)                       # once the delay is found and the room learnt
    reduced = 10 * np.log10(np.sum(mic[later].astype(float) ** 2) / np.sum(out[later].astype(float) ** 2))
    summary = canceller.summary()
    assert reduced >= 20 and summary["reference_dropped_ms"] == 0, (reduced, summary)
    assert len(summary["echo_delays_found_ms"]) == 1, summary        # found once, never moved


def _dropping_microphone(delay_s: float, dropped: set[int]) -> tuple[float, dict]:
    """The other's voice played on time, heard 0.6 as loud `delay_s` later, through a microphone whose 20 ms
    frames `dropped` never reach the canceller (their pts leave the gaps): how far what is sent after 3 s is
    under what the microphone heard, over the frames not dropped (dB), and the canceller's summary."""
    from callsynth.echo import EchoCanceller

    far = _voice(OTHER_SIDE, 7).astype(float)
    ticks = far.size // TICK
    delay = int(delay_s * RATE)
    echo = 0.6 * np.concatenate([np.zeros(delay), far])[:ticks * TICK]
    mic = np.clip(echo + np.random.default_rng(0).standard_normal(echo.size) * 10, -32768, 32767).astype(np.int16)
    canceller, out = EchoCanceller(), np.zeros(ticks * TICK, np.int16)
    for tick in range(ticks):
        canceller.played(far[tick * TICK:(tick + 1) * TICK].astype(np.int16), at=tick * TICK / RATE)
        if tick in dropped:
            continue
        frame = av.AudioFrame.from_ndarray(mic[None, tick * TICK:(tick + 1) * TICK], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, tick * TICK, fractions.Fraction(1, RATE)
        out[tick * TICK:(tick + 1) * TICK] = canceller.cancel(frame, at=(tick + 1) * TICK / RATE).to_ndarray()
    kept = np.ones(ticks * TICK, bool)
    for k in dropped:
        kept[k * TICK:(k + 1) * TICK] = False
    later = kept & (np.arange(kept.size) >= 3 * RATE)
    reduced = 10 * np.log10(np.sum(mic[later].astype(float) ** 2) / np.sum(out[later].astype(float) ** 2))
    return reduced, canceller.summary()


def test_a_microphone_that_dropped_frames_still_meets_its_echo():
    """A call that falls behind drops the microphone's oldest frames (sender.capture.LiveMicrophone): their
    pts leave a gap. Counting the samples it got, the canceller paired every frame after a gap with sound
    played that much earlier. Simulated: the room 120 ms behind, 200 ms dropped every 2 s; what is sent
    after 3 s is still 20 dB under what the microphone heard, the echo's delay found once."""
    reduced, summary = _dropping_microphone(0.12, {k for k in range(350) if k % 100 >= 90})
    print(f"sent {reduced:.1f} dB under what the microphone heard, after 3 s, over the frames not dropped")
    assert reduced >= 20, (reduced, summary)
    assert len(summary["echo_delays_found_ms"]) == 1, summary        # found once, never moved


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_the_echo_s_delay_is_found_right_through_a_microphone_dropping_short_bursts(seed):
    """A loaded machine drops the microphone's frames in short bursts (20-100 ms every 0.1-0.8 s, as the
    two-way test below saw beside busy processes: 57-95 of 400 frames). The loudness envelopes the delay is
    found in counted the frames that came, so after each gap a lag in them was another lag on the clock: the
    echo 270 ms behind was found at 200 ms (seed 1), or at 270 and then moved to 180-200 ms with the room
    learnt afresh there (seeds 2, 5). Found once now, at 270 ms, within 2 s."""
    rng = np.random.default_rng(seed)
    dropped, tick = set(), 20
    while tick < 350:
        burst = int(rng.integers(1, 6))
        dropped.update(range(tick, tick + burst))
        tick += burst + int(rng.integers(5, 40))
    reduced, summary = _dropping_microphone(0.27, dropped)
    print(f"seed {seed}: {len(dropped)} of 350 frames dropped; echo found {summary['echo_delays_found_ms']} ms "
          f"behind at {summary['found_at_s']} s; sent {reduced:.1f} dB under what the microphone heard after 3 s")
    assert summary["echo_delays_found_ms"] == [270.0] and summary["found_at_s"][0] <= 2.0, summary
    assert reduced >= 20, (reduced, summary)


def test_with_headphones_this_side_s_voice_goes_out_whole_while_the_other_talks():
    """No echo (headphones, or a microphone far from the loudspeaker) while both talk the whole time: the
    other's voice is played and this side's is sent. Nothing may take this side's voice down for being
    quieter than usual: the residual-echo suppressor took the quieter half of its frames down 20 dB
    (`call --camera-off` through ALSA's file plug-in: 13 dB off the microphone while the other talked)."""
    from callsynth.echo import EchoCanceller

    far, near = _voice(OTHER_SIDE, 6), _voice(THIS_VOICE, 6)
    n = min(far.size, near.size) // TICK * TICK

    def sent(loudness: float):
        canceller = EchoCanceller()
        out = []
        for at in range(0, n, TICK):
            canceller.played((far[at:at + TICK] * loudness).astype(np.int16), at=at / RATE)   # simulated time
            frame = av.AudioFrame.from_ndarray(near[None, at:at + TICK], format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, at
            out.append(canceller.cancel(frame, at=(at + TICK) / RATE).to_ndarray().reshape(-1))
        out = np.concatenate(out).astype(float)[RATE:]           # after the first second
        heard = near[:n].astype(float)[RATE:]
        kept = 10 * np.log10(np.mean(out ** 2) / np.mean(heard ** 2))
        return kept, np.corrcoef(loudness_envelope(out), loudness_envelope(heard))[0, 1], canceller.summary()

    band_kept, band_r, _ = sent(0.0)          # nothing played: the 16 kHz band alone (-2.5 dB, r 0.905)
    kept, r, summary = sent(1.0)
    assert kept >= band_kept - 1 and r >= band_r - 0.03, (kept, r, band_kept, band_r)   # was r 0.843
    assert summary["echo_heard"] is False


def test_an_empty_write_to_the_loudspeaker_leaves_the_canceller_working():
    """A write of no samples (a zero cushion, an empty frame) went into the resampler, which raised "Cannot
    allocate memory": the loudspeaker then dropped the canceller for the rest of the call."""
    from callsynth.echo import EchoCanceller

    canceller = EchoCanceller()
    canceller.played(np.zeros(0, np.int16))
    canceller.played(np.zeros(960, np.int16))
    assert canceller.summary()["played_s"] == 0.02
