"""What every RegSeg panel's widget shares: Apply <-> Cancel, the background job and its poll timer, progress bar,
log and status, the parameter node bound to the GUI exactly once, and a reload that includes RegSegSlicerLib.

A panel's widget mixes :class:`JobPanelMixin` in before ``ScriptedLoadableModuleWidget`` (and has
``VTKObservationMixin``), calls :meth:`JobPanelMixin.setup_panel` in ``setup()`` once ``self.ui`` exists (its .ui has
``applyButton``, ``progressBar``, ``statusLabel`` and ``logTextEdit``), and supplies:

* :attr:`JobPanelMixin.job_class`: its :class:`~RegSegSlicerLib.jobs.BackgroundJob` subclass;
* :meth:`JobPanelMixin.create_request`: the job's request from the parameter node and the GUI;
* :meth:`JobPanelMixin.show_results`: puts a finished job's outputs in view and returns the status text;
* :meth:`JobPanelMixin.apply_readiness`: whether Apply can run, and its tool tip;
* ``initializeParameterNode()``: calls :meth:`JobPanelMixin.setParameterNode` with the module's parameter node;
* optionally :meth:`JobPanelMixin.prepare_dependencies`: installs what the job needs (its dialogs come without a
  busy cursor).

A timer tick never leaves the panel half-way: whatever raises in it (the job's poll, the import of the results,
the panel's own result handling), the job ends cancelled or failed with its temporary folder removed, the timer
stops, the button says Apply again and the error is shown.
"""

from __future__ import annotations

import logging
import shutil
import sys
from typing import Any

import qt
import slicer
import vtk
from slicer.i18n import tr as _

from RegSegSlicerLib import model_store
from RegSegSlicerLib.jobs import BackgroundJob, JobState

from RegSegLib.errors import RegSegError  # noqa: E402  (found by model_store's ensure_regseglib_importable)

POLL_INTERVAL_MS = 100
PARAMETER_NAME_PROPERTY = "SlicerParameterName"
"""The dynamic property naming a widget's parameter in the .ui (what ``parameterNodeWrapper.connectGui`` reads)."""
RELOADED_PACKAGES = ("RegSegSlicerLib",)
"""Packages a module reload imports afresh (Slicer's reload re-executes only the module file)."""
ERROR_PHASES = {
    JobState.STARTING: "while starting",
    JobState.RUNNING: "while running",
    JobState.IMPORTING: "while loading the results",
}


def parameter_widgets(ui) -> dict[str, Any]:
    """The widgets of ``ui`` (``slicer.util.childWidgetVariables``) bound to a parameter, by parameter name.

    The ones ``parameterNodeWrapper.connectGui`` binds: those with a ``SlicerParameterName`` property.
    """
    widgets = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_NAME_PROPERTY)
        if name:
            widgets[str(name)] = widget
    return widgets


def forget_modules(packages=RELOADED_PACKAGES) -> list[str]:
    """Drops ``packages`` and their submodules from ``sys.modules``, so that the next import reads them afresh.

    Returns:
        The names dropped.
    """
    names = [name for name in sys.modules if name.split(".", 1)[0] in packages]
    for name in names:
        del sys.modules[name]
    return names


def abandon_job(job: BackgroundJob, message: str) -> None:
    """Ends a job whose panel stops following it after an unexpected exception; its temporary folder is removed.

    A job that is starting or running is cancelled (its child killed); one stuck importing results fails with
    ``message``; any other stays as it is.
    """
    try:
        if job.state in (JobState.STARTING, JobState.RUNNING):
            job.cancel()
        elif job.state is JobState.IMPORTING:
            job.fail(message)
    finally:
        if job.work_dir is not None:
            shutil.rmtree(job.work_dir, ignore_errors=True)


def unexpected_error_message(exc: BaseException, state: JobState) -> str:
    """A readable line for an exception that escaped a job's step: where it happened, its kind and its text."""
    phase = ERROR_PHASES.get(state, "while showing the results")
    return f"unexpected error {phase} ({type(exc).__name__}: {exc}); the Python console has the details."


