"""The receiver's recording survives the receiver's death (killed mid-call, all but its last second
reads), an encoder slower than the call, and a disk that fails."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from callsynth.media import iter_frames, iter_timed_frames
from receiver.recorder import CallRecorder, RecordingThread

KILLED_MID_CALL = textwrap.dedent("""
    import os, sys
    import numpy as np
    from receiver.recorder import CallRecorder

    rng = np.random.default_rng(0)
    recorder = CallRecorder(sys.argv[1], 0.0, with_audio=False)
    for i in range(120):                      # 4 s at 30 fps of pictures that do not compress away
        recorder.add_video(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), i / 30)
    os._exit(0)                               # killed: nothing closed, nothing flushed
""")


def test_a_recording_cut_short_by_a_killed_receiver_still_reads(tmp_path):
    out = tmp_path / "call.mp4"
    subprocess.run([sys.executable, "-c", KILLED_MID_CALL, str(out)], check=True, timeout=120)
    frames = list(iter_frames(out))
    assert 120 - 30 - 10 <= len(frames) < 120       # the last fragment (1 s) and a buffer lost at most
    assert frames[0].shape == (256, 256, 3)


def _click_track(recorder, voice_from_s, click_s, seconds=2.0, rate=48000):
    """Hand `recorder` 20 ms voice frames from `voice_from_s` on, silent but for a click at `click_s`, each
    when it has arrived, as a call's receiver does: at its end."""
    import av

    samples = np.zeros(int(seconds * rate), np.float32)
    if click_s is not None:
        at = int((click_s - voice_from_s) * rate)
        samples[at:at + 48] = 0.9
    step = rate // 50
    for i in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[None, i:i + step], format="flt", layout="mono")
        frame.sample_rate = rate
        recorder.add_audio(frame, voice_from_s + (i + step) / rate)


def _times_in(path):
    """(picture times, time of the loudest sample) as a player reads them."""
    import av

    pictures = [t for t, _ in iter_timed_frames(path)]
    loudest = (0.0, None)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):     # each frame at its own time: a gap stays a gap
            samples = np.abs(frame.to_ndarray().ravel())
            if samples.max() > loudest[0]:
                loudest = (samples.max(), float(frame.time) + int(np.argmax(samples)) / frame.sample_rate)
    return np.array(pictures), loudest[1]


@pytest.mark.parametrize("pictures_from_s, voice_from_s", [(0.0, 0.0), (0.2, 1.0)])
def test_pictures_and_voice_play_at_the_times_they_were_recorded(tmp_path, pictures_from_s, voice_from_s):
    """Both from the start (the offline talking face): the AAC encoder's 21 ms of priming made FFmpeg shift
    every picture after the first 21 ms late, which the evaluator's mouth correlation reads as a lag. A
    voice that begins later than the pictures (a call's receiver): a header written before the first frame
    began both streams at zero, and the voice played 0.8 s early."""
    recorder = CallRecorder(tmp_path / "call.mp4", 0.0, with_audio=True)
    given = pictures_from_s + np.arange(45) / 30
    for i, t in enumerate(given):
        recorder.add_video(np.full((256, 256, 3), 4 * i, np.uint8), t)
    _click_track(recorder, voice_from_s, click_s=voice_from_s + 0.5)
    recorder.close()
    pictures, click = _times_in(tmp_path / "call.mp4")
    assert len(pictures) == len(given)
    assert np.abs(pictures - np.round(given, 3)).max() < 0.002, pictures[:4]
    assert abs(click - (voice_from_s + 0.5)) < 0.003, click


class StuckRecorder(CallRecorder):
    """An encoder that cannot go on until `go` is set: as slow as an encoder can be."""

    go = threading.Event()

    def add_video(self, rgb, wall_s):
        assert self.go.wait(60)
        super().add_video(rgb, wall_s)


