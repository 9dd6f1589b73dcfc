"""Downloads a model from its manifest entry's URL into the store: progress, resume, checksum (standard library).

The bytes go to ``models/<file>.partial`` in the cache folder. A download that is cut off keeps that file, and
the next call asks the server for the rest (HTTP ``Range``); a server that ignores the range sends the whole
file again. Once complete, the file's size and sha256 are checked against the entry: a mismatch deletes it and
installs nothing; a match renames it into place and lists it in the manifest.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from RegSegLib.errors import InputError, RegSegError
from RegSegLib.models.manifest import ModelEntry
from RegSegLib.models.store import ModelStore, StoredModel

if TYPE_CHECKING:
    from RegSegLib.runtime import Progress

_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def download(
    entry: ModelEntry,
    store: ModelStore | None = None,
    progress: "Progress | None" = None,
    *,
    replace: bool = False,
    timeout_s: float = 60.0,
    block_bytes: int = 1 << 16,
) -> StoredModel:
    """Downloads ``entry.url`` into ``store``, resuming an earlier partial download, and installs it.

    Args:
        entry: the model's manifest entry (with a ``url``).
        store: where to install it (default: the user's store).
        progress: receives the fraction of bytes received; its cancel event stops the download (the partial
            file is kept for a resume).
        replace: replace an installed model of the same name.
        timeout_s: how long to wait for the server at any one time.
        block_bytes: bytes read at a time.

    Returns:
        The installed model.

    Raises:
        InputError: no URL, an HTTP error, or a file whose size or sha256 differs from the entry.
        RegSegError: the connection broke (run again to resume) or the name is taken.
    """
    store = store if store is not None else ModelStore()
    if entry.url is None:
        raise InputError(None, f"model {entry.name!r} has no url in its manifest entry; import its file instead")
    store.check_installable(entry, replace)
    store.folder.mkdir(parents=True, exist_ok=True)
    partial = store.partial_path(entry)
    if partial.exists() and partial.stat().st_size > entry.size:
        partial.unlink()
    received = partial.stat().st_size if partial.exists() else 0
    if received < entry.size:
        _receive(entry, partial, received, progress, timeout_s, block_bytes)
    return store.install(entry, partial, move=True, replace=replace, origin=entry.url)


def _receive(
    entry: ModelEntry, partial: Path, received: int, progress: "Progress | None", timeout_s: float, block_bytes: int
) -> None:
    """Appends the bytes from ``received`` on to ``partial`` (all of them when the server ignores the range)."""
    url = str(entry.url)
    headers = {"Range": f"bytes={received}-"} if received else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:
            if received and response.status == 206:
                match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
                if match is None or int(match.group(1)) != received:
                    raise InputError(url, f"answered a resume from byte {received} with another range")
            else:
                received = 0
            with open(partial, "ab" if received else "wb") as out:
                for block in iter(lambda: response.read(block_bytes), b""):
                    out.write(block)
                    received += len(block)
                    if received > entry.size:
                        break
                    if progress is not None:
                        progress.update(received / entry.size, f"downloading {entry.name}: {received} of {entry.size} bytes")
    except urllib.error.HTTPError as exc:
        raise InputError(url, f"the server answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _interrupted(url, received, entry.size, getattr(exc, "reason", None) or exc) from exc
    if received < entry.size:
        raise _interrupted(url, received, entry.size, "the connection closed early")


def _interrupted(url: str, received: int, size: int, reason: object) -> RegSegError:
    return RegSegError(f"{url}: download interrupted after {received} of {size} bytes ({reason}); run it again to resume")
