"""Named stand-ins for the Qt side of RegSeg's panel: widgets built from the module's real .ui file, and ``slicer.app``.

:func:`load_ui` reads ``RegSegRegistration.ui`` (Qt Designer XML) and builds one stand-in per ``<widget>``, with
the class's designer properties (``text``, ``toolTip``, ``enabled``, ...) as attributes, the parent/child tree,
and the ``<connections>`` of the file wired as they are in Qt (``mrmlSceneChanged`` -> ``setMRMLScene``). Signals
are emitted by the tests (a click, a node chosen in a combo box) and reach the slots the panel connected, with as
many arguments as a slot takes, like PythonQt. Only the methods the panel uses exist: anything else fails loudly.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import stat
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Iterator


def _property_value(element: ET.Element) -> Any:
    """The value of a designer ``<property>``: string, bool, number or string list (``None`` for other kinds)."""
    value = next(iter(element), None)
    if value is None:
        return None
    if value.tag == "string":
        return value.text or ""
    if value.tag == "bool":
        return value.text == "true"
    if value.tag == "number":
        return int(value.text)
    if value.tag == "double":
        return float(value.text)
    if value.tag == "stringlist":
        return [item.text or "" for item in value.iter("string")]
    return None


class StandinWidget:
    """Stand-in for a Qt widget of the .ui file: name, class, designer properties, children, signals and slots."""

    def __init__(self, class_name: str, name: str, properties: dict[str, Any]) -> None:
        self.className = class_name
        self.name = name
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.text = ""
        self.children: list[StandinWidget] = []
        self._slots: dict[str, list[Callable]] = {}
        for key, value in properties.items():
            setter = getattr(self, "set" + key[0].upper() + key[1:], None)
            if callable(getattr(type(self), key, None)) and setter is not None:
                setter(value)  # a property read through a method, like QProgressBar.value()
            else:
                setattr(self, key, value)

    def connect(self, signal: str, slot: Callable) -> None:
        self._slots.setdefault(signal, []).append(slot)

    def disconnect(self, signal: str, slot: Callable) -> None:
        """Removes one connection of ``slot`` (as Qt, an error when there is none)."""
        slots = self._slots.get(signal, [])
        if slot not in slots:
            raise RuntimeError(f"{self.name}: {signal} is not connected to {slot}")
        slots.remove(slot)

    def connections(self, signal: str) -> int:
        """How many slots ``signal`` reaches (what a test checks for stale connections)."""
        return len(self._slots.get(signal, []))

    def property(self, name: str):
        """``QObject.property``: a designer property of the .ui (dynamic ones such as ``SlicerParameterName`` too), else ``None``."""
        return self.__dict__.get(name)

    def emit(self, signal: str, *args) -> None:
        """Calls every slot connected to ``signal`` with the arguments it accepts (PythonQt drops the rest)."""
        for slot in list(self._slots.get(signal, [])):
            parameters = [
                p for p in inspect.signature(slot).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            slot(*args[: len(parameters)])

    def descendants(self) -> list[StandinWidget]:
        found = []
        for child in self.children:
            found += [child, *child.descendants()]
        return found


class StandinMRMLWidget(StandinWidget):
    """Stand-in for ``qMRMLWidget`` (the .ui's top widget): ``setMRMLScene`` emits ``mrmlSceneChanged``."""

    def setMRMLScene(self, scene) -> None:
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)


class StandinPushButton(StandinWidget):
    """Stand-in for ``QPushButton``."""

    def click(self) -> None:
        """A click by the user: ``clicked(bool)`` when the button is enabled."""
        if not self.enabled:
            raise RuntimeError(f"{self.name} is disabled: a user cannot click it")
        self.emit("clicked(bool)", False)


class StandinProgressBar(StandinWidget):
    """Stand-in for ``QProgressBar``."""

    def __init__(self, class_name: str, name: str, properties: dict[str, Any]) -> None:
        self._value = 0
        super().__init__(class_name, name, properties)

    def setValue(self, value: int) -> None:
        self._value = int(value)

    def value(self) -> int:
        return self._value


class StandinPlainTextEdit(StandinWidget):
    """Stand-in for ``QPlainTextEdit``."""

    def __init__(self, class_name: str, name: str, properties: dict[str, Any]) -> None:
        self._lines: list[str] = []
        super().__init__(class_name, name, properties)

    def clear(self) -> None:
        self._lines = []

    def appendPlainText(self, text: str) -> None:
        self._lines.append(text)

    def setPlainText(self, text: str) -> None:
        self._lines = text.split("\n") if text else []

    def toPlainText(self) -> str:
        return "\n".join(self._lines)


