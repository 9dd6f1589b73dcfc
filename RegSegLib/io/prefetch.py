"""Reading NIfTI inputs ahead, while the process is still importing its numerical libraries.

A command such as ``regseg register`` knows its input files long before torch (about two seconds to
import) is loaded. :func:`read_ahead` starts one background thread that reads each NIfTI file's bytes and
inflates a ``.nii.gz`` (zlib releases the interpreter lock, so this runs beside the imports);
:func:`take` later hands the bytes to the NIfTI reader, which parses them exactly as it would parse the
file. What cannot be read ahead (another format, a file whose inflated size would exceed
:data:`MAX_BYTES` or a quarter of the available memory, a read error) is simply not there, and the
reader reads the file itself, with its own checks and messages. This module imports only the standard
library.
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Iterable, Optional

MAX_BYTES = 2 * 1024**3
"""Largest inflated file read ahead."""
CHUNK = 16 * 1024**2
"""Inflation step: the size is checked after each chunk, so a file that inflates beyond the cap stops early."""

_lock = threading.Lock()
_pending: dict[str, threading.Event] = {}
_ready: dict[str, bytes] = {}


def _key(path: str | os.PathLike) -> str:
    return os.path.realpath(path)


def _cap() -> int:
    """The largest inflated size read ahead: :data:`MAX_BYTES`, or a quarter of the available memory."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return MAX_BYTES
    return min(MAX_BYTES, available // 4)


def _inflate(raw: bytes, cap: int) -> Optional[bytes]:
    """The content of a gzip file (all members), or ``None`` when it is larger than ``cap`` or corrupt."""
    parts: list[bytes] = []
    total = 0
    data = raw
    try:
        while data:
            inflater = zlib.decompressobj(wbits=31)
            while True:
                piece = inflater.decompress(data, CHUNK)
                total += len(piece)
                if total > cap:
                    return None
                parts.append(piece)
                data = inflater.unconsumed_tail
                if not data or inflater.eof:
                    break
            if not inflater.eof:
                return None
            data = inflater.unused_data
    except zlib.error:
        return None
    return b"".join(parts)


def _read(path: Path, cap: int) -> Optional[bytes]:
    try:
        if path.stat().st_size > cap:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    return _inflate(raw, cap) if path.name.lower().endswith(".gz") else raw


def _work(paths: list[Path]) -> None:
    cap = _cap()
    for path in paths:
        content = _read(path, cap)
        with _lock:
            if content is not None:
                _ready[_key(path)] = content
            _pending.pop(_key(path)).set()


def read_ahead(paths: Iterable[str | os.PathLike | None]) -> None:
    """Starts reading the NIfTI files among ``paths`` (``None`` entries and other formats are skipped)."""
    chosen = []
    for path in paths:
        if path is None or not str(path).lower().endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
            continue
        with _lock:
            if _key(path) in _pending or _key(path) in _ready:
                continue
            _pending[_key(path)] = threading.Event()
        chosen.append(Path(path))
    if chosen:
        threading.Thread(target=_work, args=(chosen,), name="regseg-read-ahead", daemon=True).start()


def take(path: str | os.PathLike) -> Optional[bytes]:
    """The (inflated) bytes of a file read ahead, waiting for them if needed, or ``None``; each file once."""
    with _lock:
        event = _pending.get(_key(path))
    if event is not None:
        event.wait()
    with _lock:
        return _ready.pop(_key(path), None)
