"""RegSegSlicerLib: the Slicer-side glue of the RegSeg modules.

Nothing here contains an algorithm; the work is done by RegSegLib in a child process.

* :mod:`RegSegSlicerLib.process`: the background job runner (``python -m RegSegLib.cli ...``) with
  ``PROGRESS`` parsing, a log, cancellation of the whole process tree and readable failures. Qt-free:
  a ``qt.QTimer`` drives :meth:`~RegSegSlicerLib.process.ChildProcess.poll` in the GUI, a plain loop in
  batch use and tests.
* :mod:`RegSegSlicerLib.nodes`: MRML nodes to files and back (volumes, label maps, segmentations,
  transforms, tables), using only MRML classes and storage nodes.
* :mod:`RegSegSlicerLib.jobs`: the generic background job every panel runs (state machine, temporary folder,
  child process, cancellation, failures naming nodes instead of temporary files); a panel implements four hooks.
* :mod:`RegSegSlicerLib.registration`: the registration job: the request (validated by RegSegLib's torch-free
  :mod:`RegSegLib.registration.settings`), the ``regseg register`` command line, the export of volumes, masks,
  labels and the initial transform, and the import of the results into the chosen output nodes.
* :mod:`RegSegSlicerLib.panel`: what every panel's widget shares (:class:`~RegSegSlicerLib.panel.JobPanelMixin`:
  Apply/Cancel, the poll timer, progress, log, status; :class:`~RegSegSlicerLib.panel.ModelSectionMixin`: the
  "Models" section). It imports ``qt``, ``vtk`` and ``slicer``, so only the modules' widgets import it.
* :mod:`RegSegSlicerLib.model_store`: the model section of a panel: the models of its task (RegSegLib's torch-free
  :mod:`RegSegLib.models` store), import of a model file for offline sites, licence and metrics of a model.
* :mod:`RegSegSlicerLib.dependencies`: torch through the PyTorch extension and the other Python
  packages, installed on first use with confirmation.
* :mod:`RegSegSlicerLib.paths`: where RegSegLib lives (installed beside the modules, or a source
  checkout) and which Python runs it.

Importing this package imports neither Qt, nor VTK, nor torch (``nodes``, ``registration`` and ``model_store`` import
RegSegLib's torch-free ``geometry``, ``registration.settings`` and ``models``, found by
:func:`RegSegSlicerLib.paths.ensure_regseglib_importable`).
"""

__all__ = ["dependencies", "jobs", "model_store", "nodes", "panel", "paths", "process", "registration"]