class StandinComboBox(StandinWidget):
    """Stand-in for ``QComboBox``/``ctkComboBox``: items, ``currentIndex`` and ``currentIndexChanged(int)`` as Qt emits
    it (on every index change: clearing a filled box goes to -1, the first item added to an empty box to 0)."""

    def __init__(self, class_name: str, name: str, properties: dict[str, Any]) -> None:
        self._items: list[str] = []
        self._index = -1
        super().__init__(class_name, name, properties)

    def _set_index(self, index: int) -> None:
        if not -1 <= index < len(self._items):
            raise IndexError(f"{self.name}: no item {index} among {self._items}")
        if index != self._index:
            self._index = index
            self.emit("currentIndexChanged(int)", index)

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:
        self._set_index(index)

    @property
    def currentText(self) -> str:
        return self._items[self._index] if self._index >= 0 else ""

    def count(self) -> int:
        return len(self._items)

    def itemText(self, index: int) -> str:
        return self._items[index]

    def addItem(self, text: str) -> None:
        self._items.append(str(text))
        if self._index == -1:
            self._set_index(0)

    def clear(self) -> None:
        self._items = []
        self._set_index(-1)

    def choose(self, text: str) -> None:
        """The user picks ``text`` in the list."""
        self._set_index(self._items.index(text))


class StandinNodeComboBox(StandinWidget):
    """Stand-in for ``qMRMLNodeComboBox``: the scene, the current node and ``currentNodeChanged``."""

    def __init__(self, class_name: str, name: str, properties: dict[str, Any]) -> None:
        self._scene = None
        self._node = None
        super().__init__(class_name, name, properties)

    def setMRMLScene(self, scene) -> None:
        self._scene = scene

    def mrmlScene(self):
        return self._scene

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not None:
            if node.GetScene() is not self._scene:
                raise ValueError(f"{self.name}: the node {node.GetName()!r} is not in the combo box's scene")
            if not any(node.IsA(kind) for kind in self.nodeTypes):
                raise ValueError(f"{self.name} lists {self.nodeTypes}, not {node.GetClassName()}")
        changed = node is not self._node
        self._node = node
        if changed:
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class StandinSegmentSelector(StandinNodeComboBox):
    """Stand-in for ``qMRMLSegmentSelectorWidget`` (multi-selection): its segmentation and the checked segments."""

    nodeTypes = ["vtkMRMLSegmentationNode"]

    def __init__(self, class_name: str, name: str, properties: dict[str, Any]) -> None:
        self._segment_ids: list[str] = []
        super().__init__(class_name, name, properties)

    def setSelectedSegmentIDs(self, segment_ids: list[str]) -> None:
        self._segment_ids = list(segment_ids)

    def selectedSegmentIDs(self) -> list[str]:
        return list(self._segment_ids) if self._node is not None else []


STANDIN_CLASSES: dict[str, type[StandinWidget]] = {
    "qMRMLWidget": StandinMRMLWidget,
    "QComboBox": StandinComboBox,
    "ctkComboBox": StandinComboBox,
    "QPushButton": StandinPushButton,
    "QProgressBar": StandinProgressBar,
    "QPlainTextEdit": StandinPlainTextEdit,
    "qMRMLNodeComboBox": StandinNodeComboBox,
    "qMRMLSegmentSelectorWidget": StandinSegmentSelector,
}


def _build(element: ET.Element) -> StandinWidget:
    properties = {}
    for prop in element.findall("property"):
        value = _property_value(prop)
        if value is not None:
            properties[prop.get("name")] = value
    widget_class = STANDIN_CLASSES.get(element.get("class"), StandinWidget)
    widget = widget_class(element.get("class"), element.get("name"), properties)
    for item in element.findall("item"):
        widget.addItem(_property_value(item.find("property")))
    widget.children = [_build(child) for child in _child_widgets(element)]
    return widget


def _child_widgets(element: ET.Element):
    """The ``<widget>`` elements right below ``element`` (layouts and layout items lie between them)."""
    for node in element:
        if node.tag == "widget":
            yield node
        else:
            yield from _child_widgets(node)


def load_ui(path: str) -> StandinWidget:
    """Stand-in for ``slicer.util.loadUI``: the widget tree of the .ui file, its connections wired.

    Raises:
        RuntimeError: the file does not exist, or a connection names a widget or slot that does not exist.
    """
    if not Path(path).is_file():
        raise RuntimeError(f"Could not load UI file: file not found {path}")
    tree = ET.parse(path)
    root = _build(tree.getroot().find("widget"))
    widgets = {widget.name: widget for widget in [root, *root.descendants()]}
    for connection in tree.getroot().iter("connection"):
        sender, receiver = widgets[connection.findtext("sender")], widgets[connection.findtext("receiver")]
        slot_name = connection.findtext("slot").split("(", 1)[0]
        if not hasattr(receiver, slot_name):
            raise RuntimeError(f"{receiver.name} ({receiver.className}) has no slot {slot_name}")
        sender.connect(connection.findtext("signal"), getattr(receiver, slot_name))
    return root


