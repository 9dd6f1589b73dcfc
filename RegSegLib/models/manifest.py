"""The model manifest: what a trained model is, where it came from and what it expects, torch-free.

A manifest file is a JSON list of entries; a sidecar file (``NAME.json`` beside ``NAME.pt``) is one entry.
An entry, as JSON::

    {
      "name": "brain-affine", "task": "affine", "version": "1.0.0", "file": "brain-affine.pt",
      "sha256": "<64 lower-case hex digits>", "size": 123456, "licence": "Apache-2.0",
      "training_data": "OASIS-1, 414 T1 MR pairs", "budget": "1x H100, 40 min",
      "metrics": {"dice_mean": 0.81}, "reproduce": "python Scripts/train_affine.py ...",
      "input": {"channels": 1, "normalisation": "z-score", "spacing_mm": [2, 2, 2], "shape": null},
      "url": "https://..."            (optional)
    }

Every field but ``url`` and the input's ``spacing_mm`` and ``shape`` (``null``: any) is required, and unknown
fields are refused, so that a typing mistake in a
hand-written entry is an error instead of a silently missing value.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from RegSegLib.errors import InputError
from RegSegLib.validation import is_number
from RegSegLib.io.files import atomic_output

TASKS: tuple[str, ...] = ("affine", "elastic", "segmentation", "supervoxel", "synthesis")
"""What a model does: affine or elastic registration, segmentation, supervoxel registration, image synthesis."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
RESERVED_FILES: tuple[str, ...] = ("manifest.json",)
PARTIAL_SUFFIX = ".partial"
"""Suffix of a download in progress; a model file may not end with it."""


class ManifestError(InputError):
    """An entry that breaks the manifest schema (the message names the model and the field)."""

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)


def _finite_number(value: Any) -> bool:
    """A real, finite number (:func:`RegSegLib.validation.is_number`, NaN and inf excluded)."""
    return is_number(value) and math.isfinite(value)


def _triple(value: Any, what: str, integer: bool) -> tuple | None:
    """``value`` as three positive numbers (whole when ``integer``), or ``None``."""
    if value is None:
        return None
    kind = "whole numbers" if integer else "numbers"
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ManifestError(f"{what} must be three positive {kind} or null, got {value!r}")
    for item in value:
        if not _finite_number(item) or item <= 0 or (integer and not float(item).is_integer()):
            raise ManifestError(f"{what} must be three positive {kind} or null, got {value!r}")
    return tuple(int(item) if integer else float(item) for item in value)


@dataclass(frozen=True)
class InputContract:
    """What a model expects of its input images.

    Args:
        channels: number of image channels the model takes.
        normalisation: how intensities are normalised before the model sees them (e.g. ``z-score``).
        spacing_mm: voxel spacing (I, J, K) in mm the model was trained at; ``None`` for any.
        shape: voxel grid (K, J, I) the model takes; ``None`` for any.
    """

    channels: int
    normalisation: str
    spacing_mm: tuple[float, float, float] | None = None
    shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not _finite_number(self.channels) or not float(self.channels).is_integer() or self.channels < 1:
            raise ManifestError(f"input channels must be a positive whole number, got {self.channels!r}")
        if not isinstance(self.normalisation, str) or not self.normalisation.strip():
            raise ManifestError("input normalisation must be a non-empty text")
        object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "spacing_mm", _triple(self.spacing_mm, "input spacing_mm", integer=False))
        object.__setattr__(self, "shape", _triple(self.shape, "input shape", integer=True))

    def text(self) -> str:
        """One line for people: channels, spacing, shape and normalisation."""
        spacing = "any spacing" if self.spacing_mm is None else "x".join(f"{s:g}" for s in self.spacing_mm) + " mm"
        shape = "any shape" if self.shape is None else "x".join(str(s) for s in self.shape) + " voxels"
        return f"{self.channels} channel(s), {spacing}, {shape}, {self.normalisation} intensities"