def test_an_encoder_slower_than_the_call_skips_frames_and_never_holds_the_caller(tmp_path):
    recording = RecordingThread(StuckRecorder(tmp_path / "call.mp4", 0.0, with_audio=False), backlog=20)
    picture = np.full((256, 256, 3), 128, np.uint8)
    for i in range(200):          # every hand-over returns while the encoder is stuck: none waits for it
        recording.add_video(picture, i / 30)
        picture[:16] = i % 120    # drawn on after hand-over: the recording keeps its copy
    # bounded by construction: the backlog (and the one picture the encoder holds) waits, the rest is
    # skipped and counted
    assert recording.frames + recording.dropped["video"] == 200 and recording.frames <= 21
    StuckRecorder.go.set()
    assert recording.close()
    frames = list(iter_frames(tmp_path / "call.mp4"))
    assert len(frames) == recording.frames and recording.error is None
    # the first pictures as they were handed over (a later value there would mean the encoder read the
    # caller's array after it changed)
    assert [round(float(f[4:12].mean())) for f in frames[:3]] == [128, 0, 1]


class FailingRecorder(CallRecorder):
    def add_video(self, rgb, wall_s):
        if self.frames == 5:
            raise OSError(28, "No space left on device")
        super().add_video(rgb, wall_s)


def test_a_failing_disk_ends_the_recording_not_the_call(tmp_path):
    recording = RecordingThread(FailingRecorder(tmp_path / "call.mp4", 0.0, with_audio=False))
    picture = np.full((256, 256, 3), 128, np.uint8)
    for i in range(40):
        recording.add_video(picture, i / 30)   # never raises
    assert recording.close()
    assert isinstance(recording.error, OSError) and "space" in str(recording.error)


def _picture_side(output):
    from callsynth.call_key import CallKey
    from callsynth.face.basis import load_basis
    from callsynth.face.still import prepare_still
    from callsynth.media import read_still
    from callsynth.split import data_root
    from receiver.call import ReceiverOptions
    from receiver.frame_clock import FrameClock
    from receiver.stats import ReceiverStats

    stats = ReceiverStats()
    picture = FrameClock(load_basis(), ReceiverOptions(url="ws://127.0.0.1:1", room="x", key=CallKey.new().text,
                                                       model="warp", output=str(output)), stats,
                         hang_up=lambda _: None)
    assert picture.accept_still(prepare_still(read_still(data_root() / "video/pcavs/00067.mp4")), 1000)
    return picture, stats


def test_the_receiver_records_what_it_shows_beside_the_event_loop(tmp_path):
    picture, stats = _picture_side(tmp_path / "rx.mp4")
    frame = picture.renderer.still.image
    for i in range(30):
        picture._present(frame, picture.recorder.recorder.start_s + i / 30)
    picture.close()
    assert stats.recording["finished"] and stats.recording["frames"] == 30
    assert stats.recording["frames_skipped"] == 0          # nothing slows this encoder
    assert len(list(iter_frames(tmp_path / "rx.mp4"))) == 30 and (tmp_path / "rx_still.png").exists()


