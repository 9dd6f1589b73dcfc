"""Small named stand-ins for the Slicer application's Qt-side Python modules, to import and drive RegSeg's module files.

``slicer-core`` gives the real MRML classes and ``slicer.util`` without Qt; the scripted-module base classes
(``slicer.ScriptedLoadableModule``), the parameter node wrapper, ``slicer.i18n`` and ``qt`` exist only in the
Slicer application. :func:`slicer_module_standins` installs minimal real classes for them (not mocks: anything
the module code uses that is missing here fails loudly) for the duration of a ``with`` block. The panel's widgets
and ``slicer.app`` have their own stand-ins in ``slicer_panel_standins``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import typing
import types
import unittest
from pathlib import Path
from typing import Iterator

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODULE_FOLDER = REPOSITORY_ROOT / "RegSeg"


class ScriptedLoadableModule:
    """Stand-in: keeps the ``parent`` whose title, categories and help the module sets."""

    def __init__(self, parent) -> None:
        self.parent = parent


class StandinLayout:
    """Stand-in for the module panel's ``QVBoxLayout``: keeps the widgets added to it."""

    def __init__(self) -> None:
        self.widgets: list = []

    def addWidget(self, widget) -> None:
        self.widgets.append(widget)


class StandinModulePanel:
    """Stand-in for ``qSlicerScriptedLoadableModuleWidget``, the Qt parent of a scripted module widget."""

    def __init__(self) -> None:
        self.isEntered = True


class ScriptedLoadableModuleWidget:
    """Stand-in: the widget base; ``parent``, ``layout``, ``moduleName``, ``setup``, ``resourcePath`` and
    ``onReload`` (``slicer.util.reloadScriptedModule`` of the module, nothing else) as in Slicer."""

    def __init__(self, parent=None) -> None:
        self.parent = parent if parent is not None else StandinModulePanel()
        self.layout = StandinLayout()
        self.moduleName = type(self).__name__.removesuffix("Widget")

    def setup(self) -> None:
        pass

    def onReload(self) -> None:
        import slicer

        slicer.util.reloadScriptedModule(self.moduleName)

    def resourcePath(self, filename: str) -> str:
        return str(MODULE_FOLDER / "Resources" / filename)


