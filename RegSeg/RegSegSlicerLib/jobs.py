"""A background job in Slicer: export input nodes to files, run ``python -m RegSegLib.cli ...`` in a child process,
load the results into the scene. Every RegSeg panel (registration, segmentation, ...) runs its work as one.

State machine (:class:`JobState`)::

    idle -> starting -> running -> importing -> idle
               |           |           |
               +-> failed <+-----------+        (starting or running) -> cancelled

The scene is changed only in the ``importing`` step, after the child succeeded: a cancelled or failed job
leaves it as it was. Export and import run on the caller's thread and take the time of writing and reading
the files; the work itself runs in the child. A failure reads as the child's error line with the temporary
file names replaced by the nodes they came from. Whatever a hook raises while starting or importing ends the job
in ``failed`` with the temporary folder removed (an unexpected exception type is named and its traceback logged).

A panel's job subclasses :class:`BackgroundJob` and implements four hooks:

* :meth:`~BackgroundJob.validate`: raise ``ValueError`` with a readable message for an impossible request;
* :meth:`~BackgroundJob.export_inputs`: write the input nodes with :meth:`~BackgroundJob.export_file` and
  return the files by role;
* :meth:`~BackgroundJob.child_arguments`: the command line after ``python -m RegSegLib.cli``;
* :meth:`~BackgroundJob.import_results`: load the child's result folder into the scene.

MRML-free itself (the hooks use the MRML classes); standard library only.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Generic, TypeVar

from RegSegSlicerLib.paths import child_environment, python_executable
from RegSegSlicerLib.process import ChildProcess, ProcessCancelled, ProcessFailed

CLI_MODULE = "RegSegLib.cli"
"""What the child runs: ``python -m RegSegLib.cli <arguments>``."""
RESULT_FOLDER_NAME = "result"
"""The child's result folder inside the temporary working folder (unless the caller keeps it elsewhere)."""

Request = TypeVar("Request")
Outputs = TypeVar("Outputs")


class JobState(enum.Enum):
    """Processing states of a job (see the module docstring)."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    IMPORTING = "importing results"
    FAILED = "failed"
    CANCELLED = "cancelled"


TRANSITIONS = {
    JobState.IDLE: {JobState.STARTING},
    JobState.STARTING: {JobState.RUNNING, JobState.FAILED, JobState.CANCELLED},
    JobState.RUNNING: {JobState.IMPORTING, JobState.FAILED, JobState.CANCELLED},
    JobState.IMPORTING: {JobState.IDLE, JobState.FAILED},
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
}
FINAL_STATES = (JobState.FAILED, JobState.CANCELLED)


class JobError(RuntimeError):
    """A job failed; the message is the child's error line with files named as nodes."""


class JobCancelled(RuntimeError):
    """A job was cancelled."""