def test_a_recording_place_that_cannot_be_written_leaves_the_call_going(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    picture, stats = _picture_side(tmp_path / "a_file" / "rx.mp4")
    for i in range(5):
        picture._present(picture.renderer.still.image, i / 30)     # shown, not recorded: no error
    picture.close()
    said = [e["event"] for e in stats.events if "cannot record" in e["event"]]
    assert len(said) == 1 and "goes on unrecorded" in said[0] and stats.recording == {}
    # in words: it was "[Errno 17] File exists: '.../a_file'"
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in said[0] and "[Errno" not in said[0]


def test_a_recording_in_a_container_without_h264_leaves_the_call_going(tmp_path):
    """The command line refuses such a name; a receiver given one otherwise (its options built in code)
    said so and went on unrecorded, where the recorder's ValueError once closed the peer connection."""
    picture, stats = _picture_side(tmp_path / "rx.webm")
    for i in range(5):
        picture._present(picture.renderer.still.image, i / 30)
    picture.close()
    said = [e["event"] for e in stats.events if "cannot record" in e["event"]]
    assert len(said) == 1 and "webm" in said[0] and stats.recording == {}


def test_a_voice_frame_that_fails_here_is_said_and_the_voice_goes_on(tmp_path):
    """The received voice is handed on frame by frame (receiver.call.consume_audio); three frames whose
    handling raises are said and counted, and the frames after them still reach the recording and the speech
    fallback. The task used to die at the first, silently, and the call lost its voice."""
    from aiortc.mediastreams import AudioStreamTrack
    from receiver.call import consume_audio

    picture, stats = _picture_side(tmp_path / "rx.mp4")
    real, calls = picture.accept_audio, {"n": 0}

    def flaky(frame):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ValueError("injected fault")
        real(frame)
        if calls["n"] == 20:
            track.stop()                     # the voice ends: recv raises MediaStreamError

    picture.accept_audio = flaky
    track = AudioStreamTrack()               # aiortc's own: 20 ms frames of silence, at their pace
    asyncio.run(asyncio.wait_for(consume_audio(track, picture), 10))
    picture.close()
    assert stats.rejected == {"voice (failed here)": 3} and stats.audio_frames == 17
    assert sum("injected fault" in e["event"] for e in stats.events) == 3


def test_a_call_recorded_as_matroska_keeps_its_frames_and_voice(tmp_path):
    recorder = CallRecorder(tmp_path / "call.mkv", 0.0, with_audio=True)
    for i in range(30):
        recorder.add_video(np.full((256, 256, 3), 5 * i, np.uint8), i / 30)
    _click_track(recorder, 0.0, click_s=0.5)
    recorder.close()
    pictures, click = _times_in(tmp_path / "call.mkv")
    assert len(pictures) == 30 and abs(click - 0.5) < 0.03


@pytest.mark.parametrize("pictures_from_s, voice_from_s, click_s, silent_until_s",
                         [(0.2, 1.2, 1.7, None), (0.5, 0.0, 0.9, None), (0.0, 0.0, 1.9, 1.5)])
def test_new_pictures_over_a_recording_keep_its_voice_where_it_was(tmp_path, pictures_from_s, voice_from_s,
                                                                    click_s, silent_until_s):
    """`callsynth combine` over a call's recording writes new pictures from zero and takes the recording's
    sound (media.mux_audio): a voice begun 1.0 s after the first picture played from zero, 1.0 s early; one
    begun before it, late; a voice that stopped for 0.9 s (the recorder keeps such a gap) came back early."""
    from callsynth.media import VideoWriter, mux_audio

    recorder = CallRecorder(tmp_path / "call.mp4", 0.0, with_audio=True)
    for i in range(90):
        recorder.add_video(np.full((256, 256, 3), 2 * i, np.uint8), pictures_from_s + i / 30)
    if silent_until_s is not None:          # 0.6 s of voice, nothing, then the voice again
        _click_track(recorder, voice_from_s, click_s=None, seconds=0.6)
        voice_from_s = silent_until_s
    _click_track(recorder, voice_from_s, click_s=click_s)
    recorder.close()
    with VideoWriter(tmp_path / "new.mp4", 30.0) as writer:     # the new pictures, from zero
        for i in range(90):
            writer.write(np.full((256, 256, 3), 200 - 2 * i, np.uint8))
    mux_audio(tmp_path / "new.mp4", tmp_path / "call.mp4", tmp_path / "out.mp4")
    pictures, click = _times_in(tmp_path / "out.mp4")
    assert len(pictures) == 90 and pictures[0] == 0.0
    assert abs(click - (click_s - pictures_from_s)) < 0.003, click      # the same time after the first picture


@pytest.mark.parametrize("through", ["tool", "library"])
def test_a_machine_without_a_sound_output_says_so_once_and_the_call_goes_on(tmp_path, through):
    """--play-voice (the default with --window) where the default sound output cannot be opened (here
    this user's ~/.asoundrc names a sound card that is not there): said once, the voice still reaches the
    rest of the call, nothing is counted as played. In a process of its own: ALSA reads its configuration
    once a process."""
    from .conftest import sound_tools_env

    env = sound_tools_env(through)
    (tmp_path / ".asoundrc").write_text('pcm.!default {\n type hw\n card 7\n}\n')
    probe = textwrap.dedent("""
        import json, av, numpy as np
        from callsynth.call_key import CallKey
        from callsynth.face.basis import load_basis
        from callsynth.face.still import prepare_still
        from callsynth.media import read_still
        from callsynth.split import data_root
        from receiver.call import ReceiverOptions
        from receiver.frame_clock import FrameClock
        from receiver.stats import ReceiverStats

        stats = ReceiverStats()
        picture = FrameClock(load_basis(), ReceiverOptions(url="ws://127.0.0.1:1", room="x", model="warp",
                                                           key=CallKey.new().text, play_voice=True),
                             stats, hang_up=lambda _: None)
        picture.accept_still(prepare_still(read_still(data_root() / "video/pcavs/00067.mp4")), 1000)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
            frame.sample_rate = 48000
            picture.accept_audio(frame)
            picture.speaker.opened.wait(5)          # the device is opened in the speaker's own thread
        picture.close()
        print(json.dumps({"events": [e["event"] for e in stats.events], "speaker": stats.speaker,
                          "audio_frames": stats.audio_frames}))
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env=dict(env, HOME=str(tmp_path)), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    said = [e for e in out["events"] if "sound output" in e]
    assert len(said) == 1 and "the voice is not played" in said[0], out["events"]
    assert out["speaker"]["frames"] == 0 and out["speaker"]["failure"] and out["audio_frames"] == 5


def test_the_speaker_skips_a_burst_of_voice_rather_than_play_it_late(tmp_path):
    """Voice handed over in a burst (the frames that waited while the device opened; a link that stalled and
    caught up) stayed queued at the device and put the voice that far behind the face for the rest of the
    call. Now what would be queued beyond the cushion and SPEAKER_LATE_MS is skipped, and what follows in
    real time plays behind no more than that. Through `aplay` into ALSA's file plug-in."""
    import shutil

    import av

    from receiver.speaker import SPEAKER_CUSHION_MS, SPEAKER_LATE_MS, Speaker

    if not (shutil.which("aplay") and os.path.isfile("/usr/share/alsa/alsa.conf")):
        pytest.skip("alsa-utils or the system's ALSA configuration is not installed")
    played = tmp_path / "played.raw"
    speaker = Speaker(device=f"file:FILE={played},FORMAT=raw")

    def frame(i):
        f = av.AudioFrame.from_ndarray(np.full((1, 960), 1000 + i, np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts = 48000, 960 * i
        return f

    for i in range(25):                       # half a second at once
        speaker.add(frame(i))
    assert speaker.opened.wait(5)
    time.sleep(0.1)
    start = time.monotonic()
    for i in range(25, 50):                   # then in real time
        time.sleep(max(0.0, start + 0.02 * (i - 25) - time.monotonic()))
        speaker.add(frame(i))
    queued_at_the_end = speaker._queued_ms()
    summary = speaker.close()
    assert summary["failure"] is None and summary["through"] == "aplay"
    assert summary["late_ms_skipped"] >= 300, summary        # most of the burst
    assert summary["frames"] + summary["late_ms_skipped"] / 20 == 50
    assert queued_at_the_end <= SPEAKER_CUSHION_MS + SPEAKER_LATE_MS + 20
    heard = np.unique(np.fromfile(played, "<i2"))
    assert {1025, 1049} <= set(heard.tolist())               # what came in real time all played


def test_the_speaker_plays_a_lost_voice_frame_as_silence_of_its_length(tmp_path):
    """A voice frame lost on the way (voice_jitter gives it up) leaves its time as silence, so the voice keeps
    its place behind the cushion; played shorter, every loss ate 20-60 ms of it. Through `aplay` into ALSA's
    file plug-in (no sound card here)."""
    import shutil

    import av

    from receiver.speaker import SPEAKER_CUSHION_MS, Speaker

    if not (shutil.which("aplay") and os.path.isfile("/usr/share/alsa/alsa.conf")):
        pytest.skip("alsa-utils or the system's ALSA configuration is not installed")
    played = tmp_path / "played.raw"
    speaker = Speaker(device=f"file:FILE={played},FORMAT=raw")
    assert speaker.opened.wait(5)
    start = time.monotonic()
    for i in range(20):
        time.sleep(max(0.0, start + 0.02 * i - time.monotonic()))     # as a call hands them over
        if i in (5, 12, 13):                                  # three 20 ms frames lost
            continue
        frame = av.AudioFrame.from_ndarray(np.full((1, 960), 1000 + i, np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, 777 + 960 * i
        speaker.add(frame)
    summary = speaker.close()
    assert summary["failure"] is None and summary["through"] == "aplay" and summary["frames"] == 17
    assert summary["lost_ms_filled"] == 60.0
    samples = np.fromfile(played, "<i2")
    cushion = int(48 * SPEAKER_CUSHION_MS)
    assert len(samples) >= cushion + 20 * 960 and not samples[cushion + 20 * 960:].any()  # aplay pads its last period
    assert not samples[:cushion].any()
    frames = samples[cushion:cushion + 20 * 960].reshape(20, 960)
    assert all((frames[i] == (0 if i in (5, 12, 13) else 1000 + i)).all() for i in range(20))