class ScriptedLoadableModuleLogic:
    """Stand-in: the logic base; the parameter node is the module's singleton scripted module node in ``slicer.mrmlScene``."""

    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetName(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Stand-in: the in-Slicer test base; ``delayDisplay`` messages are kept in ``displayed``."""

    def delayDisplay(self, message: str, msec: int = 0) -> None:
        self.__dict__.setdefault("displayed", []).append(message)


class Choice:
    """Stand-in for ``slicer.parameterNodeWrapper.Choice``: the allowed values of an annotated field."""

    def __init__(self, choices) -> None:
        self.choices = list(choices)


class WithinRange:
    """Stand-in for ``slicer.parameterNodeWrapper.WithinRange``: the range a bound spin box is given."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum


def require_mrml():
    """slicer-core's ``slicer`` module, with the real MRML classes (the test extra installs it).

    Raises:
        ImportError: slicer-core is not installed, or another package named ``slicer`` took its place.
    """
    import slicer

    if not hasattr(slicer, "vtkMRMLScene"):
        raise ImportError(
            f"the 'slicer' package at {slicer.__file__} has no MRML classes; the tests need slicer-core "
            "(bash Scripts/setup_env.sh test)"
        )
    return slicer


def _holds_nodes(annotation) -> bool:
    """Whether a field holds MRML nodes: a node class, or ``Optional``/``Union``/``Annotated`` of node classes."""
    arguments = typing.get_args(annotation)
    if arguments:
        return any(_holds_nodes(argument) for argument in arguments if argument is not type(None))
    return isinstance(annotation, type) and annotation.__name__.startswith("vtkMRML")


def _parameter_property(name: str, default, holds_nodes: bool) -> property:
    """A field kept in the scripted module node, as the real wrapper keeps it: node references for nodes
    (a removed node reads back as ``None``), JSON text in a parameter for the rest (absent: the default)."""

    def get(self):
        node = self.parameterNode
        if holds_nodes:
            return node.GetNodeReference(name)
        return json.loads(node.GetParameter(name)) if name in node.GetParameterNames() else default

    def set(self, value) -> None:
        node = self.parameterNode
        if holds_nodes:
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            node.SetParameter(name, json.dumps(value))

    return property(get, set)


EMULATED_SLICER_VERSION = (5, 10, 0)
"""The Slicer version whose parameter node wrapper the stand-in behaves as (set by :func:`slicer_module_standins`)."""
CONNECT_GUI_RETURNS_TAG_FROM = (5, 10, 0)
"""``connectGui`` of Slicer 5.6.2-5.8.1 makes a connection but returns ``None`` instead of its tag (fixed in 5.10)."""
COMBO_BOX_CLASSES = ("QComboBox", "ctkComboBox")


class ComboBoxConnector:
    """Stand-in for ``guiConnectors.QComboBoxToStringableConnector``: as the real one, it refills the combo box with
    the field's choices when created (the combo box reports each index change while it does), writes a value as
    the current index, reads the current index as a choice (index -1 reads the last one, as Python indexing does
    in the real connector) and reports ``currentIndexChanged`` to its callback."""

    def __init__(self, widget, choices) -> None:
        self.widget, self.choices, self.callback = widget, list(choices), None
        widget.clear()
        for choice in self.choices:
            widget.addItem(str(choice))

    def onChanged(self, callback) -> None:
        if callback is None:
            self.widget.disconnect("currentIndexChanged(int)", self.changed)
        else:
            self.widget.connect("currentIndexChanged(int)", self.changed)
        self.callback = callback

    def changed(self) -> None:
        if self.callback is not None:
            self.callback()

    def read(self):
        return self.choices[self.widget.currentIndex]

    def write(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Unable to find value {value} in choices {self.choices}")
        self.widget.currentIndex = self.choices.index(value)


class BindingRecord:
    """Stand-in connector of the other widgets: records the binding only (tests set those fields as the widgets would)."""

    def __init__(self, widget) -> None:
        self.widget, self.callback = widget, None

    def onChanged(self, callback) -> None:
        self.callback = callback

    def write(self, value) -> None:
        pass


def _gui_connector(widget, hint):
    if widget.className not in COMBO_BOX_CLASSES:
        return BindingRecord(widget)
    choices = [item for item in getattr(hint, "__metadata__", ()) if isinstance(item, Choice)]
    if not choices:
        raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
    return ComboBoxConnector(widget, choices[0].choices)


def _gui_to_parameter(wrapper, name: str, connector):
    def callback() -> None:
        if not wrapper._updatingGUIFromParameterNode:
            setattr(wrapper, name, connector.read())

    return callback


def _update_gui(wrapper) -> None:
    """What the real wrapper does on each ModifiedEvent of its node: writes every field to its bound widgets."""
    if wrapper._updatingGUIFromParameterNode:
        return
    object.__setattr__(wrapper, "_updatingGUIFromParameterNode", True)
    try:
        for connectors in wrapper._parameterGUIs.values():
            for name, connector in connectors.items():
                connector.write(getattr(wrapper, name))
    finally:
        object.__setattr__(wrapper, "_updatingGUIFromParameterNode", False)


def parameterNodeWrapper(cls):
    """Stand-in for ``slicer.parameterNodeWrapper.parameterNodeWrapper``.

    The wrapped class takes the MRML scripted module node and keeps every annotated field in it (so a new
    wrapper of the same node reads the same values, and setting a field fires the node's ``ModifiedEvent``);
    observers are the node's. The GUI binding follows Slicer's ``wrapper.py``: each wrapper numbers its
    connections from 0; ``connectParametersToGui`` creates the connectors (a combo box one refills its combo box),
    writes the fields to them, connects their callbacks and observes the node for good, and returns the tag;
    ``connectGui`` binds the widgets with a ``SlicerParameterName`` property the same way and returns the tag, or
    ``None`` when emulating Slicer before 5.10 (:data:`EMULATED_SLICER_VERSION`); ``disconnectGui`` removes one
    connection. ``parameter_defaults`` holds the class defaults.
    """
    import vtk

    hints = typing.get_type_hints(cls, include_extras=True)
    names = list(cls.__annotations__)
    defaults = {name: getattr(cls, name, None) for name in names}

    def __init__(self, parameterNode) -> None:
        for key, value in (
            ("parameterNode", parameterNode),
            ("_parameterGUIs", {}),
            ("_nextParameterGUIsTag", 0),
            ("_updatingGUIFromParameterNode", False),
        ):
            object.__setattr__(self, key, value)

    def __setattr__(self, name, value) -> None:
        if name not in names:
            raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
        object.__setattr__(self, name, value)

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag) -> None:
        self.parameterNode.RemoveObserver(tag)

    def connectParametersToGui(self, mapping) -> int:
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"Cannot find a param with the given name: {unknown[0]}")
        connectors = {name: _gui_connector(widget, hints[name]) for name, widget in mapping.items()}
        tag = self._nextParameterGUIsTag
        object.__setattr__(self, "_nextParameterGUIsTag", tag + 1)
        self._parameterGUIs[tag] = connectors
        for name, connector in connectors.items():
            connector.write(getattr(self, name))
            connector.onChanged(_gui_to_parameter(self, name, connector))
        self.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: _update_gui(self))
        return tag

    def connectGui(self, gui):
        widgets = [widget for widget in vars(gui).values() if widget.property("SlicerParameterName")]
        tag = self.connectParametersToGui({widget.property("SlicerParameterName"): widget for widget in widgets})
        return tag if EMULATED_SLICER_VERSION >= CONNECT_GUI_RETURNS_TAG_FROM else None

    def disconnectGui(self, tag) -> None:
        for connector in self._parameterGUIs.pop(tag, {}).values():
            connector.onChanged(None)

    def bound_widgets(self) -> list[tuple[str, typing.Any]]:
        """Test helper: ``(field, widget)`` of every live connection of this wrapper."""
        return [(name, c.widget) for connectors in self._parameterGUIs.values() for name, c in connectors.items()]

    for method in (__init__, __setattr__, AddObserver, RemoveObserver, connectParametersToGui, connectGui, disconnectGui, bound_widgets):
        setattr(cls, method.__name__, method)
    for name in names:
        setattr(cls, name, _parameter_property(name, defaults[name], _holds_nodes(hints[name])))
    cls.parameter_names = names
    cls.parameter_defaults = defaults
    return cls


