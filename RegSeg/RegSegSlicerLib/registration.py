"""One registration job in Slicer: export the input nodes, run ``regseg register`` in a child process, load the results.

The job's life (states, child process, cancellation, readable failures) is :class:`RegSegSlicerLib.jobs.BackgroundJob`;
this module holds what is particular to registration: the request and its validation (by
:mod:`RegSegLib.registration.settings`, the one place for the methods' names, defaults and rules), the
``regseg register`` command line, the export of volumes, masks, labels and the initial transform, and the import
of the transform, the warped volume and the Dice table.

MRML-only: uses ``slicer``'s MRML classes (imported at call time), the standard library and RegSegLib's torch-free
settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from RegSegSlicerLib import nodes
from RegSegSlicerLib.jobs import BackgroundJob, JobCancelled, JobError, readable_message
from RegSegSlicerLib.paths import ensure_regseglib_importable

ensure_regseglib_importable()

from RegSegLib import validation  # noqa: E402
from RegSegLib.registration import settings  # noqa: E402


class RegistrationError(JobError):
    """A registration job failed; the message is the child's error line with files named as nodes."""


class RegistrationCancelled(JobCancelled):
    """A registration job was cancelled."""


@dataclass
class RegistrationRequest:
    """What to register and where the results go (MRML nodes; ``None`` = not used).

    Attributes:
        fixed_volume: reference ``vtkMRMLScalarVolumeNode``; results lie on its grid.
        moving_volume: the volume brought onto the fixed one.
        method: ``affine`` or ``deformable``.
        transform_family: family of the affine stage (``rigid``, ``similarity``, ``anisotropic``, ``affine``).
        metric: similarity measure; ``auto`` chooses one that works within and across modalities.
        fixed_mask, moving_mask: label map volume on the image's grid, or segmentation node.
        fixed_mask_segments, moving_mask_segments: segment IDs or names of a segmentation mask (default all).
        initial_transform: transform node to start from (its "transform from parent", fixed -> moving).
        segment_with: segmentation models (model-store names or ``model.pt`` files) for the fixed and the moving
            volume: both are segmented and the segmentations drive the registration (``--segment-with``); ``None``
            = the images drive it.
        fixed_labels, moving_labels: label maps or segmentations for Dice (segmentations matched by name).
        diffeomorphic: deformable stage as a stationary velocity field.
        device: ``auto``, ``cpu`` or ``cuda``.
        levels: affine pyramid factors, coarse to fine (positive); ``None`` = the engine's (4, 2, 1).
        iterations: affine iterations per pyramid level (one per level, 0 skips a level); ``None`` = the engine's.
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
    metric: str = "auto"
    fixed_mask: Any = None
    fixed_mask_segments: Sequence[str] | None = None
    moving_mask: Any = None
    moving_mask_segments: Sequence[str] | None = None
    initial_transform: Any = None
    segment_with: Sequence[str] | None = None
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
        """Raises ``ValueError`` with a readable message for an impossible request.

        The method, family, metric, preset and advanced settings are checked by
        :meth:`RegSegLib.registration.settings.RegistrationSettings.create`, as ``regseg register`` checks them.
        """
        nodes.check_volume(self.fixed_volume, "fixed volume")
        nodes.check_volume(self.moving_volume, "moving volume")
        if self.fixed_volume is self.moving_volume:
            raise ValueError("The fixed and the moving volume are the same node; select two volumes.")
        self.engine_settings()
        try:
            validation.check_choice(self.device, settings.DEVICES, "device")
        except ValueError as exc:
            raise ValueError(readable_message(str(exc))) from None
        if self.segment_with is not None and (len(self.segment_with) != 2 or not all(str(m).strip() for m in self.segment_with)):
            raise ValueError("Segmentation-guided registration needs a segmentation model for each volume (fixed, moving).")
        if (self.fixed_labels is None) != (self.moving_labels is None):
            raise ValueError("Dice needs both fixed and moving labels (or neither).")
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

    def engine_settings(self) -> settings.RegistrationSettings:
        """The engine's settings for this request, checked with the rules of ``regseg register``.

        Raises:
            ValueError: a bad method, family, metric, preset or advanced setting (readable message).
        """
        try:
            validation.check_choice(self.method, settings.ITERATIVE_METHODS, "method")
            return settings.RegistrationSettings.from_attributes(self, family="transform_family", spacing="spacing_mm")
        except settings.SettingsError as exc:
            raise ValueError(readable_message(str(exc))) from None

    @property
    def result_is_linear(self) -> bool:
        """Whether the whole result is one matrix: an affine run from no initial transform or a linear one.

        An affine run from a non-linear initial transform returns that transform followed by the affine.
        """
        return self.method == "affine" and (self.initial_transform is None or self.initial_transform.IsLinear())


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

    @property
    def warnings(self) -> list[str]:
        """What the user must know about the result: a stage the guard undid because it made the alignment
        worse (``metrics.json``'s ``warnings``)."""
        return list(self.metrics.get("warnings", []))


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
    if request.metric != "auto":
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
    if request.segment_with is not None:
        args += ["--segment-with", ",".join(str(model).strip() for model in request.segment_with)]
    for values, option, kind in ((request.levels, "--levels", float), (request.iterations, "--iterations", int)):
        if values is not None:
            args += [option, ",".join(repr(kind(value)) for value in values)]
    if request.method == "deformable":
        args += _deformable_arguments(request)
    return args + ["--progress", "lines"]


def _deformable_arguments(request: RegistrationRequest) -> list[str]:
    """The deformable stage's options (``regseg register`` refuses them for an affine run, so they are given only
    for a deformable one: the panel keeps its advanced deformable values while the user tries an affine run)."""
    args = ["--diffeomorphic"] if request.diffeomorphic else []
    if request.deformable_iterations is not None:
        args += ["--deformable-iterations", ",".join(repr(int(value)) for value in request.deformable_iterations)]
    if request.regularisation is not None:
        args += ["--regularisation", repr(float(request.regularisation))]
    if request.preset != "default":
        args += ["--preset", request.preset]
    if request.spacing_mm is not None:
        args += ["--spacing", repr(float(request.spacing_mm))]
    return args


class RegistrationJob(BackgroundJob[RegistrationRequest, RegistrationOutputs]):
    """Runs one :class:`RegistrationRequest` in the background (``regseg register`` in a child process).

    Takes the arguments of :class:`~RegSegSlicerLib.jobs.BackgroundJob`; ``result_dir`` keeps RegSeg's whole
    result folder (``warped.nii.gz``, ``transform.h5``, ``metrics.json``, ``qc.png``, ...).

    Attributes:
        label_names: label value -> segment name of the Dice labels (segmentations), for the Dice table.
    """

    what = "registration"
    error_class = RegistrationError
    cancelled_class = RegistrationCancelled

    def __init__(self, scene, request: RegistrationRequest, **options: Any) -> None:
        super().__init__(scene, request, **options)
        self.label_names: dict[int, str] = {}

    def child_arguments(self, files: dict[str, str], output_dir: str) -> list[str]:
        return command_arguments(self.request, files, output_dir)

    def export_inputs(self) -> dict[str, str]:
        request = self.request
        files = {
            "fixed": self._export_volume("fixed.nrrd", "fixed volume", request.fixed_volume),
            "moving": self._export_volume("moving.nrrd", "moving volume", request.moving_volume),
        }
        for role, node, segments, reference in (
            ("fixed_mask", request.fixed_mask, request.fixed_mask_segments, request.fixed_volume),
            ("moving_mask", request.moving_mask, request.moving_mask_segments, request.moving_volume),
        ):
            if node is not None:
                what = role.replace("_", " ")
                label_map = nodes.as_label_map(node, reference, segments, what)
                files[role] = self._export_volume(f"{role}.nrrd", what, node, label_map)
        if request.fixed_labels is not None:
            fixed_map, moving_map = self._label_maps()
            files["fixed_labels"] = self._export_volume("fixed_labels.nrrd", "fixed labels", request.fixed_labels, fixed_map)
            files["moving_labels"] = self._export_volume("moving_labels.nrrd", "moving labels", request.moving_labels, moving_map)
        if request.initial_transform is not None:
            files["initial"] = self.export_file(
                "initial.h5",
                f"initial transform {nodes.node_label(request.initial_transform)}",
                lambda path: nodes.write_transform_node(request.initial_transform, path),
            )
        for role, node in (("fixed", request.fixed_volume), ("moving", request.moving_volume)):
            if node.GetParentTransformNode() is not None:
                self._log(
                    f"note: the {role} volume {nodes.node_label(node)} is under the transform "
                    f"{nodes.node_label(node.GetParentTransformNode())}; RegSeg registers the volumes' own geometry "
                    f"(give that transform as the initial transform to start from it)"
                )
        return files

    def _export_volume(self, name: str, what: str, node, content=None) -> str:
        """Writes ``content`` (default: ``node`` itself) as ``name``; messages call the file ``what`` and ``node``'s name."""
        content = node if content is None else content
        return self.export_file(name, f"{what} {nodes.node_label(node)}", lambda path: nodes.write_volume_node(content, path))

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

    def import_results(self, folder: Path) -> RegistrationOutputs:
        """Loads the result folder into the output nodes; everything is read before the scene changes.

        A result that cannot be read (a missing file, a ``metrics.json`` without what it should hold) raises
        before any node is created or filled, so a failed import leaves the scene as it was.
        """
        request = self.request
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        dice_rows = self._dice_rows(metrics["dice"]) if "dice" in metrics else None
        warped = nodes.read_volume_file(folder / "warped.nii.gz") if request.output_volume is not None else None
        transform_file = folder / ("affine.tfm" if request.result_is_linear else "transform.h5")
        transform_node = request.output_transform
        if transform_node is None:
            node_class = "vtkMRMLLinearTransformNode" if request.result_is_linear else "vtkMRMLTransformNode"
            name = f"{request.moving_volume.GetName()} to {request.fixed_volume.GetName()} ({request.method})"
            transform_node = self.scene.CreateNodeByClass(node_class)
            transform_node.UnRegister(None)
            transform_node.SetName(self.scene.GenerateUniqueName(name))
            nodes.load_transform_into(transform_file, transform_node)
            self.scene.AddNode(transform_node)
        else:
            nodes.load_transform_into(transform_file, transform_node)
        if warped is not None:
            nodes.copy_volume(warped, request.output_volume)
        table_node = None
        if dice_rows is not None:
            table_node = request.output_table
            if table_node is None:
                table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName("RegSeg Dice"))
            nodes.fill_table(table_node, ("segment", "Dice before", "Dice after"), dice_rows)
        return RegistrationOutputs(transform_node, request.output_volume, table_node, metrics)

    def _dice_rows(self, dice: dict) -> list[tuple]:
        """Table rows (segment name, Dice before, Dice after) of ``metrics.json``'s ``dice``, then the means."""
        rows = []
        for key, after in dice["per_label"].items():
            label = int(float(key))
            name = self.label_names.get(label, f"label {label}")
            rows.append((name, dice.get("before_per_label", {}).get(key, float("nan")), after))
        rows.append(("mean", dice.get("mean_before", float("nan")), dice["mean"]))
        return rows
