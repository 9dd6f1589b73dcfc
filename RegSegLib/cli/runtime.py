"""What every ``regseg`` command shares at run time: the signal guard, the progress display and the
staging folder that makes outputs appear all at once or not at all.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from RegSegLib.errors import InputError

LINE_INTERVAL_S = 0.25
LINE_STEP = 0.01
"""``PROGRESS`` lines are printed at most every :data:`LINE_INTERVAL_S` unless the fraction grew by :data:`LINE_STEP`."""


class Interrupted(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives.

    Args:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"cancelled by {signal.Signals(signum).name}")


class SignalGuard:
    """Turns SIGINT/SIGTERM into :class:`Interrupted`, deferred while outputs are being moved into place."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.critical = False
        self.raised = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:
            return
        if self.critical:
            self.pending = signum
            return
        self.raised = True
        raise Interrupted(signum)

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @contextlib.contextmanager
    def protected(self) -> Iterator[None]:
        """A block a signal does not interrupt; a signal that arrived meanwhile is raised at its end."""
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending is not None and not self.raised:
            self.raised = True
            raise Interrupted(self.pending)


GUARD = SignalGuard()


def silence_stdout() -> None:
    """Sends whatever is still written to standard output to the null device (its reader has gone).

    Python's advice for a closed pipe (``BrokenPipeError``): point the descriptor at ``os.devnull`` so
    that the flush at exit does not fail again.
    """
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


def stage_of(message: str) -> str:
    """The stage a progress message belongs to: the part before its colon (``"affine level 1/3"`` of
    ``"affine level 1/3: step 5/60"``), or the whole message."""
    return message.split(":", 1)[0].strip()


class ProgressReporter:
    """Receives ``(fraction, message)`` and shows it as a bar, as ``PROGRESS`` lines, as one line per stage,
    or not at all.

    Fractions never decrease; ``PROGRESS`` lines are throttled (see :data:`LINE_INTERVAL_S`) and the final
    ``1.0`` line is always printed. ``stages`` (the default when standard error is not a terminal: a log
    file, a pipe, a batch job) prints ``regseg: [ 25%] deformable`` on standard output when a stage starts.

    Args:
        mode: ``"bar"``, ``"lines"``, ``"stages"`` or ``"none"``.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.last_fraction = 0.0
        self.last_line: tuple[str, str] | None = None
        self.last_time = -math.inf
        self.last_printed = -math.inf
        self.stage: str | None = None
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=1.0,
                file=sys.stderr,
                bar_format="{desc:<40.40} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
                leave=False,
            )

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = max(self.last_fraction, min(max(float(fraction), 0.0), 1.0))
        self.last_fraction = fraction
        if self.mode == "lines":
            now = time.monotonic()
            due = now - self.last_time >= LINE_INTERVAL_S or fraction - self.last_printed >= LINE_STEP
            if (due or fraction >= 1.0) and (f"{fraction:.4f}", message) != self.last_line:
                self.last_line = (f"{fraction:.4f}", message)
                self.last_time, self.last_printed = now, fraction
                try:
                    print(f"PROGRESS {fraction:.4f} {message}".rstrip(), flush=True)
                except BrokenPipeError:  # nobody reads the lines any more: the job goes on without them
                    silence_stdout()
        elif self.mode == "stages":
            stage = stage_of(message)
            if stage and stage != self.stage:
                self.stage = stage
                try:
                    print(f"regseg: [{100 * fraction:3.0f}%] {stage}", flush=True)
                except BrokenPipeError:
                    silence_stdout()
        elif self.bar is not None:
            self.bar.n = fraction
            self.bar.set_description_str(message, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


STAGING_SUFFIX = ".partial"


def _running(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Removes the staging folders of ``output`` whose process is gone; returns them.

    Only folders named by :class:`StagingFolder` (``.OUTDIR.pid<N>.XXXX.partial`` beside ``output``) are
    considered; one whose process still runs, or without a process id, is left alone.
    """
    prefix = f".{output.name}.pid"
    removed = []
    for entry in output.parent.glob(f".{glob.escape(output.name)}.pid*{STAGING_SUFFIX}"):
        middle = entry.name[len(prefix) : -len(STAGING_SUFFIX)]
        pid_text, dot, rest = middle.partition(".")
        if not (dot and rest and "." not in rest and pid_text.isdigit()):
            continue  # another output's folder (a name with more dots) or not ours
        if entry.is_symlink() or not entry.is_dir() or _running(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


class StagingFolder:
    """A temporary folder beside an output folder; :meth:`commit` moves its files into the output folder.

    Created at once, so an output location that cannot be written fails before any work is done: the
    staging folder is made beside the output, and an existing output folder is probed by creating (and
    removing) a file in it. The staging folder's name holds the process id (``.OUTDIR.pid<N>.XXXX.partial``);
    staging folders of the same output left by a process that no longer runs (killed by SIGKILL) are
    removed here.

    Args:
        output: the output folder (created at commit when missing; its parent is created now).
        known_names: names this command may write; ones left from an earlier run and not written by this
            one are removed at commit so the folder never mixes two runs.

    Raises:
        InputError: the output exists and is not a folder, or its location cannot be written.
    """

    def __init__(self, output: Path, known_names: Sequence[str] = ()) -> None:
        self.output = output
        self.known_names = tuple(known_names)
        if output.exists() and not output.is_dir():
            raise InputError(output, "exists and is not a folder")
        parent = output.parent
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise InputError(output, f"output folder cannot be created: {existing} is a file, not a folder")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if output.is_dir():
                handle, probe = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".probe", dir=output)
                os.close(handle)
                os.remove(probe)
            remove_stale_staging(output)
            self.path = Path(tempfile.mkdtemp(prefix=f".{output.name}.pid{os.getpid()}.", suffix=STAGING_SUFFIX, dir=parent))
        except OSError as exc:
            raise InputError(output, f"output folder cannot be written ({exc.strerror or exc})") from exc

    def file(self, name: str) -> Path:
        return self.path / name

    def commit(self) -> list[Path]:
        """Moves every staged file into the output folder; returns the final paths."""
        written = sorted(p.name for p in self.path.iterdir())
        with GUARD.protected():
            try:
                self.output.mkdir(exist_ok=True)
                for name in self.known_names:
                    stale = self.output / name
                    if name not in written and stale.is_file():
                        stale.unlink()
                for name in written:
                    os.replace(self.path / name, self.output / name)
            except OSError as exc:
                raise InputError(self.output, f"output folder cannot be written ({exc.strerror or exc})") from exc
        return [self.output / name for name in written]

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