class QTimer:
    """Stand-in for ``qt.QTimer``: interval, start/stop and one ``timeout()`` connection."""

    def __init__(self) -> None:
        self.interval = 0
        self.active = False
        self.slots = []

    def setInterval(self, msec: int) -> None:
        self.interval = msec

    def connect(self, signal: str, slot) -> None:
        self.slots.append((signal, slot))

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def fire(self) -> None:
        """What Qt's event loop does every ``interval`` ms while the timer is active: emit ``timeout()``."""
        for signal, slot in list(self.slots):
            if signal == "timeout()":
                slot()


class Qt:
    """Stand-in for ``qt.Qt``'s cursor shapes."""

    WaitCursor = 3


class QThread:
    """Stand-in for ``qt.QThread``'s static sleep."""

    @staticmethod
    def msleep(msec: int) -> None:
        import time

        time.sleep(msec / 1000.0)


class QFileDialog:
    """Stand-in for ``qt.QFileDialog``'s static open dialog: returns :attr:`answer` (the file the test makes the user
    pick; ``""`` is Cancel) and records each request's ``(caption, filter)`` in :attr:`requests`."""

    answer = ""
    requests: list[tuple[str, str]] = []

    @classmethod
    def getOpenFileName(cls, parent, caption: str = "", folder: str = "", filter: str = "") -> str:
        cls.requests.append((caption, filter))
        return cls.answer


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def _translate(context: str, text: str) -> str:
    return text


def _tr(text: str) -> str:
    return text


def standin_modules() -> dict[str, types.ModuleType]:
    """The stand-in modules by import name."""
    return {
        "qt": _module("qt", QTimer=QTimer, QThread=QThread, Qt=Qt, QFileDialog=QFileDialog),
        "slicer.ScriptedLoadableModule": _module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=ScriptedLoadableModule,
            ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        ),
        "slicer.parameterNodeWrapper": _module(
            "slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper, Choice=Choice, WithinRange=WithinRange
        ),
        "slicer.i18n": _module("slicer.i18n", tr=_tr, translate=_translate),
    }


@contextlib.contextmanager
def slicer_module_standins(slicer_version: tuple[int, int, int] = (5, 10, 0)) -> Iterator[None]:
    """Installs the stand-ins (and the module folder on ``sys.path``); restores everything afterwards.

    Args:
        slicer_version: the Slicer whose parameter node wrapper the stand-in emulates (see :func:`parameterNodeWrapper`).
    """
    global EMULATED_SLICER_VERSION
    emulated, EMULATED_SLICER_VERSION = EMULATED_SLICER_VERSION, tuple(slicer_version)
    added = standin_modules()
    saved = {name: sys.modules.get(name) for name in added}
    path_added = str(MODULE_FOLDER) not in sys.path
    if path_added:
        sys.path.insert(0, str(MODULE_FOLDER))
    sys.modules.update(added)
    try:
        yield
    finally:
        EMULATED_SLICER_VERSION = emulated
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if path_added:
            sys.path.remove(str(MODULE_FOLDER))


def import_file(path: Path, name: str | None = None) -> types.ModuleType:
    """Imports a Python file as a fresh module (not left in ``sys.modules``), the module folder on ``sys.path``."""
    name = name or f"regseg_test_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    path_added = str(MODULE_FOLDER) not in sys.path
    if path_added:
        sys.path.insert(0, str(MODULE_FOLDER))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
        if path_added:
            sys.path.remove(str(MODULE_FOLDER))
    return module


_CONVERTERS_REGISTERED = []


def register_segmentation_converters() -> None:
    """Registers the labelmap <-> closed surface rules (once), as the Segmentations module does in the application."""
    if _CONVERTERS_REGISTERED:
        return
    from slicer_core.vtkSegmentationCore import (
        vtkBinaryLabelmapToClosedSurfaceConversionRule,
        vtkClosedSurfaceToBinaryLabelmapConversionRule,
        vtkSegmentationConverterFactory,
    )

    factory = vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(vtkClosedSurfaceToBinaryLabelmapConversionRule())
    _CONVERTERS_REGISTERED.append(True)
