"""Derived-data keys follow a file's bytes: the shared data is copied afresh (new times) every session, and
a cache keyed by time was cold each time (11 minutes of re-tracking)."""

import os
import shutil

from callsynth.cache import file_key


def test_a_copied_or_touched_file_keeps_its_key_and_a_changed_one_does_not(tmp_path):
    a = tmp_path / "a.mp4"
    a.write_bytes(b"some video bytes" * 1000)
    key = file_key(a, 2, None)
    b = tmp_path / "elsewhere" / "a.mp4"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    os.utime(b, (1, 1))
    assert file_key(b, 2, None) == key
    assert file_key(a, 3, None) != key           # other code
    assert file_key(a, 2, 100) != key            # other settings
    a.write_bytes(b"other video bytes" * 1000)
    assert file_key(a, 2, None) != key


def test_saved_arrays_replace_the_file_whole_and_leave_no_temporary(tmp_path):
    import numpy as np

    from callsynth.cache import save_npz

    target = tmp_path / "sub" / "k.npz"
    save_npz(target, compressed=True, a=np.arange(3))
    save_npz(target, a=np.arange(5))
    with np.load(target) as data:
        assert list(data["a"]) == [0, 1, 2, 3, 4]
    assert [p.name for p in target.parent.iterdir()] == ["k.npz"]