class BackgroundJob(Generic[Request, Outputs]):
    """Runs one request in a child process (``python -m RegSegLib.cli ...``) and loads its results.

    Subclasses set :attr:`what` (how messages name the job) and, optionally, :attr:`error_class` and
    :attr:`cancelled_class`, and implement the hooks :meth:`validate`, :meth:`export_inputs`,
    :meth:`child_arguments` and :meth:`import_results`.

    Args:
        scene: the MRML scene the input nodes belong to (output nodes are created in it).
        request: what to do (the subclass's request type).
        python: interpreter for ``-m RegSegLib.cli`` (default: ``PythonSlicer`` in Slicer, else this Python).
        env: child environment (default: :func:`RegSegSlicerLib.paths.child_environment`).
        on_progress: ``(fraction, message)`` as the child reports it.
        on_log: each log line of the job (messages of its own and the child's output).
        on_state: each new :class:`JobState`.
        work_root: folder for the temporary working folder (default: the system's).
        result_dir: keep the child's whole result folder here; by default it is temporary and removed once loaded.

    Attributes:
        state: the current :class:`JobState`.
        outputs: what :meth:`import_results` returned, once the job succeeded.
        error: the readable failure message, once the job failed.
        process: the :class:`~RegSegSlicerLib.process.ChildProcess`, once started.
        work_dir: the temporary working folder (removed when the job ends).
    """

    what = "job"
    """How messages name the job ("could not start the <what>", "the <what> was cancelled")."""
    error_class: type[JobError] = JobError
    cancelled_class: type[JobCancelled] = JobCancelled

    def __init__(
        self,
        scene,
        request: Request,
        *,
        python: str | None = None,
        env: dict[str, str] | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_state: Callable[[JobState], None] | None = None,
        work_root: str | None = None,
        result_dir: str | None = None,
    ) -> None:
        self.scene = scene
        self.request = request
        self.python = python or python_executable()
        self.env = env if env is not None else child_environment()
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_state = on_state
        self.work_root = work_root
        self.result_dir = Path(result_dir) if result_dir is not None else None
        self.state = JobState.IDLE
        self.work_dir: Path | None = None
        self.process: ChildProcess | None = None
        self.outputs: Outputs | None = None
        self.error: str | None = None
        self._file_roles: dict[str, str] = {}
        self.started_at = 0.0

    # ------------------------------------------------------------------ hooks

    def validate(self) -> None:
        """Raises ``ValueError`` with a readable message for an impossible request (default: ``request.validate()``)."""
        self.request.validate()

    def export_inputs(self) -> dict[str, str]:
        """Writes the input nodes into :attr:`work_dir` (with :meth:`export_file`); returns the files by role."""
        raise NotImplementedError

    def child_arguments(self, files: dict[str, str], output_dir: str) -> list[str]:
        """The child's arguments after ``python -m RegSegLib.cli``, for the exported ``files`` and the result folder."""
        raise NotImplementedError

    def import_results(self, folder: Path) -> Outputs:
        """Loads the child's result folder into the scene; returns what the job produced.

        Raises:
            OSError, RuntimeError, ValueError: a result could not be loaded; the message says why. Any other
                exception fails the job as well, named by its type, with its traceback in the log.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for the hooks

    def export_file(self, name: str, label: str, write: Callable[[str], str]) -> str:
        """Writes one input file into :attr:`work_dir` and remembers which node it came from.

        Args:
            name: file name in the working folder (e.g. ``fixed.nrrd``).
            label: how messages name its node (e.g. ``fixed volume 'MRHead'``); the child's messages
                naming the file are shown with this label instead.
            write: writes the file to the path it is given and returns the path written.

        Returns:
            The path written.
        """
        assert self.work_dir is not None
        path = write(str(self.work_dir / name))
        self._file_roles[path] = label
        return path

    def _log(self, line: str) -> None:
        if self.on_log is not None:
            self.on_log(line)

    def _progress(self, fraction: float, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(fraction, message)

    # ------------------------------------------------------------------ state

    def _set_state(self, state: JobState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"a job cannot go from {self.state.value} to {state.value}")
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    @property
    def result_folder(self) -> Path:
        """Where the child writes its results: :attr:`result_dir`, else ``result`` in the temporary folder."""
        if self.result_dir is not None:
            return self.result_dir
        assert self.work_dir is not None
        return self.work_dir / RESULT_FOLDER_NAME

    @property
    def finished(self) -> bool:
        """Whether the job reached an end (results imported, failed or cancelled)."""
        return self.state in FINAL_STATES or (self.state is JobState.IDLE and self.started_at > 0.0)

    # ------------------------------------------------------------------ starting

    def start(self) -> None:
        """Validates the request, exports the inputs and starts the child.

        Raises:
            ValueError: an impossible request (nothing was started, the job stays idle).
            JobError: the inputs could not be exported or the child not started (:attr:`error_class`).
        """
        self.validate()
        self.started_at = time.monotonic()
        self._set_state(JobState.STARTING)
        try:
            self.work_dir = Path(tempfile.mkdtemp(prefix="RegSeg-", dir=self.work_root))
            files = self.export_inputs()
            args = [self.python, "-m", CLI_MODULE, *self.child_arguments(files, str(self.result_folder))]
            self._log("running: " + " ".join(args))
            self.process = ChildProcess(
                args,
                env=self.env,
                cwd=str(self.work_dir),
                on_progress=self._progress,
                on_log=self._log,
                log_path=self.work_dir / "regseg.log",
            )
            self.process.start()
        except Exception as exc:  # noqa: BLE001  (every failure ends the job: failed, temporary folder removed)
            self.fail(f"could not start the {self.what}: {self._describe(exc)}")
            raise self.error_class(self.error) from exc
        self._set_state(JobState.RUNNING)

    # ------------------------------------------------------------------ running

    def poll(self) -> bool:
        """Handles the child's output; imports the results once it succeeded.

        Returns:
            ``True`` once the job has finished (see :attr:`state`, :attr:`outputs`, :attr:`error`).
        """
        if self.state is not JobState.RUNNING:
            return self.finished
        assert self.process is not None
        if self.process.poll() is None:
            return False
        try:
            self.process.check()
        except ProcessCancelled:
            self._end_cancelled()
            return True
        except ProcessFailed as exc:
            self.fail(self._readable(str(exc)))
            return True
        self._set_state(JobState.IMPORTING)
        try:
            self.outputs = self.import_results(self.result_folder)
        except Exception as exc:  # noqa: BLE001  (a job left importing would keep its panel busy and its folder)
            self.fail(f"the results could not be loaded: {self._describe(exc)}")
            return True
        self._cleanup()
        self._log(f"done in {time.monotonic() - self.started_at:.1f} s")
        self._set_state(JobState.IDLE)
        return True

    def wait(self, poll_interval_s: float = 0.1) -> Outputs:
        """Starts the job if needed and polls until it ends (batch use).

        Raises:
            ValueError: an impossible request.
            JobError: the job failed (message: the child's error line; :attr:`error_class`).
            JobCancelled: :meth:`cancel` was called (:attr:`cancelled_class`).
        """
        if self.state is JobState.IDLE and self.started_at == 0.0:
            self.start()
        while not self.poll():
            time.sleep(poll_interval_s)
        if self.state is JobState.CANCELLED:
            raise self.cancelled_class(f"the {self.what} was cancelled")
        if self.state is JobState.FAILED:
            raise self.error_class(self.error)
        assert self.outputs is not None
        return self.outputs

    def cancel(self) -> None:
        """Kills the child's process tree and removes the temporary files; the scene is left as it was."""
        if self.state not in (JobState.STARTING, JobState.RUNNING):
            return
        if self.process is not None:
            self.process.cancel()
        self._end_cancelled()

    def _end_cancelled(self) -> None:
        self._cleanup()
        self._log("cancelled")
        self._set_state(JobState.CANCELLED)

    def fail(self, message: str) -> None:
        """Ends the job as failed with ``message`` (its temporary folder removed); for a caller that gives up on it."""
        self.error = message
        self._log(f"failed: {message}")
        self._cleanup()
        self._set_state(JobState.FAILED)

    def _describe(self, exc: Exception) -> str:
        """A hook's exception as a message: its text, named by its type (traceback logged) when it was not expected."""
        if isinstance(exc, (OSError, RuntimeError, ValueError)):
            return str(exc)
        for line in "".join(traceback.format_exception(exc)).splitlines():
            self._log(line)
        return f"{type(exc).__name__} {exc}"

    def _readable(self, message: str) -> str:
        """The child's error line with temporary file names replaced by the nodes they came from."""
        for path, label in self._file_roles.items():
            message = message.replace(path, label)
        if self.work_dir is not None:
            message = message.replace(str(self.work_dir / RESULT_FOLDER_NAME), "the temporary result folder")
        return message

    def _cleanup(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def readable_message(message: str) -> str:
    """A library message as the panel shows it: first letter capitalised, ending with a period."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."