class JobPanelMixin:
    """A RegSeg panel's widget behaviour around one :class:`~RegSegSlicerLib.jobs.BackgroundJob` (see the module doc).

    Attributes:
        job: the running job (``None`` when idle).
        timer: the ``qt.QTimer`` polling it.
        ui: the panel's widgets (``slicer.util.childWidgetVariables``), set by the panel's ``setup()``.
    """

    job_class: type[BackgroundJob] = BackgroundJob
    """The panel's job: created with the request, the scene and the panel's callbacks on Apply."""

    job: BackgroundJob | None = None
    timer = None
    _parameterNode = None
    _gui_binding: tuple[Any, Any] | None = None  # (wrapper, tag) of the one live GUI connection

    # ------------------------------------------------------------------ what a panel supplies

    def create_request(self):
        """The job's request from the parameter node and the GUI.

        Raises:
            ValueError: a bad entry (shown as "<Job> could not start." and the message).
        """
        raise NotImplementedError

    def show_results(self, job: BackgroundJob) -> str:
        """Puts the outputs of a job that succeeded in view (``job.request``, ``job.outputs``); returns the status."""
        raise NotImplementedError

    def apply_readiness(self) -> tuple[bool, str]:
        """Whether Apply can run now, and the button's tool tip (what to select when it cannot)."""
        return True, ""

    def prepare_dependencies(self) -> None:
        """Installs what the job needs; may ask the user (it runs without a busy cursor). Raises to stop Apply."""

    # ------------------------------------------------------------------ setup and lifecycle

    def setup_panel(self) -> None:
        """The poll timer, Apply and the scene close observers; call in ``setup()`` once ``self.ui`` exists."""
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.on_poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.on_apply_button)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Idle")

    def cleanup(self) -> None:
        self.cancel_job()
        self._unbind_parameter_node()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._unbind_parameter_node()

    def onSceneStartClose(self, caller, event) -> None:
        self.cancel_job()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reloads the module and RegSegSlicerLib (Slicer's reload alone would keep the old RegSegSlicerLib)."""
        forget_modules()
        super().onReload()

    # ------------------------------------------------------------------ parameter node

    def setParameterNode(self, parameterNode) -> None:
        """Binds the GUI to ``parameterNode`` (a parameter node wrapper, or ``None``) and observes it.

        The GUI is bound to one node at a time, once: a wrapper of the node already bound keeps the existing
        binding (each binding refills the combo boxes), another node replaces it. The binding is made with
        ``connectParametersToGui``, whose tag is returned by every Slicer version (``connectGui`` returns ``None`` in
        5.6.2-5.8.1), and exactly that connection is removed later.
        """
        bound = self._gui_binding[0] if self._gui_binding is not None else None
        if parameterNode is not None and bound is not None and parameterNode.parameterNode is bound.parameterNode:
            return
        self._unbind_parameter_node()
        self._parameterNode = parameterNode
        if parameterNode is None:
            return
        tag = parameterNode.connectParametersToGui(parameter_widgets(self.ui))
        self._gui_binding = (parameterNode, tag)
        self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.update_apply_button)
        self.update_apply_button()

    def _unbind_parameter_node(self) -> None:
        """Removes the GUI connection and the observer :meth:`setParameterNode` made (once; nothing when unbound)."""
        if self._gui_binding is None:
            return
        wrapper, tag = self._gui_binding
        self._gui_binding = None
        wrapper.disconnectGui(tag)
        self.removeObserver(wrapper, vtk.vtkCommand.ModifiedEvent, self.update_apply_button)

    # ------------------------------------------------------------------ Apply, Cancel and the job

    def _what(self) -> str:
        return self.job_class.what

    def update_apply_button(self, caller=None, event=None) -> None:
        if self.job is not None:
            self.ui.applyButton.toolTip = _("Cancel the running {what}").format(what=self._what())
            self.ui.applyButton.enabled = True
            return
        ready, tool_tip = self.apply_readiness()
        self.ui.applyButton.toolTip = tool_tip
        self.ui.applyButton.enabled = ready

    def on_apply_button(self) -> None:
        """Apply: starts the job (the button turns into Cancel); Cancel: cancels it."""
        if self.job is not None:
            self.cancel_job()
            return
        self.ui.logTextEdit.clear()
        message = _("{what} could not start.").format(what=self._what().capitalize())
        with slicer.util.tryWithErrorDisplay(message):
            self.prepare_dependencies()
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            job = self.job_class(
                slicer.mrmlScene,
                self.create_request(),
                on_progress=self.on_progress,
                on_log=self.on_log,
                on_state=self.on_state,
                work_root=slicer.app.temporaryPath,
            )
            try:
                job.start()
            except Exception:
                abandon_job(job, _("it could not start"))
                raise
            self.job = job
            self.ui.applyButton.text = _("Cancel")
            self.timer.start()
        self.update_apply_button()

    def on_poll(self) -> None:
        """A timer tick: follows the job; once it ended, shows its results or its failure."""
        job = self.job
        if job is None:
            self.timer.stop()
            return
        try:
            if not job.poll():
                return
            self._release_job()
            if job.state is JobState.FAILED:
                slicer.util.errorDisplay(_("{what} failed: {message}").format(what=self._what().capitalize(), message=job.error))
            elif job.outputs is not None:
                self.ui.statusLabel.text = self.show_results(job)
        except Exception as exc:
            self._abort(job, exc)

    def _release_job(self) -> None:
        """The panel lets go of its job: the timer stops, the button says Apply."""
        self.timer.stop()
        self.job = None
        self.ui.applyButton.text = _("Apply")
        self.update_apply_button()

    def _abort(self, job: BackgroundJob, exc: Exception) -> None:
        """The catch-all of a timer tick: the job ends, the panel is idle again and the error is shown."""
        logging.error("RegSeg: %s stopped by an unexpected error", self._what(), exc_info=exc)
        message = unexpected_error_message(exc, job.state)
        self.timer.stop()
        self.job = None
        try:
            abandon_job(job, message)
        except Exception:
            logging.exception("RegSeg: the %s could not be ended cleanly", self._what())
        self.ui.applyButton.text = _("Apply")
        self.ui.statusLabel.text = _("Failed")
        if job.error != message:  # the job logged it when it failed
            self.on_log(f"failed: {message}")
        try:
            self.update_apply_button()
        finally:
            slicer.util.errorDisplay(_("{what} failed: {message}").format(what=self._what().capitalize(), message=message))

    def cancel_job(self) -> None:
        """Cancels the running job (its child is killed, the scene is left as it was)."""
        if self.timer is not None:
            self.timer.stop()
        if self.job is not None:
            job, self.job = self.job, None
            job.cancel()
            self.ui.applyButton.text = _("Apply")
            self.update_apply_button()

    # ------------------------------------------------------------------ the job's callbacks

    def on_progress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * fraction)))
        self.ui.statusLabel.text = message

    def on_log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def on_state(self, state: JobState) -> None:
        self.ui.statusLabel.text = state.value.capitalize()
        if state is JobState.STARTING:
            self.ui.progressBar.setValue(0)


