"""RegSeg Segmentation: segments a volume with a trained RegSeg model (e.g. the prostate gland in MR or ultrasound).

The segmentation runs in a child process (``PythonSlicer -m RegSegLib.cli segment ...``) so that Slicer stays
responsive; its progress lines drive the progress bar, Apply turns into Cancel, and Cancel kills the process tree.
The result is a segmentation node on the input volume's grid with the model's segment names, colours and
terminology.
"""

import logging
from typing import Annotated, Optional

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from RegSegSlicerLib.paths import ensure_regseglib_importable

ensure_regseglib_importable()

from RegSegSlicerLib.dependencies import DependencyLogicMixin, tests_skip_reason  # noqa: E402
from RegSegSlicerLib.panel import JobPanelMixin, ModelSectionMixin  # noqa: E402
from RegSegSlicerLib.segmentation import DEVICES, SegmentationJob, SegmentationOutputs, SegmentationRequest  # noqa: E402

#
# RegSegSegmentation
#


class RegSegSegmentation(ScriptedLoadableModule):
    """Module description (title, category, help) read by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RegSeg Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["RegSeg developers"]
        self.parent.helpText = _(
            "Segments a volume with a trained RegSeg model (nnU-Net-style U-Net, PyTorch, CPU or CUDA): the prostate "
            "gland in T2 MR or transrectal ultrasound with the shipped models, or a model of your own. Models that "
            "take several sequences resample them onto the input volume in physical space. "
            "See the README section 'Segmentation'."
        )
        self.parent.acknowledgementText = _("RegSeg builds on PyTorch, MONAI and 3D Slicer's scripted module template.")


#
# RegSegSegmentationParameterNode
#


@parameterNodeWrapper
class RegSegSegmentationParameterNode:
    """The module's settings, bound to the .ui widgets through their ``SlicerParameterName`` property."""

    input_volume: vtkMRMLScalarVolumeNode
    second_volume: Optional[vtkMRMLScalarVolumeNode]
    third_volume: Optional[vtkMRMLScalarVolumeNode]
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    mirroring: bool = True
    largest_component: bool = False
    output_segmentation: Optional[vtkMRMLSegmentationNode]


#
# RegSegSegmentationWidget
#


