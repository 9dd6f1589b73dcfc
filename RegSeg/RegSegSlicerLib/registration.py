"""One registration job in Slicer: export the input nodes, run ``regseg register`` in a child process, load the results.

State machine (:class:`JobState`)::

    idle -> starting -> running -> importing -> idle
               |           |           |
               +-> failed <+-----------+        (any state but idle) -> cancelled

The scene is changed only in the ``importing`` step, after the child succeeded: a cancelled or failed job
leaves it as it was. Export and import run on the caller's thread and take the time of writing and reading
the files; the registration itself runs in the child.

MRML-only: uses ``slicer``'s MRML classes (imported at call time) and the standard library.
"""

from __future__ import annotations

import enum
import json
import math
import numbers
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from RegSegSlicerLib import nodes
from RegSegSlicerLib.paths import child_environment, python_executable
from RegSegSlicerLib.process import ChildProcess, ProcessCancelled, ProcessFailed

METHODS = ("affine", "deformable")
"""Registration methods of ``regseg register`` (``deformable`` = affine, then a dense elastic field)."""
TRANSFORM_FAMILIES = ("rigid", "similarity", "anisotropic", "affine")
METRICS = ("lncc", "ncc", "mse", "mi", "mind")
DEVICES = ("auto", "cpu", "cuda")
DEFORMABLE_PRESETS = ("default", "large-motion")
"""Deformable settings presets of ``regseg register --preset`` (kept equal to ``RegSegLib.cli``'s by a test)."""
DEFAULT_AFFINE_LEVELS = (4.0, 2.0, 1.0)
"""The engine's affine pyramid: ``iterations`` without ``levels`` gives one count per level of it."""


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


class RegistrationError(RuntimeError):
    """A registration job failed; the message is the child's error line with files named as nodes."""


class RegistrationCancelled(RuntimeError):
    """A registration job was cancelled."""


