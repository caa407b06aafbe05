"""How a command says what went wrong: in the words of the error, not Python's repr of it."""

from __future__ import annotations


def said(exc: BaseException) -> str:
    """An error as a person reads it: the system's reason without Python's "[Errno 28] " before it, after the
    file it names if any ("out/x.mp4: No space left on device")."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
    return str(exc)


def reason(exc: BaseException) -> str:
    """The system's or FFmpeg's reason alone ("Invalid data found when processing input"), for a message
    that names the file itself; anything else as its own words."""
    return getattr(exc, "strerror", None) or str(exc)
