"""The model store: shipped models (read-only, inside the package) and installed ones (a per-user cache folder).

The cache folder is ``$REGSEG_HOME`` when set, else the platform's user cache: ``$XDG_CACHE_HOME/regseg``
(``~/.cache/regseg``) on Linux, ``~/Library/Caches/regseg`` on macOS, ``%LOCALAPPDATA%\\regseg`` on Windows.
Installed models live in its ``models/`` folder beside a ``manifest.json`` that lists them; shipped models live
in ``RegSegLib/models/shipped/`` with a ``manifest.json`` of the same form. Every file is written under a
temporary name and renamed into place, and its sha256 is checked before it is installed and before it is loaded.

Torch-free except :meth:`ModelStore.load_weights`, which imports torch when called.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from RegSegLib.errors import InputError, RegSegError
from RegSegLib.io.files import atomic_output, check_exists
from RegSegLib.models.manifest import PARTIAL_SUFFIX, ModelEntry, file_problem, metrics_text, read_entry
from RegSegLib.models.manifest import read_manifest, write_manifest

MANIFEST = "manifest.json"
SHIPPED_FOLDER = Path(__file__).resolve().parent / "shipped"
"""Models that ship inside the package, with their own ``manifest.json``."""


def user_cache_folder() -> Path:
    """The platform's per-user cache folder for RegSeg (ignores ``REGSEG_HOME``)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "regseg"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "regseg"
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "regseg"


def regseg_home() -> Path:
    """``$REGSEG_HOME`` when set (``~`` expanded), else :func:`user_cache_folder`."""
    home = os.environ.get("REGSEG_HOME", "").strip()
    return Path(home).expanduser() if home else user_cache_folder()


@dataclass(frozen=True)
class StoredModel:
    """A model of the store.

    Args:
        entry: its manifest entry.
        path: its weights file.
        shipped: whether it ships inside the package (read-only) rather than installed in the cache folder.
    """

    entry: ModelEntry
    path: Path
    shipped: bool

    @property
    def source(self) -> str:
        """``shipped`` or ``installed``."""
        return "shipped" if self.shipped else "installed"

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry plus ``path`` and ``shipped``, JSON-ready."""
        return {**self.entry.to_dict(), "path": str(self.path), "shipped": self.shipped}

    def description(self) -> list[str]:
        """Lines for people: what the model is, its licence, provenance, metrics and where its file is."""
        entry = self.entry
        return [
            f"{entry.name} {entry.version} ({entry.task}, {self.source})",
            f"licence: {entry.licence}",
            f"training data: {entry.training_data}",
            f"trained with: {entry.budget}",
            f"metrics: {metrics_text(entry.metrics)}",
            f"input: {entry.input.text()}",
            f"reproduce: {entry.reproduce}",
            f"file: {self.path} ({entry.size} bytes, sha256 {entry.sha256})",
            f"url: {entry.url or 'none'}",
        ]


@dataclass(frozen=True)
class ModelCheck:
    """The result of verifying one model's file against its manifest entry.

    Args:
        model: the model checked.
        problem: what is wrong with its file, or ``None`` when it matches.
    """

    model: StoredModel
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether the file matches its entry."""
        return self.problem is None