def child_widget_variables(widget: StandinWidget):
    """Stand-in for ``slicer.util.childWidgetVariables``: every named descendant as an attribute."""
    ui = type("", (), {})()
    for child in widget.descendants():
        if child.name:
            setattr(ui, child.name, child)
    return ui


class StandinApplication:
    """Stand-in for ``slicer.app``: temporary path, Slicer's home with ``bin/PythonSlicer``, cursor and events.

    ``bin/PythonSlicer`` is a shell script that runs this interpreter, as Slicer's launcher runs its own Python.
    Error messages (``slicer.util.errorDisplay``) and slice-viewer layer choices are recorded.
    """

    def __init__(self, folder: Path) -> None:
        self.temporaryPath = str(folder / "temp")
        self.slicerHome = str(folder / "Slicer")
        os.makedirs(self.temporaryPath, exist_ok=True)
        python_slicer = Path(self.slicerHome) / "bin" / "PythonSlicer"
        python_slicer.parent.mkdir(parents=True, exist_ok=True)
        python_slicer.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python_slicer.chmod(python_slicer.stat().st_mode | stat.S_IXUSR)
        self.override_cursors: list[int] = []
        self.connections: dict[str, list] = {}
        self.processed_events = 0
        self.errors: list[str] = []
        self.layers: list[dict] = []

    def testingEnabled(self) -> bool:
        return False

    def connect(self, signal: str, slot) -> None:
        """Records a connection to an application signal; :meth:`emit` calls its slots."""
        self.connections.setdefault(signal, []).append(slot)

    def emit(self, signal: str) -> None:
        for slot in self.connections.get(signal, []):
            slot()

    def setOverrideCursor(self, cursor: int) -> None:
        self.override_cursors.append(cursor)

    def restoreOverrideCursor(self) -> None:
        self.override_cursors.pop()

    def processEvents(self) -> None:
        self.processed_events += 1

    def error_display(self, text: str, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
        """Stand-in for ``slicer.util.errorDisplay`` (a message box in Slicer)."""
        self.errors.append(text)

    def set_slice_viewer_layers(self, **layers) -> None:
        """Stand-in for ``slicer.util.setSliceViewerLayers`` (needs the application's layout manager)."""
        self.layers.append(layers)


def install_standin_application(monkeypatch, folder: Path, scene) -> StandinApplication:
    """For one test (``monkeypatch`` undoes it): the stand-in ``slicer.app``, ``scene`` as ``slicer.mrmlScene``, the
    stand-ins of the ``slicer.util`` functions that need Qt (loading the .ui, message boxes, slice viewers), and an
    empty model store (``REGSEG_HOME`` in ``folder``) instead of the user's."""
    import slicer

    app = StandinApplication(folder)
    monkeypatch.setenv("REGSEG_HOME", str(folder / "regseg-home"))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", load_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", child_widget_variables)
    monkeypatch.setattr(slicer.util, "errorDisplay", app.error_display)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", app.set_slice_viewer_layers)
    return app


DEADLINE_S = 300.0
"""The longest a panel's job may take in the tests."""


def run_until_idle(widget, condition=None) -> None:
    """Fires the panel's timer every 50 ms, as Qt's event loop does, until it stops (or ``condition()`` holds)."""
    import time

    deadline = time.monotonic() + DEADLINE_S
    while widget.timer.active and not (condition is not None and condition()):
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(0.05)
        widget.timer.fire()


@contextlib.contextmanager
def open_panel(module_file: str, widget_class: str) -> Iterator:
    """A module's panel widget set up and entered (inside :func:`slicer_standins.slicer_module_standins`, after
    :func:`install_standin_application`); exited and cleaned up afterwards.

    Args:
        module_file: the module's file in the module folder (``RegSegRegistration.py``).
        widget_class: its widget class (``RegSegRegistrationWidget``).

    Yields:
        ``(widget, module)``.
    """
    from slicer_standins import MODULE_FOLDER, import_file, slicer_module_standins

    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / module_file)
        widget = getattr(module, widget_class)()
        widget.setup()
        widget.enter()
        try:
            yield widget, module
        finally:
            widget.exit()
            widget.cleanup()
