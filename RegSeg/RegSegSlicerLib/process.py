"""A child process with progress lines, a log, cancellation of its process tree and readable failures.

Qt-free and Slicer-free: reader threads collect the child's output into a queue and
:meth:`ChildProcess.poll` hands it to the callbacks on the caller's thread. In the Slicer GUI a
``qt.QTimer`` calls :meth:`~ChildProcess.poll` (so callbacks may touch widgets); batch scripts and tests
call :meth:`~ChildProcess.wait`.

The child reports progress as ``PROGRESS <fraction> <message>`` lines on stdout (``regseg ... --progress
lines``); every other line of stdout and stderr goes to the log callback and, optionally, to a log file.
A failure is described by the child's last ``error:`` line (``regseg: error: <path>: <problem>``), else its
last line of stderr, never by "returned non-zero exit status".
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[str], None]

PROGRESS_PREFIX = "PROGRESS "
CANCEL_GRACE_S = 1.0
"""Seconds a cancelled child gets to clean up after SIGTERM before its process tree is killed."""


class ProcessFailed(RuntimeError):
    """The child process ended with a non-zero exit code.

    Args:
        message: the child's last error line (or a description of the failure).
        returncode: the exit code.
    """

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


class ProcessCancelled(RuntimeError):
    """The child process was cancelled."""


def parse_progress(line: str) -> tuple[float, str] | None:
    """``(fraction, message)`` of a ``PROGRESS <fraction> <message>`` line, ``None`` for other lines."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    parts = line[len(PROGRESS_PREFIX) :].split(" ", 1)
    try:
        fraction = float(parts[0])
    except ValueError:
        return None
    return min(max(fraction, 0.0), 1.0), parts[1].strip() if len(parts) > 1 else ""


def failure_message(stderr_lines: Sequence[str], returncode: int) -> str:
    """The line that explains a failure: the last ``error:`` line, else the last stderr line.

    Args:
        stderr_lines: the child's stderr, line by line.
        returncode: its exit code (named when the child said nothing; negative means killed by a signal).
    """
    lines = [line.strip() for line in stderr_lines if line.strip()]
    for line in reversed(lines):
        if "error:" in line.lower():
            return line
    if lines:
        return lines[-1]
    if returncode < 0:
        return f"the RegSeg process was killed by signal {-returncode}"
    return f"the RegSeg process ended with exit code {returncode} without a message"


class ChildProcess:
    """Runs one command in the background.

    Args:
        args: the command line, ``[python, "-m", "RegSegLib.cli", ...]``.
        env: its environment (default: this process's).
        cwd: its working folder.
        on_progress: called with ``(fraction, message)`` for each ``PROGRESS`` line.
        on_log: called with every other output line (stderr lines too).
        log_path: optional file that receives every line of output.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.env = env
        self.cwd = cwd
        self.on_progress = on_progress
        self.on_log = on_log
        self.log_path = Path(log_path) if log_path is not None else None
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self.stderr_lines: list[str] = []
        self._events: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._log_file: TextIO | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Starts the child in its own process group (session on POSIX) so that cancel reaches its children."""
        if self.process is not None:
            raise RuntimeError("the process was already started")
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            kwargs["start_new_session"] = True
        if self.log_path is not None:
            self._log_file = open(self.log_path, "a", encoding="utf-8")
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        for stream, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            reader = threading.Thread(target=self._read, args=(stream, name), name=f"RegSeg {name} reader", daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, stream, name: str) -> None:
        for raw in stream:
            self._events.put((name, raw.rstrip("\r\n")))
        stream.close()

    @property
    def running(self) -> bool:
        """Whether the child was started and has not been seen to end (with all its output handled)."""
        return self.process is not None and self.returncode is None

    def poll(self) -> int | None:
        """Delivers the output collected so far to the callbacks; the exit code once the child ended.

        Returns:
            ``None`` while the child runs or output is still being read, else its exit code.
        """
        if self.process is None:
            raise RuntimeError("the process was not started")
        self._drain()
        if self.returncode is None and self.process.poll() is not None:
            if all(not reader.is_alive() for reader in self._readers):
                self._drain()
                self.returncode = self.process.returncode
                self._close_log()
        return self.returncode

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._events.get_nowait()
            except queue.Empty:
                return
            if self._log_file is not None:
                self._log_file.write(line + "\n")
            progress = parse_progress(line) if name == "stdout" else None
            if progress is not None:
                if self.on_progress is not None:
                    self.on_progress(*progress)
                continue
            if name == "stderr":
                self.stderr_lines.append(line)
                del self.stderr_lines[:-200]
            if self.on_log is not None and line.strip():
                self.on_log(line)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def wait(self, poll_interval_s: float = 0.1) -> int:
        """Polls until the child ends (batch use); raises like :meth:`check`.

        Returns:
            0.

        Raises:
            ProcessCancelled: :meth:`cancel` was called.
            ProcessFailed: the child ended with a non-zero exit code.
        """
        while self.poll() is None:
            time.sleep(poll_interval_s)
        return self.check()

    def check(self) -> int:
        """Raises for a cancelled or failed child that has ended; returns 0 for a successful one."""
        if self.cancelled:
            raise ProcessCancelled("cancelled by the user")
        if self.returncode is None:
            raise RuntimeError("the process has not ended")
        if self.returncode != 0:
            raise ProcessFailed(failure_message(self.stderr_lines, self.returncode), self.returncode)
        return 0

    def cancel(self, grace_s: float = CANCEL_GRACE_S) -> None:
        """Ends the child and all its descendants; returns when the child has ended.

        POSIX: SIGTERM to the child's process group (``regseg`` removes its partial outputs on SIGTERM), then
        SIGKILL to the group after ``grace_s``. Windows: the tree is killed at once with ``taskkill /F /T``
        (a child started without a console window cannot be asked politely: ``taskkill`` without ``/F`` only
        closes windows), and with ``TerminateProcess`` should ``taskkill`` fail; the caller removes the
        partial outputs.
        """
        if self.process is None or self.cancelled:
            return
        self.cancelled = True
        if os.name == "nt":
            self._kill_windows_tree()
        else:
            self._end_posix_group(grace_s)
        for reader in self._readers:
            reader.join(timeout=grace_s)
        self.poll()
        self._close_log()

    def _end_posix_group(self, grace_s: float) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # the child may have ended on SIGTERM and left descendants behind: the group is killed either way
        self._signal_group(signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()  # the group could not be signalled: the child itself at least
        self.process.wait()

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_windows_tree(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            return  # its descendants can no longer be found through it
        try:
            subprocess.run(windows_tree_kill_command(self.process.pid), capture_output=True, check=False, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass  # no taskkill, or it hung: the child itself is still ended below
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def windows_tree_kill_command(pid: int) -> list[str]:
    """``taskkill`` forcing the end of a process and all its descendants (``/F`` force, ``/T`` tree)."""
    return ["taskkill", "/F", "/T", "/PID", str(pid)]
