"""What every long job shares: progress and cancellation, device choice, memory estimates."""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

import torch

from RegSegLib.errors import InputError, RegSegError
from RegSegLib.vocabulary import DEVICES

ProgressCallback = Callable[[float, str], None]
"""``callback(fraction in [0, 1], message)``; the CLI turns it into a bar or ``PROGRESS`` lines."""


class Cancelled(RegSegError):
    """Raised inside a method when its cancel event is set."""


class Progress:
    """Reports progress of a job made of weighted stages and checks for cancellation.

    Args:
        callback: receives ``(fraction, message)``; ``None`` reports nothing.
        cancel: an event; once set, the next :meth:`update` raises :class:`Cancelled`.
        start: fraction where this job starts inside a larger one.
        span: share of the larger job this job covers.
    """

    def __init__(
        self,
        callback: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
        start: float = 0.0,
        span: float = 1.0,
    ) -> None:
        self.callback = callback
        self.cancel = cancel
        self.start = start
        self.span = span

    def update(self, fraction: float, message: str = "") -> None:
        """Reports ``fraction`` (0..1) of this job done; raises :class:`Cancelled` when asked to stop."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled by the user")
        if self.callback is not None:
            self.callback(min(max(self.start + self.span * fraction, 0.0), 1.0), message)

    def sub(self, start: float, span: float) -> "Progress":
        """A progress reporter for the part ``[start, start + span]`` of this job."""
        return Progress(self.callback, self.cancel, self.start + self.span * start, self.span * span)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error.

    Raises:
        RegSegError: unknown name or CUDA asked for but not available.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RegSegError("the device cuda was asked for but no CUDA GPU is available; choose cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise RegSegError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")


def available_host_memory() -> int | None:
    """Free host memory in bytes: psutil's figure, else POSIX ``sysconf``; ``None`` where neither can tell.

    ``None`` happens on Windows without psutil (``os.sysconf`` is POSIX only); the memory check is then skipped.
    """
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(
    required_bytes: int,
    device: torch.device,
    what: str,
    hint: str = "use a coarser working resolution",
    path: str | os.PathLike | None = None,
) -> None:
    """Fails early, with the estimate, when a job will not fit in the device's free memory.

    Args:
        required_bytes: the estimated peak of the job.
        device: where it will run (host memory for ``cpu``).
        what: the job, for the message ("affine registration", "reading this 512x512x400 volume").
        hint: what the user can do about it.
        path: the file the job reads; the error then names it (:class:`InputError`).

    Raises:
        RegSegError: the estimate exceeds what is available (:class:`InputError` when ``path`` is given).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = available_host_memory()
        if free is None:
            return
    if required_bytes > free:
        problem = f"{what} needs about {_size(required_bytes)} on {device.type} but only {_size(free)} is free; {hint}"
        raise RegSegError(problem) if path is None else InputError(path, problem)


def _size(n_bytes: float) -> str:
    """``4.0 GiB``; below a tenth of a GiB in MiB (``26 MiB``), where GiB would read ``0.0``."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 0.1 * 2**30 else f"{n_bytes / 2**20:.0f} MiB"
