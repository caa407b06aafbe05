"""The receiver's recording survives the receiver's death: killed mid-call, all but its last second reads."""

import subprocess
import sys
import textwrap

from callsynth.media import iter_frames

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