class ModelSectionMixin:
    """A panel's "Models" section: the store's models of the panel's tasks, their licence and metrics, file import.

    The panel's .ui has ``modelComboBox``, ``modelInfoTextEdit`` and ``importModelButton``; the widget sets
    :attr:`model_tasks` and calls :meth:`setup_model_section` in ``setup()``.
    """

    model_tasks: tuple[str, ...] = ()
    """The tasks whose models the panel can use (``affine``, ``elastic``, ``segmentation``, ...)."""

    _model_rows: list = []

    def setup_model_section(self) -> None:
        """Connects the section's widgets and lists the models."""
        self._model_rows = []
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.refreshModels()

    def refreshModels(self) -> None:
        """Lists the installed models of :attr:`model_tasks` (one disabled line when there are none)."""
        try:
            rows = [row for task in self.model_tasks for row in model_store.model_rows(task)]
            empty = _("No trained models installed (RegSeg ships none yet)")
        except RegSegError as error:
            rows, empty = [], _("Model store unreadable: {message}").format(message=error)
        self.ui.modelComboBox.clear()
        self._model_rows = rows
        for row in rows:
            self.ui.modelComboBox.addItem(row.label)
        if not rows:
            self.ui.modelComboBox.addItem(empty)
        self.ui.modelComboBox.enabled = bool(rows)

    def onModelSelected(self, index: int) -> None:
        """Shows the chosen model's licence, training data and metrics."""
        if not 0 <= index < len(self._model_rows):
            self.ui.modelInfoTextEdit.setPlainText("")
            return
        try:
            self.ui.modelInfoTextEdit.setPlainText(model_store.model_description(self._model_rows[index].name))
        except RegSegError as error:
            self.ui.modelInfoTextEdit.setPlainText(str(error))

    def onImportModel(self) -> None:
        """Installs a model file the user picks (offline sites), then lists it."""
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Import model file"), "", model_store.IMPORT_FILTER)
        if not path:
            return
        try:
            row = model_store.import_model(path, self.model_tasks)
        except RegSegError as error:
            slicer.util.errorDisplay(_("Could not import the model: {message}").format(message=error))
            return
        self.refreshModels()
        self.ui.modelComboBox.currentIndex = [r.name for r in self._model_rows].index(row.name)
