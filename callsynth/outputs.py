"""Where a command writes, checked when its command line is read; and a call's statistics written as it ends.

A render, an evaluation or a call that ran for minutes and then could not write its result (a folder that
is a file, a read-only disk, a file name that is a folder) lost all that work and ended in a traceback.
These argparse types say so at once, as a usage error; they create nothing (a nameless file made and
removed at once, where root's permission says nothing). What no check can foresee (a disk that fills during
the call) is said when the call's statistics are written (write_stats)."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from .errors import reason
from .json_text import to_json
from .media import IMAGE_SUFFIXES, MP4_SUFFIXES

# Containers that take what the commands write (H.264, with AAC sound) and that a player reads after a
# kill mid-call (a call's recording is a fragmented MP4; Matroska is written as it goes).
VIDEO_SUFFIXES = (*MP4_SUFFIXES, ".mkv")


def output_file(text: str) -> Path:
    """A file the command will write (its folder may not exist yet)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    _check_folder(path.parent)
    return path


def output_video(text: str) -> Path:
    """A video file the command will write: a container that takes H.264 with AAC sound. Given another
    (.webm, .gif, no suffix), a render failed as it began to write and a call's recording ended the call."""
    return _video_suffix(output_file(text))


def output_picture_or_video(text: str) -> Path:
    """A picture (by its suffix: media.IMAGE_SUFFIXES) or else a video (output_video)."""
    path = output_file(text)
    return path if path.suffix.lower() in IMAGE_SUFFIXES else _video_suffix(path)


def _video_suffix(path: Path) -> Path:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{path}: a video is written as H.264 (with AAC sound) in {', '.join(VIDEO_SUFFIXES)}; "
            f"not {path.suffix or 'a name without a suffix'}")
    return path


def output_folder(text: str) -> Path:
    """A folder the command will write into (made if missing)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    _check_folder(path)
    return path


def clash(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """What is wrong when two of a command's outputs are one file, or an output is one of its inputs: the
    --stats JSON written over the --output video, a --reference-out over the --output, and an --output named
    as its own --driving video replaced the user's clip with the render. None when each has its own."""
    outputs, inputs = [], []
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or value is None:
            continue
        option = max(action.option_strings, key=len)
        if action.type in (output_file, output_video, output_picture_or_video):
            outputs.append((option, Path(value)))
        elif action.type is not output_folder:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Path) or (action.dest in _FILE_TEXT_OPTIONS and isinstance(item, str)):
                    inputs.append((option, Path(item)))
    for i, (option, path) in enumerate(outputs):
        for other, other_path in outputs[i + 1:]:
            if same_file(path, other_path):
                return f"{option} and {other} are the same file ({path}): one would be written over the other"
        for other, other_path in inputs:
            if same_file(path, other_path):
                return (f"{option} {path} is also {other}: writing it would replace that input; give the "
                        f"output another name")
    return None


# options whose text names an input file (besides those of type Path): send's --audio FILE, eval's --clips
_FILE_TEXT_OPTIONS = {"audio", "clips"}


def same_file(a: Path, b: Path) -> bool:
    """The same file, by any spelling or through a link (one or both may not exist yet)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)      # links, hard or symbolic, and different spellings
    except OSError:
        pass
    return a.resolve() == b.resolve()


def write_stats(path: str | Path, summary: dict, log: logging.Logger) -> bool:
    """A call's statistics written as JSON at its end; a place that refuses them then (a disk that filled
    during the call, a folder gone) is said as a warning and the call still ends with its summary: it
    ended with the error alone, its figures lost. False when not written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_json(summary))
        return True
    except OSError as exc:
        log.warning("cannot write the call's statistics to %s (%s); its summary is printed as it ends",
                    path, reason(exc))
        return False


def _check_folder(folder: Path) -> None:
    """`folder` exists and is writable, or can be made: its nearest existing ancestor is a writable folder."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file: {folder} cannot be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing} cannot be written (read-only, or not yours)")
    try:     # root passes os.access everywhere, /proc included: a nameless file made and gone is the proof
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{existing} takes no new file ({reason(exc)})") from None
