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
    """Stand-in: the widget base; ``parent``, ``layout``, ``setup`` and ``resourcePath`` as in Slicer."""

    def __init__(self, parent=None) -> None:
        self.parent = parent if parent is not None else StandinModulePanel()
        self.layout = StandinLayout()

    def setup(self) -> None:
        pass

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
    """Stand-in: the in-Slicer test base."""

    def delayDisplay(self, message: str, msec: int = 0) -> None:
        pass


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


def parameterNodeWrapper(cls):
    """Stand-in for ``slicer.parameterNodeWrapper.parameterNodeWrapper``.

    The wrapped class takes the MRML scripted module node and keeps every annotated field in it (so a new
    wrapper of the same node reads the same values, and setting a field fires the node's ``ModifiedEvent``);
    observers are the node's; ``connectGui``/``disconnectGui`` only record the binding (binding widgets is Qt's
    part: tests set the fields as the widgets would). ``parameter_defaults`` holds the class defaults.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    names = list(cls.__annotations__)
    defaults = {name: getattr(cls, name, None) for name in names}

    def __init__(self, parameterNode) -> None:
        object.__setattr__(self, "parameterNode", parameterNode)
        object.__setattr__(self, "connected_guis", {})

    def __setattr__(self, name, value) -> None:
        if name not in names:
            raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
        object.__setattr__(self, name, value)

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag) -> None:
        self.parameterNode.RemoveObserver(tag)

    def connectGui(self, gui) -> int:
        tag = len(self.connected_guis) + 1
        self.connected_guis[tag] = gui
        return tag

    def disconnectGui(self, tag) -> None:
        self.connected_guis.pop(tag, None)

    for method in (__init__, __setattr__, AddObserver, RemoveObserver, connectGui, disconnectGui):
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
        "qt": _module("qt", QTimer=QTimer, QThread=QThread, Qt=Qt),
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
def slicer_module_standins() -> Iterator[None]:
    """Installs the stand-ins (and the module folder on ``sys.path``); restores everything afterwards."""
    added = standin_modules()
    saved = {name: sys.modules.get(name) for name in added}
    path_added = str(MODULE_FOLDER) not in sys.path
    if path_added:
        sys.path.insert(0, str(MODULE_FOLDER))
    sys.modules.update(added)
    try:
        yield
    finally:
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
