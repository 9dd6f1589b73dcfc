"""RegSeg Registration: affine and elastic (deformable) registration of two volumes with RegSegLib.

The registration runs in a child process (``PythonSlicer -m RegSegLib.cli register ...``) so that Slicer stays
responsive; its progress lines drive the progress bar, Apply turns into Cancel, and Cancel kills the process
tree. The result maps fixed points to moving points (Slicer's "transform from parent"): put the moving volume
under the output transform and it lies on the fixed volume.
"""

import logging
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from RegSegSlicerLib.paths import ensure_regseglib_importable

ensure_regseglib_importable()

from RegSegLib.errors import RegSegError  # noqa: E402
from RegSegLib.registration import settings  # noqa: E402  (torch-free: the methods' names and rules)
from RegSegSlicerLib import nodes  # noqa: E402
from RegSegSlicerLib.dependencies import DependencyLogicMixin, tests_skip_reason  # noqa: E402
from RegSegSlicerLib.jobs import JobState  # noqa: E402
from RegSegSlicerLib.panel import JobPanelMixin, ModelSectionMixin  # noqa: E402
from RegSegSlicerLib.registration import (  # noqa: E402
    RegistrationJob,
    RegistrationOutputs,
    RegistrationRequest,
    parse_number_list,
)

MAX_REGULARISATION = 1000.0
MAX_SPACING_MM = 50.0
NO_SEGMENTER = "None (the images drive the registration)"
"""The first entry of the "Segment ... with" choices."""


#
# RegSegRegistration
#