class ModelStore:
    """Lists, imports, verifies, removes and loads trained models.

    Args:
        home: the cache folder (default :func:`regseg_home`); installed models go to its ``models/``.
        shipped: the folder of shipped models (default :data:`SHIPPED_FOLDER`); a folder without a
            ``manifest.json`` ships nothing.
    """

    def __init__(self, home: str | os.PathLike | None = None, shipped: str | os.PathLike | None = None) -> None:
        self.home = Path(home) if home is not None else regseg_home()
        self.folder = self.home / "models"
        self.shipped_folder = Path(shipped) if shipped is not None else SHIPPED_FOLDER

    def _read(self, folder: Path) -> list[ModelEntry]:
        manifest = folder / MANIFEST
        return read_manifest(manifest) if manifest.exists() else []

    def list_models(self, task: str | None = None) -> list[StoredModel]:
        """Shipped then installed models, each sorted by task and name; only ``task``'s when given.

        Raises:
            InputError: a manifest file that cannot be read or breaks the schema.
        """
        found = [StoredModel(entry, self.shipped_folder / entry.file, True) for entry in self._read(self.shipped_folder)]
        found += [StoredModel(entry, self.folder / entry.file, False) for entry in self._read(self.folder)]
        return sorted(
            (model for model in found if task is None or model.entry.task == task),
            key=lambda model: (not model.shipped, model.entry.task, model.entry.name),
        )

    def info(self, name: str) -> StoredModel:
        """The model called ``name``.

        Raises:
            RegSegError: no model has that name.
        """
        for model in self.list_models():
            if model.entry.name == name:
                return model
        raise RegSegError(f"no model named {name!r} (installed in {self.folder} or shipped); 'regseg models list' lists them")

    def check_installable(self, entry: ModelEntry, replace: bool = False) -> None:
        """Refuses an entry whose name is shipped, or taken (unless ``replace``), or whose file another model uses.

        Raises:
            RegSegError: naming the model.
        """
        for model in self.list_models():
            if model.entry.name == entry.name:
                if model.shipped:
                    raise RegSegError(f"model {entry.name!r} ships with RegSeg; give the new one another name")
                if not replace:
                    raise RegSegError(f"model {entry.name!r} is installed already; remove it first or replace it")
            elif not model.shipped and model.entry.file == entry.file:
                raise RegSegError(f"model {model.entry.name!r} already uses the file name {entry.file!r}")

    def install(
        self, entry: ModelEntry, source: Path, *, move: bool, replace: bool = False, origin: str | None = None
    ) -> StoredModel:
        """Checks ``source`` against ``entry``, puts it into the cache folder and lists it in the manifest.

        Args:
            entry: the model's manifest entry.
            source: its weights file (moved when ``move``, else copied).
            move: move ``source`` (a download in the cache folder) instead of copying it.
            replace: replace an installed model of the same name.
            origin: what a checksum error names (default ``source``).

        Raises:
            InputError: size or sha256 differ from the entry; nothing is installed (a moved source is deleted).
            RegSegError: the name is taken (see :meth:`check_installable`).
        """
        self.check_installable(entry, replace)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / entry.file
        with atomic_output(target) as temp:
            if move:
                os.replace(source, temp)
            else:
                shutil.copyfile(source, temp)
            problem = file_problem(entry, temp)
            if problem is not None:
                raise InputError(origin or source, f"{problem}; nothing installed")
        current = self._read(self.folder)
        kept = [old for old in current if old.name != entry.name]
        dropped = [old for old in current if old.name == entry.name and old.file != entry.file]
        try:
            write_manifest(kept + [entry], self.folder / MANIFEST)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        for old in dropped:
            (self.folder / old.file).unlink(missing_ok=True)
        return StoredModel(entry, target, False)

    def import_file(
        self,
        path: str | os.PathLike,
        entry: ModelEntry | None = None,
        replace: bool = False,
        task: str | tuple[str, ...] | None = None,
    ) -> StoredModel:
        """Installs a model file from disk (offline sites).

        Args:
            path: the weights file (its entry in ``entry``, or in a sidecar with the same stem and ``.json``:
                ``NAME.pt`` + ``NAME.json``), or a sidecar ``.json`` whose ``file`` names the weights beside it.
            entry: the manifest entry, when not in a sidecar.
            replace: replace an installed model of the same name.
            task: refuse a model of another task (a panel imports only models of its own task or tasks).

        Raises:
            InputError: a missing file or sidecar, a bad entry, a model of another task, or a file whose size or
                sha256 differ; nothing is installed.
            RegSegError: the name is taken.
        """
        path = Path(path)
        check_exists(path)
        if entry is not None:
            weights = path
        elif path.suffix.lower() == ".json":
            entry = read_entry(path)
            weights = path.parent / entry.file
        else:
            sidecar = path.with_suffix(".json")
            if not sidecar.is_file():
                raise InputError(path, f"no manifest entry: put it in {sidecar.name} beside the file (one JSON object)")
            entry = read_entry(sidecar)
            weights = path
        tasks = (task,) if isinstance(task, str) else task
        if tasks is not None and entry.task not in tasks:
            raise InputError(path, f"model {entry.name!r} is for {entry.task}, not {' or '.join(tasks)}; nothing installed")
        check_exists(weights)
        return self.install(entry, weights, move=False, replace=replace)

    def verify(self) -> list[ModelCheck]:
        """Every model's file checked against its entry (size and sha256)."""
        return [ModelCheck(model, file_problem(model.entry, model.path)) for model in self.list_models()]

    def remove(self, name: str) -> StoredModel:
        """Removes an installed model (its manifest entry, then its file).

        Raises:
            RegSegError: no such model, or it ships with RegSeg.
        """
        model = self.info(name)
        if model.shipped:
            raise RegSegError(f"model {name!r} ships with RegSeg and cannot be removed")
        write_manifest([entry for entry in self._read(self.folder) if entry.name != name], self.folder / MANIFEST)
        model.path.unlink(missing_ok=True)
        return model

    def partial_path(self, entry: ModelEntry) -> Path:
        """Where a download of ``entry`` collects its bytes until it is complete and checked."""
        return self.folder / f"{entry.file}{PARTIAL_SUFFIX}"

    def load_weights(self, name: str, map_location: Any = "cpu") -> Any:
        """The model's weights, after its sha256 matches, read with ``torch.load(weights_only=True)``.

        Args:
            name: the model.
            map_location: passed to ``torch.load`` (``"cpu"``, a device, ...).

        Raises:
            InputError: the file is missing or differs from its entry (nothing is loaded), or holds more than
                weights (objects that ``weights_only`` refuses).
        """
        model = self.info(name)
        problem = file_problem(model.entry, model.path)
        if problem is not None:
            raise InputError(model.path, f"{problem}; not loaded")
        import torch

        try:
            return torch.load(model.path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise InputError(model.path, "holds objects other than tensors and plain containers; refused, not loaded") from exc


def load_record(source: str, task: str) -> Any:
    """A model's record from a file (``model.pt`` of a run, or any existing path) or by its name in the store,
    read with ``torch.load(weights_only=True)`` (a stored model after its sha256 matches).

    Args:
        source: a file or a model name.
        task: the task the model must have when it comes from the store (:data:`RegSegLib.models.manifest.TASKS`).

    Raises:
        InputError: no such file or model, an unreadable file, or a stored model of another task.
    """
    path = Path(source)
    if path.suffix in (".pt", ".pth") or path.exists():
        if not path.is_file():
            raise InputError(source, "no such model file")
        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 -- any unreadable file is the same user error
            raise InputError(source, f"not a readable model file ({type(error).__name__})") from error
    store = ModelStore()
    model = store.info(source)
    if model.entry.task != task:
        article = "an" if task[0] in "aeiou" else "a"
        raise InputError(source, f"is a {model.entry.task} model, not {article} {task} one")
    return store.load_weights(source)