@dataclass
class RegistrationRequest:
    """What to register and where the results go (MRML nodes; ``None`` = not used).

    Attributes:
        fixed_volume: reference ``vtkMRMLScalarVolumeNode``; results lie on its grid.
        moving_volume: the volume brought onto the fixed one.
        method: ``affine`` or ``deformable``.
        transform_family: family of the affine stage (``rigid``, ``similarity``, ``anisotropic``, ``affine``).
        metric: similarity measure; ``None`` = each stage's default.
        fixed_mask, moving_mask: label map volume on the image's grid, or segmentation node.
        fixed_mask_segments, moving_mask_segments: segment IDs or names of a segmentation mask (default all).
        initial_transform: transform node to start from (its "transform from parent", fixed -> moving).
        fixed_labels, moving_labels: label maps or segmentations for Dice (segmentations matched by name).
        diffeomorphic: deformable stage as a stationary velocity field.
        device: ``auto``, ``cpu`` or ``cuda``.
        levels: affine pyramid factors, coarse to fine (positive); ``None`` = the engine's (4, 2, 1).
        iterations: affine iterations per pyramid level (positive, one per level); ``None`` = the engine's.
        deformable_iterations: deformable Adam iterations on the control grid, then optionally on the full
            working grid (one or two counts, 0 skips); ``None`` = the preset's.
        regularisation: deformable smoothness weight (positive); ``None`` = the preset's (1).
        preset: deformable settings preset, ``default`` or ``large-motion``.
        spacing_mm: isotropic working resolution of the deformable stage in mm (positive); ``None`` = the fixed grid.
        output_transform: transform node that receives the result (created when ``None``).
        output_volume: volume node that receives the warped moving volume (not loaded when ``None``).
        output_table: table node that receives Dice per label (created when labels are given and it is ``None``).
    """

    fixed_volume: Any
    moving_volume: Any
    method: str = "affine"
    transform_family: str = "affine"
    metric: str | None = None
    fixed_mask: Any = None
    fixed_mask_segments: Sequence[str] | None = None
    moving_mask: Any = None
    moving_mask_segments: Sequence[str] | None = None
    initial_transform: Any = None
    fixed_labels: Any = None
    moving_labels: Any = None
    diffeomorphic: bool = False
    device: str = "auto"
    levels: Sequence[float] | None = None
    iterations: Sequence[int] | None = None
    deformable_iterations: Sequence[int] | None = None
    regularisation: float | None = None
    preset: str = "default"
    spacing_mm: float | None = None
    output_transform: Any = None
    output_volume: Any = None
    output_table: Any = None

    def validate(self) -> None:
        """Raises ``ValueError`` with a readable message for an impossible request."""
        nodes.check_volume(self.fixed_volume, "fixed volume")
        nodes.check_volume(self.moving_volume, "moving volume")
        if self.fixed_volume is self.moving_volume:
            raise ValueError("The fixed and the moving volume are the same node; select two volumes.")
        for value, allowed, what in (
            (self.method, METHODS, "method"),
            (self.transform_family, TRANSFORM_FAMILIES, "transform family"),
            (self.device, DEVICES, "device"),
            (self.preset, DEFORMABLE_PRESETS, "deformable preset"),
        ):
            if value not in allowed:
                raise ValueError(f"Unknown {what} {value!r}; choose one of {', '.join(allowed)}.")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"Unknown similarity {self.metric!r}; choose one of {', '.join(METRICS)}.")
        if (self.fixed_labels is None) != (self.moving_labels is None):
            raise ValueError("Dice needs both fixed and moving labels (or neither).")
        self._validate_advanced()
        inputs = [self.fixed_volume, self.moving_volume, self.fixed_mask, self.moving_mask, self.fixed_labels, self.moving_labels, self.initial_transform]
        for output in (self.output_transform, self.output_volume, self.output_table):
            if output is not None and any(output is given for given in inputs):
                raise ValueError(f"The output {nodes.node_label(output)} is one of the inputs; inputs are never overwritten.")
        if self.output_transform is not None and not self.output_transform.IsA("vtkMRMLTransformNode"):
            raise ValueError(f"The output transform {nodes.node_label(self.output_transform)} is not a transform node.")
        if self.output_transform is not None and not self.result_is_linear and self.output_transform.IsA("vtkMRMLLinearTransformNode"):
            if self.method != "affine":
                reason = f"A {self.method} result is not linear"
            else:
                reason = (
                    f"The initial transform {nodes.node_label(self.initial_transform)} is not linear, and neither "
                    "is the result that starts from it"
                )
            raise ValueError(
                f"{reason}; choose a transform node that is not a linear transform instead of "
                f"{nodes.node_label(self.output_transform)}."
            )

    @property
    def result_is_linear(self) -> bool:
        """Whether the whole result is one matrix: an affine run from no initial transform or a linear one.

        An affine run from a non-linear initial transform returns that transform followed by the affine.
        """
        return self.method == "affine" and (self.initial_transform is None or self.initial_transform.IsLinear())

    def _validate_advanced(self) -> None:
        """Checks the advanced settings with the rules of ``regseg register``."""
        _check_counts(self.levels, "pyramid levels", float, zero_allowed=False)
        _check_counts(self.iterations, "affine iterations", int, zero_allowed=False)
        _check_counts(self.deformable_iterations, "deformable iterations", int, zero_allowed=True)
        if self.iterations is not None:
            levels = self.levels if self.levels is not None else DEFAULT_AFFINE_LEVELS
            if len(self.iterations) != len(levels):
                raise ValueError(
                    f"The affine iterations need one count per pyramid level: {len(levels)} levels, "
                    f"{len(self.iterations)} counts."
                )
        if self.deformable_iterations is not None and len(self.deformable_iterations) > 2:
            raise ValueError(
                "The deformable iterations take one or two counts (control grid, then full resolution), "
                f"got {len(self.deformable_iterations)}."
            )
        for value, what in ((self.regularisation, "regularisation weight"), (self.spacing_mm, "deformable spacing")):
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"The {what} must be a positive number, got {value!r}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_counts(values: Sequence[Any] | None, what: str, kind: type, zero_allowed: bool) -> None:
    """Raises ``ValueError`` unless ``values`` is ``None`` or a non-empty list of positive (or zero) ``kind`` numbers."""
    if values is None:
        return
    sign = "non-negative" if zero_allowed else "positive"
    noun = "whole numbers" if kind is int else "numbers"
    if len(values) == 0:
        raise ValueError(f"The {what} are empty; give {sign} {noun} or leave them at the default.")
    for value in values:
        right_kind = _is_number(value) and math.isfinite(value) and (kind is float or float(value).is_integer())
        if not right_kind or value < 0 or (value == 0 and not zero_allowed):
            raise ValueError(f"The {what} must be {sign} {noun}, got {', '.join(str(v) for v in values)}.")