@dataclass(frozen=True)
class ModelEntry:
    """One trained model of the manifest.

    Args:
        name: unique name (letters, digits, ``.``, ``_``, ``-``).
        task: one of :data:`TASKS`.
        version: the model's version (text, e.g. ``1.0.0``).
        file: name of the weights file (no folder).
        sha256: SHA-256 of the weights file, 64 lower-case hex digits.
        size: size of the weights file in bytes.
        licence: licence of the weights (e.g. an SPDX identifier).
        training_data: the data the model was trained on (provenance).
        budget: how it was trained (hardware and time).
        reproduce: the command that trains it again.
        input: what it expects of its input.
        metrics: name -> value of its evaluation (may be empty).
        url: where it can be downloaded from (``http``/``https``), or ``None``.
    """

    name: str
    task: str
    version: str
    file: str
    sha256: str
    size: int
    licence: str
    training_data: str
    budget: str
    reproduce: str
    input: InputContract
    metrics: Mapping[str, float]
    url: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ManifestError(f"model name {self.name!r} must be 1-100 letters, digits, '.', '_' or '-'")
        prefix = f"model {self.name!r}:"
        if self.task not in TASKS:
            raise ManifestError(f"{prefix} unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        for what in ("version", "licence", "training_data", "budget", "reproduce"):
            value = getattr(self, what)
            if not isinstance(value, str) or not value.strip():
                raise ManifestError(f"{prefix} {what} must be a non-empty text")
        bad_file = not isinstance(self.file, str) or not _NAME.fullmatch(self.file)
        if bad_file or self.file in RESERVED_FILES or self.file.endswith(PARTIAL_SUFFIX):
            raise ManifestError(f"{prefix} file {self.file!r} must be a plain file name (no folder, not a reserved name)")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise ManifestError(f"{prefix} sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if not _finite_number(self.size) or not float(self.size).is_integer() or self.size <= 0:
            raise ManifestError(f"{prefix} size must be a positive whole number of bytes, got {self.size!r}")
        if not isinstance(self.input, InputContract):
            raise ManifestError(f"{prefix} input must be an InputContract")
        if not isinstance(self.metrics, Mapping) or not all(
            isinstance(key, str) and _finite_number(value) for key, value in self.metrics.items()
        ):
            raise ManifestError(f"{prefix} metrics must map names to finite numbers, got {self.metrics!r}")
        if self.url is not None and (not isinstance(self.url, str) or not self.url.startswith(("http://", "https://"))):
            raise ManifestError(f"{prefix} url must start with http:// or https://, got {self.url!r}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "metrics", {key: float(value) for key, value in self.metrics.items()})

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready dict (tuples as lists)."""
        data = asdict(self)
        data["input"] = {key: list(value) if isinstance(value, tuple) else value for key, value in data["input"].items()}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelEntry":
        """The entry a JSON object describes.

        Raises:
            ManifestError: missing or unknown fields, or a value the schema does not accept.
        """
        if not isinstance(data, dict):
            raise ManifestError(f"a model entry must be a JSON object, got {type(data).__name__}")
        label = f"model {data.get('name')!r}:"
        _check_keys(data, cls, label)
        contract = data["input"]
        if not isinstance(contract, dict):
            raise ManifestError(f"{label} input must be a JSON object")
        _check_keys(contract, InputContract, f"{label} input")
        try:
            expected = InputContract(**contract)
        except ManifestError as exc:
            raise ManifestError(f"{label} {exc.problem}") from exc
        return cls(**{**data, "input": expected})


def _check_keys(data: dict, kind: type, label: str) -> None:
    """Raises :class:`ManifestError` for a missing required field or an unknown one of ``kind``."""
    known = [item.name for item in fields(kind)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ManifestError(f"{label} unknown field {unknown[0]!r}; the fields are {', '.join(known)}")
    missing = [item.name for item in fields(kind) if item.name not in data and item.default is MISSING]
    if missing:
        raise ManifestError(f"{label} missing field {missing[0]!r}")


def metrics_text(metrics: Mapping[str, float], most: int | None = None) -> str:
    """``name value`` pairs for people (``dice_mean 0.812, hd95_mm 3.4``); ``no metrics`` when empty.

    Args:
        metrics: the entry's metrics.
        most: show at most this many (in the manifest's order), then ``...``.
    """
    items = list(metrics.items())
    shown = items if most is None else items[:most]
    text = ", ".join(f"{key} {value:.4g}" for key, value in shown) or "no metrics"
    return text + (", ..." if len(shown) < len(items) else "")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file as 64 lower-case hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(entry: ModelEntry, path: str | os.PathLike) -> str | None:
    """What is wrong with ``path`` as ``entry``'s weights file (missing, size, checksum), or ``None``."""
    path = Path(path)
    if not path.is_file():
        return "file not found"
    size = path.stat().st_size
    if size != entry.size:
        return f"is {size} bytes but the manifest entry of model {entry.name!r} says {entry.size}"
    digest = file_sha256(path)
    if digest != entry.sha256:
        return f"sha256 is {digest} but the manifest entry of model {entry.name!r} says {entry.sha256}"
    return None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read ({exc})") from exc


def read_manifest(path: str | os.PathLike) -> list[ModelEntry]:
    """The entries of a manifest file (a JSON list).

    Raises:
        InputError: naming the file: missing, not JSON, not a list, a bad entry, a name or file listed twice.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise InputError(path, "must hold a JSON list of model entries")
    try:
        entries = [ModelEntry.from_dict(item) for item in data]
    except ManifestError as exc:
        raise InputError(path, exc.problem) from exc
    for what in ("name", "file"):
        values = [getattr(entry, what) for entry in entries]
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            raise InputError(path, f"{what} {twice[0]!r} is listed twice")
    return entries


def read_entry(path: str | os.PathLike) -> ModelEntry:
    """The one entry of a sidecar file (a JSON object).

    Raises:
        InputError: naming the file.
    """
    path = Path(path)
    data = _read_json(path)
    try:
        return ModelEntry.from_dict(data)
    except ManifestError as exc:
        raise InputError(path, exc.problem) from exc


def write_manifest(entries: list[ModelEntry], path: str | os.PathLike) -> None:
    """Writes ``entries`` as a manifest file (indented JSON), atomically: a temporary name, then a rename."""
    text = json.dumps([entry.to_dict() for entry in entries], indent=2) + "\n"
    with atomic_output(path) as temp:
        Path(temp).write_text(text, encoding="utf-8")
