"""One segmentation job in Slicer: export the input volumes, run ``regseg segment`` in a child process, load the
segmentation (named segments, colours, terminology) into a segmentation node.

The job's life is :class:`RegSegSlicerLib.jobs.BackgroundJob`'s; this module holds the request and its validation,
the ``regseg segment`` command line, and the import of ``segmentation.seg.nrrd``. The segmentation lies on the
first input volume's grid; further input volumes (other sequences of a multi-channel model) are resampled onto it
in physical space by RegSegLib.

MRML-only: uses ``slicer``'s MRML classes (imported at call time), the standard library and RegSegLib's torch-free
vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from RegSegSlicerLib import nodes
from RegSegSlicerLib.jobs import BackgroundJob, JobCancelled, JobError
from RegSegSlicerLib.paths import ensure_regseglib_importable

ensure_regseglib_importable()

from RegSegLib.vocabulary import DEVICES  # noqa: E402  (torch-free)

SEGMENTATION_FILE = "segmentation.seg.nrrd"


class SegmentationError(JobError):
    """A segmentation job failed; the message is the child's error line with files named as nodes."""


class SegmentationCancelled(JobCancelled):
    """A segmentation job was cancelled."""


@dataclass
class SegmentationRequest:
    """What to segment with which model, and where the result goes.

    Attributes:
        input_volumes: one ``vtkMRMLScalarVolumeNode`` per channel the model takes; the first defines the grid.
        model: a model-store name (task ``segmentation``) or a ``model.pt`` file.
        device: ``auto``, ``cpu`` or ``cuda``.
        mirroring: mirroring test-time augmentation (8 passes; off is 8 times faster).
        largest_component: keep each segment's largest connected component.
        output_segmentation: ``vtkMRMLSegmentationNode`` that receives the segments (created when ``None``; its
            segments are replaced).
    """

    input_volumes: Sequence[Any]
    model: str
    device: str = "auto"
    mirroring: bool = True
    largest_component: bool = False
    output_segmentation: Any = None

    def validate(self) -> None:
        """Raises ``ValueError`` with a readable message for an impossible request."""
        if not self.input_volumes:
            raise ValueError("Select the volume to segment.")
        for index, volume in enumerate(self.input_volumes):
            nodes.check_volume(volume, "input volume" if index == 0 else f"input volume {index + 1}")
        if len({id(volume) for volume in self.input_volumes}) != len(self.input_volumes):
            raise ValueError("The same volume is selected twice; each channel of the model needs its own volume.")
        if not str(self.model or "").strip():
            raise ValueError("Select a segmentation model (a name from the Models section, or a model file).")
        if self.device not in DEVICES:
            raise ValueError(f"Unknown device '{self.device}'; choose one of {', '.join(DEVICES)}.")
        output = self.output_segmentation
        if output is not None and not output.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(f"The output {nodes.node_label(output)} is not a segmentation node.")


@dataclass
class SegmentationOutputs:
    """The node that received the segments, and the child's ``metrics.json``."""

    segmentation_node: Any
    metrics: dict = field(default_factory=dict)


def command_arguments(request: SegmentationRequest, files: dict[str, str], output_dir: str) -> list[str]:
    """The ``regseg segment`` arguments (after ``python -m RegSegLib.cli``) for exported input files
    ``files["image0"]``, ``files["image1"]``, ..."""
    images = [files[f"image{index}"] for index in range(len(request.input_volumes))]
    args = ["segment", *images, "--model", str(request.model).strip(), "-o", output_dir, "--device", request.device]
    if not request.mirroring:
        args.append("--no-mirroring")
    if request.largest_component:
        args.append("--largest-component")
    return args + ["--progress", "lines"]


class SegmentationJob(BackgroundJob[SegmentationRequest, SegmentationOutputs]):
    """Runs one :class:`SegmentationRequest` in the background (``regseg segment`` in a child process)."""

    what = "segmentation"
    error_class = SegmentationError
    cancelled_class = SegmentationCancelled

    def child_arguments(self, files: dict[str, str], output_dir: str) -> list[str]:
        return command_arguments(self.request, files, output_dir)

    def export_inputs(self) -> dict[str, str]:
        files = {}
        for index, volume in enumerate(self.request.input_volumes):
            files[f"image{index}"] = self.export_file(
                f"image{index}.nrrd", f"input volume {nodes.node_label(volume)}", lambda path, v=volume: nodes.write_volume_node(v, path)
            )
        return files

    def import_results(self, folder: Path) -> SegmentationOutputs:
        """Reads ``segmentation.seg.nrrd`` into the output node (or a new one named after the input volume).

        The file is read into a standalone node first, so a result that cannot be read leaves the scene as it was.
        """
        import slicer

        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        loaded = slicer.vtkMRMLSegmentationNode()
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(folder / SEGMENTATION_FILE))
        if not storage.ReadData(loaded):
            raise RuntimeError(f"could not read the segmentation {folder / SEGMENTATION_FILE}")
        reference = self.request.input_volumes[0]
        target = self.request.output_segmentation
        if target is None:
            target = self.scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(f"{reference.GetName()} segmentation")
            )
        target.GetSegmentation().DeepCopy(loaded.GetSegmentation())
        target.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        if target.GetDisplayNode() is None:
            target.CreateDefaultDisplayNodes()
        return SegmentationOutputs(target, metrics)