def parse_number_list(text: str, kind: type, what: str) -> list | None:
    """Comma-separated numbers as typed in the panel; empty text = ``None`` (the engine's default).

    Args:
        text: e.g. ``"4, 2, 1"``.
        kind: ``int`` or ``float``.
        what: what the numbers are, for the error message (e.g. ``"pyramid levels"``).

    Raises:
        ValueError: a part is not a number of ``kind`` (ranges are checked by :meth:`RegistrationRequest.validate`).
    """
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        return None
    try:
        return [kind(part) for part in parts]
    except ValueError:
        noun = "whole numbers" if kind is int else "numbers"
        raise ValueError(f"The {what} must be comma-separated {noun}, got {text.strip()!r}.") from None


@dataclass
class RegistrationOutputs:
    """Nodes that received the results, and the child's ``metrics.json``."""

    transform_node: Any
    volume_node: Any = None
    table_node: Any = None
    metrics: dict = field(default_factory=dict)


def command_arguments(request: RegistrationRequest, files: dict[str, str], output_dir: str) -> list[str]:
    """The ``regseg register`` arguments (after ``python -m RegSegLib.cli``) for exported input files.

    Args:
        request: the request (method, family, metric, device, flags, advanced settings; defaults give no option).
        files: exported files by role: ``fixed``, ``moving`` and optionally ``fixed_mask``, ``moving_mask``,
            ``initial``, ``fixed_labels``, ``moving_labels``.
        output_dir: the result folder.
    """
    args = ["register", files["fixed"], files["moving"], "-o", output_dir]
    args += ["--method", request.method, "--transform", request.transform_family, "--device", request.device]
    if request.metric:
        args += ["--metric", request.metric]
    for role, option in (
        ("fixed_mask", "--fixed-mask"),
        ("moving_mask", "--moving-mask"),
        ("initial", "--init"),
        ("fixed_labels", "--fixed-labels"),
        ("moving_labels", "--moving-labels"),
    ):
        if role in files:
            args += [option, files[role]]
    if request.diffeomorphic:
        args.append("--diffeomorphic")
    for values, option, kind in (
        (request.levels, "--levels", float),
        (request.iterations, "--iterations", int),
        (request.deformable_iterations, "--deformable-iterations", int),
    ):
        if values is not None:
            args += [option, ",".join(repr(kind(value)) for value in values)]
    if request.regularisation is not None:
        args += ["--regularisation", repr(float(request.regularisation))]
    if request.preset != "default":
        args += ["--preset", request.preset]
    if request.spacing_mm is not None:
        args += ["--spacing", repr(float(request.spacing_mm))]
    return args + ["--progress", "lines"]


