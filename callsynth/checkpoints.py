"""Reading a shipped model file: always weights_only, and every way it can be wrong told in one message."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


# How torch.save's files begin: a zip archive (since torch 1.6), or a pickle of protocol 2 or later (before)
CHECKPOINT_STARTS = (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def read_checkpoint(path: Path, error: type[Exception], what: str, fmt: int, basis=None,
                    how_to_make: str = "", keys: tuple[str, ...] = ()) -> dict:
    """The checkpoint's dict; `error` when it is missing, unreadable, of another format or basis, or
    without the `keys` its loader reads (the mouth generator's file given as the full-frame generator's
    shares its format number, and ended in KeyError: 'config')."""
    if not path.exists():
        raise error(f"{path}: no such {what}" + (f"; {how_to_make}" if how_to_make else ""))
    with open(path, "rb") as f:
        head = f.read(2)
    if head not in CHECKPOINT_STARTS:   # a text file, a picture: torch's message would be its loader's accident
        raise error(f"{path}: not a readable {what} (not a PyTorch checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a damaged file
        # a file that is no checkpoint at all gives KeyError('101') or an empty EOFError: said as such; a
        # damaged archive, torch's first sentence (the rest is advice about internal errors)
        why = ("not a PyTorch checkpoint" if isinstance(exc, (KeyError, EOFError, pickle.UnpicklingError))
               else str(exc).split(". ")[0])
        raise error(f"{path}: not a readable {what} ({why})") from exc
    found = state.get("format") if isinstance(state, dict) else None
    if found != fmt:
        raise error(f"{path}: {what} format {found if found is not None else '?'}, this code reads {fmt}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise error(f"{path}: not a {what}, a checkpoint of another kind (it has no {', '.join(missing)})")
    if basis is not None and state.get("basis") != basis.name:
        raise error(f"{path}: {what} trained for {state.get('basis')}, the call uses {basis.name}")
    return state
