import numpy as np
import pytest

from callsynth.media import MediaError, VideoWriter, iter_frames, read_still, video_info, written_whole

from .conftest import file_plugin_as_default, loudness_envelope, sound_tools_env


def test_not_an_image_or_video(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello, this is text")
    with pytest.raises(MediaError, match="not an image or video") as said:
        read_still(bad)
    assert str(said.value).startswith(f"{bad}: not an image or video (")        # FFmpeg's reason, in words:
    assert str(said.value).endswith("Invalid data found when processing input)")  # no "[Errno 1094995529]"
    with pytest.raises(MediaError, match="not an image or video"):
        list(iter_frames(bad))
    with pytest.raises(MediaError, match="no such file"):
        read_still(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        video_info(empty)


def test_truncated_video_keeps_what_decodes(tmp_path, data):
    src = (data / "video/grid_s1/bbaf2n.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src[: len(src) // 2])
    try:
        frames = list(iter_frames(cut))
    except MediaError:
        return  # refused with a clear error is fine too
    assert frames and frames[0].ndim == 3


def test_an_mp4_cut_before_its_index_says_it_may_be_truncated(tmp_path, data):
    """HDTF clips keep their index at the end: cut short (a copy or upload that stopped), the file holds
    pictures but no way to find them, and the message says so rather than 'not an image or video'."""
    src = (data / "video/hdtf/WDA_KatieHill_000.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src[: len(src) * 6 // 10])
    with pytest.raises(MediaError, match="truncated perhaps"):
        video_info(cut)
    with pytest.raises(MediaError, match="truncated perhaps"):
        list(iter_frames(cut))


def test_writer_round_trip(tmp_path):
    path = tmp_path / "x.mp4"
    with VideoWriter(path, 25) as w:
        for i in range(10):
            w.write(np.full((64, 64, 3), i * 20, np.uint8))
    frames = list(iter_frames(path))
    assert len(frames) == 10 and abs(int(frames[5].mean()) - 100) <= 3
    assert video_info(path).fps == 25


def test_a_file_played_as_a_camera_stamps_each_frame_with_its_time_even_when_taken_late(data):
    """Glass to glass starts when a camera would have taken the frame, not when a busy call got to it."""
    import asyncio
    import time

    from sender.capture import VideoFileSource

    source = VideoFileSource(data / "video/pcavs/00067.mp4", max_frames=6)

    async def take() -> list[int]:
        start, stamps = time.time(), []
        async for _, capture_ms in source.frames(start=start):
            stamps.append(capture_ms - int(start * 1000))
            time.sleep(0.5 / source.fps)          # the call busy for half a frame period each frame
        return stamps

    stamps = asyncio.run(take())
    # every frame is either taken or (a machine too slow for even this) dropped as late; each one taken
    # carries its own time, a whole number of frame periods after the start, in order
    assert len(stamps) + source.dropped == 6 and stamps
    periods = [s * source.fps / 1000 for s in stamps]
    assert [abs(p - round(p)) * 1000 / source.fps <= 1 for p in periods] == [True] * len(stamps)
    assert all(round(a) < round(b) for a, b in zip(periods, periods[1:]))


def test_written_whole_moves_a_complete_file_and_drops_a_broken_one(tmp_path):
    out = tmp_path / "sub" / "out.mp4"
    with written_whole(out) as partial:
        assert partial.parent == out.parent and partial != out and not out.exists()
        with VideoWriter(partial, 25.0) as writer:
            for i in range(5):
                writer.write(np.full((64, 64, 3), 40 * i, np.uint8))
    assert len(list(iter_frames(out))) == 5
    with pytest.raises(KeyboardInterrupt):
        with written_whole(out) as partial:
            partial.write_bytes(b"half a video")
            raise KeyboardInterrupt
    assert len(list(iter_frames(out))) == 5                 # the earlier one, whole
    assert [p.name for p in out.parent.iterdir()] == ["out.mp4"]


PORTRAIT = "images/london_neutral/001_03.jpg"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_phone_photo_stored_sideways_or_mirrored_is_read_upright(tmp_path, data, orientation):
    """A phone stores a portrait photo sideways (and a front camera's now and then mirrored) and says in
    its EXIF orientation how to show it: read as stored, a selfie gave the call a sideways face (combine
    pasted it in on its side), and a mirrored orientation read as a turn alone an upside-down one."""
    from PIL import Image

    upright = read_still(data / PORTRAIT)[:, :600]                    # not square: a turn shows in the shape
    to_store = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
                7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = Image.fromarray(upright)
    stored = stored if to_store is None else stored.transpose(to_store)
    exif = Image.Exif()
    exif[0x0112] = orientation
    phone = tmp_path / "phone.jpg"
    stored.save(phone, exif=exif.tobytes(), quality=95)
    read = read_still(phone)
    assert read.shape == upright.shape
    assert np.abs(read.astype(int) - upright).mean() < 3


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_a_phone_video_stored_sideways_is_read_upright(tmp_path, data, degrees):
    """A phone's portrait video: landscape pictures and a display matrix that turns them (`degrees`
    counter-clockwise); every frame is read as a player shows it."""
    import av

    upright = read_still(data / PORTRAIT)[:, :600]
    stored = np.ascontiguousarray(np.rot90(upright, -degrees // 90))
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = stored.shape[:2]
        stream.pix_fmt = "yuv420p"
        if not hasattr(stream, "set_display_rotation"):
            pytest.skip("this PyAV cannot write a display matrix")
        stream.set_display_rotation(degrees)
        for _ in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        out.mux(stream.encode())
    frames = list(iter_frames(path))
    assert len(frames) == 3 and all(f.shape == upright.shape for f in frames)
    assert np.abs(frames[-1].astype(int) - upright).mean() < 4


@pytest.mark.parametrize("through", ["tool", "library"])
def test_the_microphone_is_found_through_the_system_s_alsa(tmp_path, data, through):
    """`--audio mic`, through alsa-utils' `arecord` or, without it, PyAV's own ALSA library (which looked for
    its configuration where its wheel was built, /tmp/vendor/share/alsa, and knew no 'default' device, so no
    microphone was ever found). Here the system's ALSA configuration reads this user's ~/.asoundrc, whose
    default capture device is ALSA's file plug-in playing a recorded voice (no sound card on this machine):
    the voice comes through, in a process of its own (ALSA reads its configuration once a process), and
    where its frames' pts say: 1 s of 20 ms loudness envelopes against the voice's from there (a stereo file
    read through arecord's mono device once played the voice at half speed, which a loudness check passed)."""
    import os
    import subprocess
    import sys
    import textwrap

    from audio2exp.features import SAMPLE_RATE, load_audio

    env = sound_tools_env(through)
    voice = load_audio(data / "video/pcavs/00067.mp4")[:3 * SAMPLE_RATE]
    at_48k = np.interp(np.arange(0, len(voice), SAMPLE_RATE / 48000), np.arange(len(voice)), voice)
    raw, heard = tmp_path / "voice.raw", tmp_path / "heard.npy"
    # the file plug-in reads its file as the device is opened: mono by arecord (-c 1), stereo by PyAV
    channels = 1 if through == "tool" else 2
    (np.clip(np.repeat(at_48k[:, None], channels, 1), -1, 1) * 32000).astype("<i2").tofile(raw)   # s16
    file_plugin_as_default(tmp_path, infile=raw)
    probe = textwrap.dedent(f"""
        import asyncio, numpy as np
        from sender.capture import microphone_track
        async def main():
            track = microphone_track()
            frames = [await track.recv() for _ in range(50)]     # 1 s of 20 ms frames
            track.stop()
            np.save({str(heard)!r}, np.concatenate([f.to_ndarray().ravel() for f in frames]))
            print(type(track).__name__, len(frames), frames[0].pts, frames[-1].pts - frames[0].pts)
        asyncio.run(main())
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env=dict(env, HOME=str(tmp_path)), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr[-2000:]
    kind, frames, first, span = run.stdout.split()
    assert (kind == "ToolMicrophoneTrack") == (through == "tool")
    assert int(frames) == 50 and int(span) == 49 * 960, run.stdout     # no frame dropped: they follow on

    got, spoken = loudness_envelope(np.load(heard)), loudness_envelope(at_48k * 32000)
    start = int(first) // 960
    # where its pts say, give or take two frames (the library's resampler delays a little)
    best, lag = max((np.corrcoef(got, spoken[lag:lag + 50])[0, 1], lag) for lag in range(max(0, start - 2), start + 3))
    print(f"{through}: from {int(first) / 48000:.2f} s into the voice, envelope r {best:.3f}")
    assert best > 0.9 and 0.8 < got.mean() / spoken[lag:lag + 50].mean() < 1.25, (best, got.mean(), spoken.mean())


@pytest.mark.parametrize("microphone", [True, False])
def test_without_audio_a_camera_off_call_takes_the_microphone_or_says_there_is_none(tmp_path, microphone):
    """`send`/`call` with a camera or --camera-off and no --audio: the caller's microphone, as any call takes
    it (it used to send no voice unless told --audio mic); a machine without one says so and sends none."""
    import os
    import subprocess
    import sys
    import textwrap

    env = sound_tools_env("tool")
    raw = tmp_path / "voice.raw"
    (np.sin(np.arange(48000) / 8) * 8000).astype("<i2").repeat(2).tofile(raw)     # s16, stereo
    if microphone:
        file_plugin_as_default(tmp_path, infile=raw)
    else:
        (tmp_path / ".asoundrc").write_text("pcm.!default {\n type hw\n card 7\n}\n")
    probe = textwrap.dedent("""
        from callsynth.call_commands import _source_and_voice
        from callsynth.cli import build_parser
        args = build_parser().parse_args(["send", "--room", "r", "--camera-off"])
        source, track, microphone = _source_and_voice(args)
        print(source, type(track).__name__, microphone)
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env=dict(env, HOME=str(tmp_path)), cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr[-2000:]
    # a microphone's voice is what `call` takes the loudspeaker's echo out of
    assert run.stdout.split() == ["None", "ToolMicrophoneTrack" if microphone else "NoneType", str(microphone)]
    assert microphone or "no microphone found" in run.stderr and "sending no voice" in run.stderr



def test_a_sound_tool_that_says_much_is_heard_out_and_not_stopped():
    """aplay says "underrun!!!" on every late frame; left in its stderr pipe, a long call's worth filled it
    and aplay stopped, blocked on the pipe. A tool started by sound_devices has its stderr read as it comes
    (its last line kept). A stand-in that says 200 KB at once, then one more line, then exits."""
    import subprocess
    import sys
    import time

    from callsynth.sound_devices import _started

    talker = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.stderr.write('underrun!!!\\n' * 20000);"
              " sys.stderr.write('the last word\\n'); sys.stderr.flush()"]
    process = _started(talker, stdout=subprocess.DEVNULL)
    assert process.wait(timeout=10) == 0
    for _ in range(100):
        if process.last_said == "the last word":
            break
        time.sleep(0.02)
    assert process.last_said == "the last word" and process.underruns == 20000


def test_a_call_that_falls_behind_its_microphone_gets_the_newest_sound():
    """A busy machine's call took the microphone's frames ever later (a loaded two-way call's fell 2.7 s
    behind and sent 265 of 400 frames before its 8 s ended): now at most STALE_S waits. 30 frames are
    captured before the call takes any (it starts at the newest 0.4 s, 20 frames; the older are not late,
    not counted), it takes those, then 50 more are captured before it takes more: it gets the newest 20,
    the 30 older are counted dropped, their pts leave the gap (for the echo canceller's clock), and the
    voice as sent runs on from 0 without one (the far side would fill a gap with silence and fall that
    far behind; a first frame's pts other than 0 stopped the voice: PyAV's fifo takes no other start)."""
    import asyncio
    import threading

    from aiortc.mediastreams import MediaStreamError

    from sender.capture import AUDIO_FRAME, STALE_S, LiveMicrophone
    from sender.stream import MutableAudioTrack

    before_the_call, behind = threading.Event(), threading.Event()

    class Microphone(LiveMicrophone):
        def _frames(self):
            for k in range(80):
                if k == 30:
                    before_the_call.set()
                    behind.wait(10)
                yield np.full(AUDIO_FRAME, k, np.int16)

    microphone = Microphone()
    microphone.start_capture()
    assert before_the_call.wait(10)
    seen: list[int] = []
    voice = MutableAudioTrack(microphone, lambda frame: seen.append(frame.pts))

    async def main():
        frames = [await voice.recv() for _ in range(20)]
        behind.set()
        await asyncio.get_running_loop().run_in_executor(None, microphone.thread.join, 10)
        with pytest.raises(MediaStreamError):
            while True:
                frames.append(await voice.recv())
        return frames

    frames = asyncio.run(main())
    kept = round(STALE_S * 48000 / AUDIO_FRAME)
    taken = [*range(30 - kept, 30), *range(80 - kept, 80)]
    assert microphone.dropped == 50 - kept == 30
    assert seen == [k * AUDIO_FRAME for k in taken]                          # as captured: the gaps show
    assert [f.pts for f in frames] == [k * AUDIO_FRAME for k in range(len(taken))]   # as sent: none
    assert [int(f.to_ndarray()[0, 0]) for f in frames] == taken


def test_a_microphone_that_stops_mid_call_is_said(caplog):
    """A microphone lost mid-call (its tool exits with an error): the voice ends and the sender says why,
    where it once fell silent without a word. A stand-in for arecord gives one frame and fails."""
    import asyncio
    import subprocess
    import sys

    from aiortc.mediastreams import MediaStreamError

    from callsynth.sound_devices import _started
    from sender.capture import ToolMicrophoneTrack

    stand_in = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.stdout.buffer.write(bytes(1920));"
                " sys.stdout.flush(); sys.stderr.write('audio open error: device lost\\n'); sys.exit(1)"]
    track = ToolMicrophoneTrack(_started(stand_in, stdout=subprocess.PIPE))

    async def main():
        first = await track.recv()
        with pytest.raises(MediaStreamError):
            await track.recv()
        return first

    with caplog.at_level("WARNING", logger="callsynth.send"):
        first = asyncio.run(main())
    assert first.samples == 960
    assert "the microphone stopped (arecord, exit 1: audio open error: device lost)" in caplog.text


def test_a_file_s_sound_held_for_its_pictures_begins_with_them():
    """Beside a video file, the file's sound waits for its pictures (FileAudioTrack.hold): silence goes
    until `begin`, then the file from its first sample, paced from that moment. The voice had begun with
    the first RTP frame and the pictures once the still was through: 26 ms ahead of the lips on loopback
    (scripts/voice_face_sync.py), 10 s through a 16 kbit/s policer."""
    import asyncio
    import time

    from callsynth.split import data_root
    from sender.capture import AUDIO_FRAME, AUDIO_RATE, FileAudioTrack

    from .conftest import VAL_CLIP

    clip = data_root() / VAL_CLIP
    whole = FileAudioTrack(clip)
    held = FileAudioTrack(clip)
    held.hold()

    async def main():
        first = (await whole.recv()).to_ndarray().copy()
        silence = [(await held.recv()).to_ndarray().copy() for _ in range(5)]
        at = time.time() + 0.2
        held.begin(at)
        begun = await held.recv()
        second = await held.recv()
        return first, silence, begun, second, time.time(), at

    first, silence, begun, second, done, at = asyncio.run(main())
    assert all(not frame.any() for frame in silence)
    assert np.array_equal(begun.to_ndarray(), first) and first.any()     # the file from its start
    assert begun.pts == 5 * AUDIO_FRAME                                  # its time runs on over the silence
    # paced from `begin`: the file's first sample is due then, its second frame 20 ms later (and waited for)
    assert held.start + begun.pts / AUDIO_RATE == pytest.approx(at, abs=1e-6)
    assert done >= at + AUDIO_FRAME / AUDIO_RATE - 0.002


def test_an_audio_file_of_no_sound_is_said_before_the_call(tmp_path):
    """`send --camera-off --audio FILE` with a WAV of no samples waited for the receiver, then had nothing to
    drive the face with: said as the track opens. A video whose sound holds nothing sends no voice, said."""
    import struct

    from callsynth.call_commands import _source_and_voice
    from callsynth.cli import build_parser
    from callsynth.media import MediaError
    from sender.capture import FileAudioTrack

    empty = tmp_path / "zero.wav"
    header = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)           # PCM, mono, 16 kHz, 16 bits
    empty.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + header + b"data" + struct.pack("<I", 0))
    with pytest.raises(MediaError, match="holds no sound"):
        FileAudioTrack(empty)
    args = build_parser().parse_args(["send", "--room", "r", "--camera-off", "--audio", str(empty)])
    with pytest.raises(MediaError, match="zero.wav: its audio stream holds no sound"):
        _source_and_voice(args)