class RegistrationJob:
    """Runs one :class:`RegistrationRequest` in the background.

    Args:
        scene: the MRML scene the input nodes belong to (output nodes are created in it).
        request: the request.
        python: interpreter for ``-m RegSegLib.cli`` (default: ``PythonSlicer`` in Slicer, else this Python).
        env: child environment (default: :func:`RegSegSlicerLib.paths.child_environment`).
        on_progress: ``(fraction, message)`` as the child reports it.
        on_log: each log line of the job (messages of its own and the child's output).
        on_state: each new :class:`JobState`.
        work_root: folder for the temporary working folder (default: the system's).
        result_dir: keep RegSeg's whole result folder here (``warped.nii.gz``, ``transform.h5``, ``metrics.json``,
            ``qc.png``, ...); by default it is temporary and removed once loaded.
    """

    def __init__(
        self,
        scene,
        request: RegistrationRequest,
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
        self.outputs: RegistrationOutputs | None = None
        self.error: str | None = None
        self.label_names: dict[int, str] = {}
        self._file_roles: dict[str, str] = {}
        self.started_at = 0.0

    # ------------------------------------------------------------------ state

    def _set_state(self, state: JobState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"a job cannot go from {self.state.value} to {state.value}")
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    def _log(self, line: str) -> None:
        if self.on_log is not None:
            self.on_log(line)

    @property
    def result_folder(self) -> Path:
        """Where the child writes its results: :attr:`result_dir`, else ``result`` in the temporary folder."""
        if self.result_dir is not None:
            return self.result_dir
        assert self.work_dir is not None
        return self.work_dir / "result"

    @property
    def finished(self) -> bool:
        """Whether the job reached an end (results imported, failed or cancelled)."""
        return self.state in FINAL_STATES or (self.state is JobState.IDLE and self.started_at > 0.0)

    # ------------------------------------------------------------------ starting

    def start(self) -> None:
        """Validates the request, exports the inputs and starts the child.

        Raises:
            ValueError: an impossible request (nothing was started, the job stays idle).
            RegistrationError: the inputs could not be exported or the child not started.
        """
        self.request.validate()
        self.started_at = time.monotonic()
        self._set_state(JobState.STARTING)
        try:
            self.work_dir = Path(tempfile.mkdtemp(prefix="RegSeg-", dir=self.work_root))
            files = self._export_inputs()
            args = [self.python, "-m", "RegSegLib.cli", *command_arguments(self.request, files, str(self.result_folder))]
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
        except (OSError, RuntimeError, ValueError) as exc:
            self._fail(f"could not start the registration: {exc}")
            raise RegistrationError(self.error) from exc
        self._set_state(JobState.RUNNING)

    def _progress(self, fraction: float, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(fraction, message)

    def _export(self, role: str, label: str, write: Callable[[str], str], name: str) -> str:
        assert self.work_dir is not None
        path = write(str(self.work_dir / name))
        self._file_roles[path] = label
        return path

    def _export_inputs(self) -> dict[str, str]:
        request = self.request
        files = {
            "fixed": self._export("fixed", f"fixed volume {nodes.node_label(request.fixed_volume)}", lambda p: nodes.write_volume_node(request.fixed_volume, p), "fixed.nrrd"),
            "moving": self._export("moving", f"moving volume {nodes.node_label(request.moving_volume)}", lambda p: nodes.write_volume_node(request.moving_volume, p), "moving.nrrd"),
        }
        for role, node, segments, reference in (
            ("fixed_mask", request.fixed_mask, request.fixed_mask_segments, request.fixed_volume),
            ("moving_mask", request.moving_mask, request.moving_mask_segments, request.moving_volume),
        ):
            if node is not None:
                label_map = nodes.as_label_map(node, reference, segments, role.replace("_", " "))
                files[role] = self._export(role, f"{role.replace('_', ' ')} {nodes.node_label(node)}", lambda p, m=label_map: nodes.write_volume_node(m, p), f"{role}.nrrd")
        if request.fixed_labels is not None:
            fixed_map, moving_map = self._label_maps()
            files["fixed_labels"] = self._export("fixed_labels", f"fixed labels {nodes.node_label(request.fixed_labels)}", lambda p: nodes.write_volume_node(fixed_map, p), "fixed_labels.nrrd")
            files["moving_labels"] = self._export("moving_labels", f"moving labels {nodes.node_label(request.moving_labels)}", lambda p: nodes.write_volume_node(moving_map, p), "moving_labels.nrrd")
        if request.initial_transform is not None:
            files["initial"] = self._export("initial", f"initial transform {nodes.node_label(request.initial_transform)}", lambda p: nodes.write_transform_node(request.initial_transform, p), "initial.h5")
        for role, node in (("fixed", request.fixed_volume), ("moving", request.moving_volume)):
            if node.GetParentTransformNode() is not None:
                self._log(
                    f"note: the {role} volume {nodes.node_label(node)} is under the transform "
                    f"{nodes.node_label(node.GetParentTransformNode())}; RegSeg registers the volumes' own geometry "
                    f"(give that transform as the initial transform to start from it)"
                )
        return files

    def _label_maps(self):
        """Fixed and moving label maps with matching values; segmentations are matched by segment name."""
        request = self.request
        fixed, moving = request.fixed_labels, request.moving_labels
        fixed_is_segmentation = fixed.IsA("vtkMRMLSegmentationNode")
        moving_is_segmentation = moving.IsA("vtkMRMLSegmentationNode")
        if fixed_is_segmentation and moving_is_segmentation:
            fixed_ids = nodes.segment_ids(fixed)
            fixed_names = nodes.segment_names(fixed, fixed_ids)
            moving_by_name = dict(zip(nodes.segment_names(moving, nodes.segment_ids(moving)), nodes.segment_ids(moving)))
            common = [(i, n) for i, n in zip(fixed_ids, fixed_names) if n in moving_by_name]
            if not common:
                raise ValueError(
                    f"The label segmentations {nodes.node_label(fixed)} and {nodes.node_label(moving)} share no segment name."
                )
            self.label_names = {value: name for value, (_, name) in enumerate(common, start=1)}
            fixed_map = nodes.segmentation_to_label_map(fixed, request.fixed_volume, [i for i, _ in common])
            moving_map = nodes.segmentation_to_label_map(moving, request.moving_volume, [moving_by_name[n] for _, n in common])
            return fixed_map, moving_map
        maps = []
        for node, reference, role in ((fixed, request.fixed_volume, "fixed labels"), (moving, request.moving_volume, "moving labels")):
            maps.append(nodes.as_label_map(node, reference, None, role))
            if node.IsA("vtkMRMLSegmentationNode"):
                ids = nodes.segment_ids(node)
                self.label_names = dict(enumerate(nodes.segment_names(node, ids), start=1))
        return maps[0], maps[1]

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
            self._fail(self._readable(str(exc)))
            return True
        self._set_state(JobState.IMPORTING)
        try:
            self.outputs = self._import_results(self.result_folder)
        except (OSError, RuntimeError, ValueError) as exc:
            self._fail(f"the results could not be loaded: {exc}")
            return True
        self._cleanup()
        self._log(f"done in {time.monotonic() - self.started_at:.1f} s")
        self._set_state(JobState.IDLE)
        return True

    def wait(self, poll_interval_s: float = 0.1) -> RegistrationOutputs:
        """Starts the job if needed and polls until it ends (batch use).

        Raises:
            ValueError: an impossible request.
            RegistrationError: the registration failed (message: the child's error line).
            RegistrationCancelled: :meth:`cancel` was called.
        """
        if self.state is JobState.IDLE and self.started_at == 0.0:
            self.start()
        while not self.poll():
            time.sleep(poll_interval_s)
        if self.state is JobState.CANCELLED:
            raise RegistrationCancelled("the registration was cancelled")
        if self.state is JobState.FAILED:
            raise RegistrationError(self.error)
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

    def _fail(self, message: str) -> None:
        self.error = message
        self._log(f"failed: {message}")
        self._cleanup()
        self._set_state(JobState.FAILED)

    def _readable(self, message: str) -> str:
        """The child's error line with temporary file names replaced by the nodes they came from."""
        for path, label in self._file_roles.items():
            message = message.replace(path, label)
        if self.work_dir is not None:
            message = message.replace(str(self.work_dir / "result"), "the temporary result folder")
        return message

    def _cleanup(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ------------------------------------------------------------------ importing

    def _import_results(self, folder: Path) -> RegistrationOutputs:
        request = self.request
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        transform_file = folder / ("affine.tfm" if request.result_is_linear else "transform.h5")
        warped = nodes.read_volume_file(folder / "warped.nii.gz") if request.output_volume is not None else None
        transform_node = request.output_transform
        if transform_node is None:
            node_class = "vtkMRMLLinearTransformNode" if request.result_is_linear else "vtkMRMLTransformNode"
            name = f"{request.moving_volume.GetName()} to {request.fixed_volume.GetName()} ({request.method})"
            transform_node = self.scene.AddNewNodeByClass(node_class, self.scene.GenerateUniqueName(name))
        nodes.load_transform_into(transform_file, transform_node)
        if warped is not None:
            nodes.copy_volume(warped, request.output_volume)
        table_node = None
        if "dice" in metrics:
            table_node = request.output_table
            if table_node is None:
                table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName("RegSeg Dice"))
            dice = metrics["dice"]
            rows = []
            for key, after in dice["per_label"].items():
                label = int(float(key))
                name = self.label_names.get(label, f"label {label}")
                rows.append((name, dice.get("before_per_label", {}).get(key, float("nan")), after))
            rows.append(("mean", dice.get("mean_before", float("nan")), dice["mean"]))
            nodes.fill_table(table_node, ("segment", "Dice before", "Dice after"), rows)
        return RegistrationOutputs(transform_node, request.output_volume, table_node, metrics)
