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

from RegSegLib.registration import settings  # noqa: E402  (torch-free: the methods' names and rules)
from RegSegSlicerLib.jobs import JobState  # noqa: E402
from RegSegSlicerLib.registration import (  # noqa: E402
    RegistrationJob,
    RegistrationOutputs,
    RegistrationRequest,
    parse_number_list,
)

POLL_INTERVAL_MS = 100
DEFAULT_METRIC = "default"
MAX_REGULARISATION = 1000.0
MAX_SPACING_MM = 50.0


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
    method: Annotated[str, Choice(list(settings.METHODS))] = "affine"
    transform_family: Annotated[str, Choice(list(settings.FAMILIES))] = "affine"
    fixed_mask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    moving_mask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    initial_transform: Optional[vtkMRMLTransformNode]
    fixed_labels: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    moving_labels: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    metric: Annotated[str, Choice([DEFAULT_METRIC, *settings.METRICS])] = DEFAULT_METRIC
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


class RegSegRegistrationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wires the .ui to the parameter node and the Logic, and nothing else."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self.timer = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RegSegRegistration.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RegSegRegistrationLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.on_poll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.on_apply_button)
        self.ui.fixedMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_segment_selectors)
        self.ui.movingMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.update_segment_selectors)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Idle")

        self.initializeParameterNode()
        self.update_segment_selectors()

    def cleanup(self) -> None:
        self.cancel_job()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def _disconnectParameterNode(self) -> None:
        """Unbinds the GUI from the parameter node and stops observing it (once, whichever of exit/switch comes first)."""
        if not self._parameterNode:
            return
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply):
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancel_job()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixed_volume:
            volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            volumes = [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode")]
            if len(volumes) >= 2:
                self._parameterNode.fixed_volume = volumes[0]
                self._parameterNode.moving_volume = volumes[1]

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self.job is not None:
            self.ui.applyButton.toolTip = _("Cancel the running registration")
            self.ui.applyButton.enabled = True
        elif self._parameterNode and self._parameterNode.fixed_volume and self._parameterNode.moving_volume:
            self.ui.applyButton.toolTip = _("Register the moving volume to the fixed volume")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select fixed and moving volumes")
            self.ui.applyButton.enabled = False

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

    def on_apply_button(self) -> None:
        if self.job is not None:
            self.cancel_job()
            return
        self.ui.logTextEdit.clear()
        with slicer.util.tryWithErrorDisplay(_("Registration could not start."), waitCursor=True):
            self.logic.setup_dependencies(interactive=True)
            request = self.logic.request_from_parameters(
                self._parameterNode,
                fixed_mask_segments=list(self.ui.fixedMaskSegmentSelector.selectedSegmentIDs()),
                moving_mask_segments=list(self.ui.movingMaskSegmentSelector.selectedSegmentIDs()),
            )
            self.job = self.logic.start_registration(
                request,
                on_progress=self.on_progress,
                on_log=self.on_log,
                on_state=self.on_state,
                work_root=slicer.app.temporaryPath,
            )
            self.ui.applyButton.text = _("Cancel")
            self.timer.start()
        self._checkCanApply()

    def on_poll(self) -> None:
        job = self.job
        if job is None or not job.poll():
            return
        self.timer.stop()
        self.job = None
        self.ui.applyButton.text = _("Apply")
        self._checkCanApply()
        if job.state is JobState.FAILED:
            slicer.util.errorDisplay(_("Registration failed: {message}").format(message=job.error))
        elif job.outputs is not None:
            self.show_results(job.request, job.outputs)
            self.ui.statusLabel.text = _("Done")

    def show_results(self, request: RegistrationRequest, outputs: RegistrationOutputs) -> None:
        """Shows the warped volume over the fixed one and keeps the Dice table selected.

        A transform node the job created stays out of the output selector, so that the next Apply creates a new
        one (an affine result is a linear node, which a later elastic result could not go into).
        """
        self.on_log(_("Result transform: {name}").format(name=outputs.transform_node.GetName()))
        if outputs.volume_node is not None:
            slicer.util.setSliceViewerLayers(
                background=request.fixed_volume, foreground=outputs.volume_node, foregroundOpacity=0.5
            )
        if outputs.table_node is not None:
            self._parameterNode.output_table = outputs.table_node

    def cancel_job(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        if self.job is not None:
            job, self.job = self.job, None
            job.cancel()
            self.ui.applyButton.text = _("Apply")
            self._checkCanApply()

    def on_progress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        self.ui.statusLabel.text = message

    def on_log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def on_state(self, state: JobState) -> None:
        self.ui.statusLabel.text = state.value.capitalize()
        if state is JobState.STARTING:
            self.ui.progressBar.setValue(0)


#
# RegSegRegistrationLogic
#


class RegSegRegistrationLogic(ScriptedLoadableModuleLogic):
    """Registration without the GUI: the panel, batch scripts and tests use it alike."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.dependencies_ready = False

    def getParameterNode(self):
        return RegSegRegistrationParameterNode(super().getParameterNode())

    def setup_dependencies(self, interactive: bool = True) -> None:
        """Installs torch (PyTorch extension) and the Python packages when missing, once per session.

        Raises:
            RegSegSlicerLib.dependencies.DependencyError: a dependency is still missing.
        """
        if self.dependencies_ready:
            return
        from RegSegSlicerLib.dependencies import ensure_dependencies

        ensure_dependencies(interactive=interactive)
        self.dependencies_ready = True

    def request_from_parameters(self, parameters, fixed_mask_segments=None, moving_mask_segments=None) -> RegistrationRequest:
        """A :class:`RegistrationRequest` from the parameter node (and the segments chosen in the panel).

        Raises:
            ValueError: an advanced comma list that is not numbers (e.g. ``"4,x"``).
        """
        return RegistrationRequest(
            fixed_volume=parameters.fixed_volume,
            moving_volume=parameters.moving_volume,
            method=parameters.method,
            transform_family=parameters.transform_family,
            metric=None if parameters.metric == DEFAULT_METRIC else parameters.metric,
            fixed_mask=parameters.fixed_mask,
            fixed_mask_segments=fixed_mask_segments or None,
            moving_mask=parameters.moving_mask,
            moving_mask_segments=moving_mask_segments or None,
            initial_transform=parameters.initial_transform,
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
    """In-Slicer tests (run by Slicer's ctest): real scene, real child process."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_affine_recovers_a_known_shift()
        self.setUp()
        self.test_cancel_leaves_the_scene_as_it_was()
        self.setUp()
        self.test_failure_reports_the_child_message()

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