class RegSegSegmentationWidget(JobPanelMixin, ModelSectionMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wires the .ui to the parameter node and the Logic; Apply, Cancel, progress and the job's life are
    :class:`RegSegSlicerLib.panel.JobPanelMixin`'s, the model list :class:`~RegSegSlicerLib.panel.ModelSectionMixin`'s."""

    job_class = SegmentationJob
    model_tasks = ("segmentation",)

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RegSegSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RegSegSegmentationLogic()
        self.setup_panel()
        self.setup_model_section()
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.input_volume:
            volumes = [v for v in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if not v.IsA("vtkMRMLLabelMapVolumeNode")]
            if volumes:
                self._parameterNode.input_volume = volumes[0]

    def selected_model(self) -> Optional[str]:
        """The name of the model chosen in the Model section, ``None`` when the store has none."""
        index = self.ui.modelComboBox.currentIndex
        rows = getattr(self, "_model_rows", [])
        return rows[index].name if 0 <= index < len(rows) else None

    def apply_readiness(self) -> tuple[bool, str]:
        if not (self._parameterNode and self._parameterNode.input_volume):
            return False, _("Select the volume to segment")
        if self.selected_model() is None:
            return False, _("Install or import a segmentation model (Model section)")
        return True, _("Segment the input volume")

    def prepare_dependencies(self) -> None:
        self.logic.setup_dependencies(interactive=True)

    def create_request(self) -> SegmentationRequest:
        return self.logic.request_from_parameters(self._parameterNode, self.selected_model())

    def show_results(self, job: SegmentationJob) -> str:
        """Selects the segmentation as the output and shows it over the input volume; reports the segments' volumes."""
        outputs = job.outputs
        self._parameterNode.output_segmentation = outputs.segmentation_node
        slicer.util.setSliceViewerLayers(background=job.request.input_volumes[0])
        sizes = ", ".join(f"{item['name']} {item['volume_ml']:.1f} ml" for item in outputs.metrics.get("segments", []))
        self.on_log(_("Segments: {sizes}").format(sizes=sizes))
        empty = [item["name"] for item in outputs.metrics.get("segments", []) if item["volume_ml"] == 0.0]
        if empty:
            return _("Done, but '{name}' is empty: check the volume and the model").format(name=empty[0])
        return _("Done: {sizes}").format(sizes=sizes)


#
# RegSegSegmentationLogic
#


class RegSegSegmentationLogic(DependencyLogicMixin, ScriptedLoadableModuleLogic):
    """Segmentation without the GUI: the panel, batch scripts and tests use it alike."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return RegSegSegmentationParameterNode(super().getParameterNode())

    @staticmethod
    def request_from_parameters(parameters, model: Optional[str]) -> SegmentationRequest:
        """A :class:`SegmentationRequest` from the parameter node and the chosen model (volumes in channel order)."""
        volumes = [v for v in (parameters.input_volume, parameters.second_volume, parameters.third_volume) if v is not None]
        return SegmentationRequest(
            input_volumes=volumes,
            model=model or "",
            device=parameters.device,
            mirroring=parameters.mirroring,
            largest_component=parameters.largest_component,
            output_segmentation=parameters.output_segmentation,
        )

    def start_segmentation(
        self, request: SegmentationRequest, scene=None, on_progress=None, on_log=None, on_state=None, python=None, env=None,
        work_root=None, result_dir=None,
    ) -> SegmentationJob:
        """Exports the inputs and starts the child process; poll the returned job until it finishes.

        Raises:
            ValueError: an impossible request (nothing started).
            RegSegSlicerLib.segmentation.SegmentationError: the job could not start (a ``RuntimeError``).
        """
        job = SegmentationJob(
            scene if scene is not None else slicer.mrmlScene, request, python=python, env=env, on_progress=on_progress,
            on_log=on_log if on_log is not None else logging.info, on_state=on_state, work_root=work_root, result_dir=result_dir,
        )
        job.start()
        return job

    def segment(self, volumes, model: str, scene=None, on_progress=None, on_log=None, python=None, env=None, result_dir=None, **options) -> SegmentationOutputs:
        """Segments and waits for the result (batch use).

        Args:
            volumes: the input volume node, or a list of them (one per channel the model takes).
            model: a model-store name (``regseg models list --task segmentation``) or a ``model.pt`` file.
            scene: MRML scene (default ``slicer.mrmlScene``).
            on_progress: ``(fraction, message)`` callback.
            on_log: log line callback (default: ``logging.info``).
            python: interpreter running RegSegLib (default: PythonSlicer in Slicer).
            env: child environment.
            result_dir: keep RegSeg's result folder (labels.nii.gz, segmentation.seg.nrrd, metrics.json) here.
            **options: further :class:`SegmentationRequest` fields (device, mirroring, output_segmentation, ...).

        Raises:
            ValueError: an impossible request.
            RegSegSlicerLib.segmentation.SegmentationError: the segmentation failed (the child's message).
        """
        inputs = list(volumes) if isinstance(volumes, (list, tuple)) else [volumes]
        job = self.start_segmentation(
            SegmentationRequest(input_volumes=inputs, model=model, **options), scene=scene, on_progress=on_progress,
            on_log=on_log, python=python, env=env, result_dir=result_dir,
        )
        return job.wait()


#
# RegSegSegmentationTest
#


class RegSegSegmentationTest(ScriptedLoadableModuleTest):
    """In-Slicer test (run by Slicer's ctest): real scene, real child process, the shipped prostate MR model.

    It needs torch and RegSegLib's packages, which the extension build machines lack: there it is skipped with the
    reason (and nothing is downloaded).
    """

    def skip_reason(self) -> Optional[str]:
        return tests_skip_reason("RegSeg segmentation tests", "a RegSeg module")

    def setUp(self):
        reason = self.skip_reason()
        if reason:
            self.skipTest(reason)
        slicer.mrmlScene.Clear()

    def runTest(self):
        reason = self.skip_reason()
        if reason:
            logging.warning(reason)
            self.delayDisplay(reason)
            return
        self.setUp()
        self.test_the_gland_model_names_its_segment()

    def test_the_gland_model_names_its_segment(self):
        self.delayDisplay("Segment a synthetic volume with the shipped prostate MR model")
        import numpy as np

        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "blob")
        k, j, i = np.meshgrid(np.arange(60), np.arange(64), np.arange(64), indexing="ij")
        inside = ((k - 30) / 18.0) ** 2 + ((j - 32) / 20.0) ** 2 + ((i - 32) / 20.0) ** 2 < 1
        slicer.util.updateVolumeFromArray(volume, np.where(inside, 60.0, 160.0).astype(np.float32))
        volume.SetSpacing(0.4, 0.4, 0.4)
        outputs = RegSegSegmentationLogic().segment(volume, "regseg-prostate-gland-mr", device="cpu", mirroring=False)
        segmentation = outputs.segmentation_node.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        self.assertEqual(segmentation.GetNthSegment(0).GetName(), "prostate")
        self.delayDisplay("Test passed")
