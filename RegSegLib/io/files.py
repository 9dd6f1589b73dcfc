"""Files: suffixes, atomic writes, and the guard that keeps outputs off the inputs."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from RegSegLib.errors import InputError


def full_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix including ``.gz`` (``.nii.gz``, ``.nrrd``, ...)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        return "".join(Path(name).suffixes[-2:])
    return Path(name).suffix


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary file name beside ``path`` (same suffix) and renames it to ``path`` on success.

    The file gets the permissions of any new file (``0666`` less the umask), not ``mkstemp``'s ``0600``.

    Raises:
        InputError: when the folder does not exist or cannot be written.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(folder, "output folder does not exist")
    suffix = full_suffix(target)
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=folder)
    except OSError as exc:
        raise InputError(folder, f"output folder cannot be written ({exc.strerror})") from exc
    os.close(handle)
    try:
        yield temp
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_file() and not os.access(path, os.R_OK):
        raise InputError(path, "file cannot be read (permission denied)")


def refuse_overwriting_inputs(outputs: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike | None]) -> None:
    """Refuses any output path that is an input path (after resolving links).

    Raises:
        InputError: naming the output path.
    """
    for output in outputs:
        for given in inputs:
            if given is not None and os.path.realpath(output) == os.path.realpath(given):
                raise InputError(output, "is one of the inputs; choose another output path (inputs are never overwritten)")