class RegSegRegistration(ScriptedLoadableModule):
    """Module description (title, category, help) read by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RegSeg Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["RegSeg developers"]
        self.parent.helpText = _(
            "Affine and elastic (deformable) registration of a moving volume onto a fixed volume with RegSegLib "
            "(PyTorch, CPU or CUDA). Optional masks (label maps or segmentations), an initial transform, and "
            "label maps or segmentations for Dice. The output transform maps fixed points to moving points: put "
            "the moving volume under it to align it with the fixed volume. "
            "See the README section 'Using RegSeg in Slicer'."
        )
        self.parent.acknowledgementText = _(
            "RegSeg builds on PyTorch, SimpleITK, nibabel and 3D Slicer's scripted module template."
        )
        slicer.app.connect("startupCompleted()", observeSceneImports)


def observeSceneImports() -> None:
    """Keeps RegSeg's grid transforms interpolating linearly after a scene is loaded.

    Transform files do not store the interpolation, so a saved scene reads RegSeg's grids back as cubic;
    after every scene import the grids of the transform nodes RegSeg marked are made linear again. Added once
    Slicer has started, so scenes loaded before the module's panel is first opened are covered too.
    """
    slicer.mrmlScene.AddObserver(
        slicer.mrmlScene.EndImportEvent, lambda scene, event: nodes.restore_linear_grid_interpolation(scene)
    )


#
# RegSegRegistrationParameterNode
#


@parameterNodeWrapper
class RegSegRegistrationParameterNode:
    """The module's settings, bound to the .ui widgets through their ``SlicerParameterName`` property.

    Advanced settings keep the engine's default when left empty (comma lists) or at 0 (regularisation, spacing).
    """

    fixed_volume: vtkMRMLScalarVolumeNode
    moving_volume: vtkMRMLScalarVolumeNode
    method: Annotated[str, Choice(list(settings.ITERATIVE_METHODS))] = "affine"
    transform_family: Annotated[str, Choice(list(settings.FAMILIES))] = "affine"
    fixed_mask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    moving_mask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    initial_transform: Optional[vtkMRMLTransformNode]
    fixed_labels: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    moving_labels: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    metric: Annotated[str, Choice(list(settings.METRIC_CHOICES))] = settings.AUTO_METRIC
    diffeomorphic: bool = False
    device: Annotated[str, Choice(list(settings.DEVICES))] = "auto"
    levels: str = ""
    iterations: str = ""
    deformable_iterations: str = ""
    regularisation: Annotated[float, WithinRange(0.0, MAX_REGULARISATION)] = 0.0
    preset: Annotated[str, Choice(list(settings.PRESETS))] = "default"
    spacing_mm: Annotated[float, WithinRange(0.0, MAX_SPACING_MM)] = 0.0
    output_transform: Optional[vtkMRMLTransformNode]
    output_volume: Optional[vtkMRMLScalarVolumeNode]
    output_table: Optional[vtkMRMLTableNode]


#
# RegSegRegistrationWidget
#


class RegSegRegistrationWidget(JobPanelMixin, ModelSectionMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wires the .ui to the parameter node and the Logic; Apply, Cancel, progress and the job's life are
    :class:`RegSegSlicerLib.panel.JobPanelMixin`'s."""

    job_class = RegistrationJob
    model_tasks = ("affine", "elastic")

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RegSegRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RegSegRegistrationLogic()
        self.setup_panel()
        self.ui.fixedMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_segment_selectors)
        self.ui.movingMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_segment_selectors)
        self.setup_model_section()
        self.refresh_segmenters()
        self.initializeParameterNode()
        self.update_segment_selectors()

    def refresh_segmenters(self) -> None:
        """Lists "None" and the store's segmentation models in the two "Segment ... with" choices (Advanced)."""
        from RegSegSlicerLib import model_store

        try:
            names = [row.name for row in model_store.model_rows("segmentation")]
        except RegSegError:
            names = []
        for combo in (self.ui.fixedSegmenterComboBox, self.ui.movingSegmenterComboBox):
            combo.clear()
            combo.addItem(NO_SEGMENTER)
            for name in names:
                combo.addItem(name)

    def segment_with(self) -> Optional[tuple[str, str]]:
        """The two models chosen for segmentation-guided registration, ``None`` when neither is.

        Raises:
            ValueError: a model is chosen for one volume only.
        """
        chosen = [combo.currentText for combo in (self.ui.fixedSegmenterComboBox, self.ui.movingSegmenterComboBox)]
        given = [name for name in chosen if name and name != NO_SEGMENTER]
        if not given:
            return None
        if len(given) != 2:
            raise ValueError(_("Segmentation-guided registration needs a model for the fixed and for the moving volume."))
        return (given[0], given[1])

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixed_volume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            volumes = [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")]
            if len(volumes) >= 2:
                self._parameterNode.fixed_volume = volumes[0]
                self._parameterNode.moving_volume = volumes[1]

    def apply_readiness(self) -> tuple[bool, str]:
        if self._parameterNode and self._parameterNode.fixed_volume and self._parameterNode.moving_volume:
            return True, _("Register the moving volume to the fixed volume")
        return False, _("Select fixed and moving volumes")

    def update_segment_selectors(self, node=None) -> None:
        for selector, segments, label in (
            (self.ui.fixedMaskSelector, self.ui.fixedMaskSegmentSelector, self.ui.fixedMaskSegmentSelectorLabel),
            (self.ui.movingMaskSelector, self.ui.movingMaskSegmentSelector, self.ui.movingMaskSegmentSelectorLabel),
        ):
            current = selector.currentNode()
            is_segmentation = current is not None and current.IsA("vtkMRMLSegmentationNode")
            segments.setCurrentNode(current if is_segmentation else None)
            segments.visible = is_segmentation
            label.visible = is_segmentation

    def prepare_dependencies(self) -> None:
        self.logic.setup_dependencies(interactive=True)

    def create_request(self) -> RegistrationRequest:
        return self.logic.request_from_parameters(
            self._parameterNode,
            fixed_mask_segments=list(self.ui.fixedMaskSegmentSelector.selectedSegmentIDs()),
            moving_mask_segments=list(self.ui.movingMaskSegmentSelector.selectedSegmentIDs()),
            segment_with=self.segment_with(),
        )

    def show_results(self, job: RegistrationJob) -> str:
        """Shows the warped volume over the fixed one, or, without one, puts the moving volume under the result.

        A transform node the job created stays out of the output selector, so that the next Apply creates a new
        one (an affine result is a linear node, which a later elastic result could not go into).
        """
        request, outputs = job.request, job.outputs
        transform_name = outputs.transform_node.GetName()
        self.on_log(_("Result transform: {name}").format(name=transform_name))
        if outputs.table_node is not None:
            self._parameterNode.output_table = outputs.table_node
        shown = outputs.volume_node
        if shown is None:
            shown = request.moving_volume
            shown.SetAndObserveTransformNodeID(outputs.transform_node.GetID())
        slicer.util.setSliceViewerLayers(background=request.fixed_volume, foreground=shown, foregroundOpacity=0.5)
        for warning in outputs.warnings:
            self.on_log(_("Warning: {warning}").format(warning=warning))
        if outputs.warnings:
            return _("Done, with a warning: {warning}").format(warning=outputs.warnings[0])
        if outputs.volume_node is not None:
            return _("Done")
        return _("Done: '{moving}' is now under the transform '{transform}'").format(
            moving=request.moving_volume.GetName(), transform=transform_name
        )


#
# RegSegRegistrationLogic
#


class RegSegRegistrationLogic(DependencyLogicMixin, ScriptedLoadableModuleLogic):
    """Registration without the GUI: the panel, batch scripts and tests use it alike."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return RegSegRegistrationParameterNode(super().getParameterNode())

    def request_from_parameters(self, parameters, fixed_mask_segments=None, moving_mask_segments=None, segment_with=None) -> RegistrationRequest:
        """A :class:`RegistrationRequest` from the parameter node (and the segments and segmentation models chosen in
        the panel).

        Raises:
            ValueError: an advanced comma list that is not numbers (e.g. ``"4,x"``).
        """
        return RegistrationRequest(
            fixed_volume=parameters.fixed_volume,
            moving_volume=parameters.moving_volume,
            method=parameters.method,
            transform_family=parameters.transform_family,
            metric=parameters.metric,
            fixed_mask=parameters.fixed_mask,
            fixed_mask_segments=fixed_mask_segments or None,
            moving_mask=parameters.moving_mask,
            moving_mask_segments=moving_mask_segments or None,
            initial_transform=parameters.initial_transform,
            segment_with=segment_with,
            fixed_labels=parameters.fixed_labels,
            moving_labels=parameters.moving_labels,
            diffeomorphic=parameters.diffeomorphic,
            device=parameters.device,
            levels=parse_number_list(parameters.levels, float, "pyramid levels"),
            iterations=parse_number_list(parameters.iterations, int, "affine iterations"),
            deformable_iterations=parse_number_list(parameters.deformable_iterations, int, "deformable iterations"),
            regularisation=parameters.regularisation or None,
            preset=parameters.preset,
            spacing_mm=parameters.spacing_mm or None,
            output_transform=parameters.output_transform,
            output_volume=parameters.output_volume,
            output_table=parameters.output_table,
        )

    def start_registration(
        self,
        request: RegistrationRequest,
        scene=None,
        on_progress=None,
        on_log=None,
        on_state=None,
        python=None,
        env=None,
        work_root=None,
        result_dir=None,
    ) -> RegistrationJob:
        """Exports the inputs and starts the child process; poll the returned job until it finishes.

        Raises:
            ValueError: an impossible request (nothing started).
            RegSegSlicerLib.registration.RegistrationError: the job could not start (a ``RuntimeError``).
        """
        job = RegistrationJob(
            scene if scene is not None else slicer.mrmlScene,
            request,
            python=python,
            env=env,
            on_progress=on_progress,
            on_log=on_log if on_log is not None else logging.info,
            on_state=on_state,
            work_root=work_root,
            result_dir=result_dir,
        )
        job.start()
        return job

    def register(
        self,
        fixed_volume,
        moving_volume,
        scene=None,
        on_progress=None,
        on_log=None,
        python=None,
        env=None,
        result_dir=None,
        **options,
    ) -> RegistrationOutputs:
        """Registers and waits for the result (batch use).

        Args:
            fixed_volume: the fixed volume node.
            moving_volume: the moving volume node.
            scene: MRML scene (default ``slicer.mrmlScene``).
            on_progress: ``(fraction, message)`` callback.
            on_log: log line callback (default: ``logging.info``).
            python: interpreter running RegSegLib (default: PythonSlicer in Slicer).
            env: child environment.
            result_dir: keep RegSeg's result folder (transform files, warped volume, metrics.json, qc.png) here.
            **options: further :class:`RegistrationRequest` fields (method, transform_family, output_volume, ...).

        Raises:
            ValueError: an impossible request.
            RegSegSlicerLib.registration.RegistrationError: the registration failed (the child's message).
        """
        request = RegistrationRequest(fixed_volume=fixed_volume, moving_volume=moving_volume, **options)
        job = self.start_registration(
            request, scene=scene, on_progress=on_progress, on_log=on_log, python=python, env=env, result_dir=result_dir
        )
        return job.wait()


#
# RegSegRegistrationTest
#


class RegSegRegistrationTest(ScriptedLoadableModuleTest):
    """In-Slicer tests (run by Slicer's ctest): real scene, real child process.

    They need torch and RegSegLib's packages, which the extension build machines lack: there every test is
    skipped with the reason (and nothing is downloaded), as SlicerTotalSegmentator and SlicerMONAIAuto3DSeg do.
    """

    def skip_reason(self) -> Optional[str]:
        return tests_skip_reason("RegSeg registration tests", "RegSeg Registration")

    def setUp(self):
        reason = self.skip_reason()
        if reason:
            self.skipTest(reason)  # ctest runs each test_ method through unittest, which reports the skip
        slicer.mrmlScene.Clear()

    def runTest(self):
        reason = self.skip_reason()
        if reason:  # "Reload and Test" calls runTest directly: a message, not a failure
            logging.warning(reason)
            self.delayDisplay(reason)
            return
        for test in (
            self.test_affine_recovers_a_known_shift,
            self.test_cancel_leaves_the_scene_as_it_was,
            self.test_failure_reports_the_child_message,
        ):
            self.setUp()
            test()

    def fixed_volume(self):
        """The fixed volume of the tests: Slicer's MRHead sample."""
        import SampleData

        return SampleData.downloadSample("MRHead")

    def _pair(self):
        """The fixed volume and a copy of it moved 6 mm along R (geometry only) as the moving one."""
        fixed = self.fixed_volume()
        moving = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{fixed.GetName()} shifted")
        matrix = vtk.vtkMatrix4x4()
        fixed.GetIJKToRASMatrix(matrix)
        matrix.SetElement(0, 3, matrix.GetElement(0, 3) + 6.0)
        moving.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(moving, slicer.util.arrayFromVolume(fixed).copy())
        return fixed, moving

    def test_affine_recovers_a_known_shift(self):
        self.delayDisplay("Affine registration of a shifted copy")
        fixed, moving = self._pair()
        outputs = RegSegRegistrationLogic().register(fixed, moving, method="affine", transform_family="rigid")
        matrix = vtk.vtkMatrix4x4()
        outputs.transform_node.GetMatrixTransformFromParent(matrix)
        # fixed -> moving: content of the moving volume sits 6 mm further along R
        self.assertAlmostEqual(matrix.GetElement(0, 3), 6.0, delta=0.5)
        self.delayDisplay("Test passed")

    def test_cancel_leaves_the_scene_as_it_was(self):
        self.delayDisplay("Cancel a running registration")
        fixed, moving = self._pair()
        count = slicer.mrmlScene.GetNumberOfNodes()
        progress = []
        job = RegSegRegistrationLogic().start_registration(
            RegistrationRequest(fixed, moving, method="deformable"), on_progress=lambda f, m: progress.append(f)
        )
        while not progress and job.process.poll() is None:
            qt.QThread.msleep(50)
        job.cancel()
        self.assertIs(job.state, JobState.CANCELLED)
        self.assertIsNotNone(job.process.process.poll())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        self.delayDisplay("Test passed")

    def test_failure_reports_the_child_message(self):
        self.delayDisplay("A constant moving volume fails with RegSeg's message")
        fixed, moving = self._pair()
        slicer.util.arrayFromVolume(moving)[:] = 0
        slicer.util.arrayFromVolumeModified(moving)
        with self.assertRaises(RuntimeError) as raised:
            RegSegRegistrationLogic().register(fixed, moving)
        self.assertIn(f"moving volume '{moving.GetName()}'", str(raised.exception))
        self.delayDisplay("Test passed")
