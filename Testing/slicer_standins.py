"""Small named stand-ins for the Slicer application's Qt-side Python modules, to import RegSeg's module files.

``slicer-core`` gives the real MRML classes and ``slicer.util`` without Qt; the scripted-module base classes
(``slicer.ScriptedLoadableModule``), the parameter node wrapper, ``slicer.i18n``, ``qt`` and ``ctk`` exist only
in the Slicer application. :func:`slicer_module_standins` installs minimal real classes for them (not mocks:
anything the module code uses that is missing here fails loudly) for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import unittest
from pathlib import Path
from typing import Iterator

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
MODULE_FOLDER = REPOSITORY_ROOT / "RegSeg"


class ScriptedLoadableModule:
    """Stand-in: keeps the ``parent`` whose title, categories and help the module sets."""

    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    """Stand-in: the widget base; ``setup`` and ``resourcePath`` as in Slicer."""

    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.layout = None

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        return str(MODULE_FOLDER / "Resources" / filename)


class ScriptedLoadableModuleLogic:
    """Stand-in: the logic base; the parameter node is a scripted module node in ``slicer.mrmlScene``."""

    def __init__(self, parent=None) -> None:
        self.parent = parent

    def getParameterNode(self):
        import slicer

        return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Stand-in: the in-Slicer test base."""

    def delayDisplay(self, message: str, msec: int = 0) -> None:
        pass


class Choice:
    """Stand-in for ``slicer.parameterNodeWrapper.Choice``: the allowed values of an annotated field."""

    def __init__(self, choices) -> None:
        self.choices = list(choices)


def parameterNodeWrapper(cls):
    """Stand-in for ``slicer.parameterNodeWrapper.parameterNodeWrapper``: keeps the class and its annotations."""
    cls.parameter_names = list(cls.__annotations__)
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
        "qt": _module("qt", QTimer=QTimer, QThread=QThread),
        "ctk": _module("ctk"),
        "slicer.ScriptedLoadableModule": _module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=ScriptedLoadableModule,
            ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        ),
        "slicer.parameterNodeWrapper": _module(
            "slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper, Choice=Choice
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
    """Imports a Python file as a fresh module (not left in ``sys.modules``)."""
    name = name or f"regseg_test_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
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
