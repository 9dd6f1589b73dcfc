"""Where the images and label maps of a segmentation dataset lie: one :class:`PathFinder` per folder layout.

Two layouts are known (``basepath`` is the dataset folder; both folder names can be overridden):

* ``nnunet``, :class:`DefaultNNUnetFormatPathFinder` (nnU-Net's layout)::

      basepath/images_tr/NAME_XXXX.nii.gz   one file per channel, XXXX the 4-digit channel (0000, 0001, ...)
      basepath/labelsTr/NAME.nii.gz         the integer label map of case NAME

* ``registration``, :class:`RegistrationLayoutPathFinder` (the layout of the registration data, seed 000)::

      basepath/images/NAME.nii.gz           one channel
      basepath/masks/seg_NAME.nii.gz        the integer label map of case NAME

Volume files may be NIfTI (``.nii.gz``, ``.nii``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``,
``.mhd``); other files and hidden files are ignored. A case without a label map is allowed (an inference set)
unless :meth:`PathFinder.cases` is asked for labels.

A new layout is one subclass of :class:`PathFinder` implementing :meth:`PathFinder._get_all_paths` and
:meth:`PathFinder._extract_channelnames_from_folder`, entered in :data:`PATHFINDERS` under its config name;
the base class checks what they find (missing channels, label maps without an image) and builds the cases.

This module only looks at file names (no file is opened) and does not import torch.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from RegSegLib.errors import InputError
from RegSegLib.validation import check_choice

VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File name endings (any case) of the volume files a layout may hold."""

ImagePaths = dict[str, dict[str, Path]]
"""Image files of a dataset: case name -> channel name -> file."""

LabelPaths = dict[str, Path]
"""Label map files of a dataset: case name -> file."""


@dataclass
class Case:
    """One case of a segmentation dataset.

    Attributes:
        name: the case name (``NAME`` in the layout's file names).
        images: one file per channel, in channel order (:attr:`PathFinder.channel_names`).
        label: its integer label map, or ``None`` when the dataset has none for it.
    """

    name: str
    images: list[Path]
    label: Path | None


def split_volume_name(filename: str) -> tuple[str, str] | None:
    """``(stem, suffix)`` of a volume file name (``"a_0000.nii.gz"`` -> ``("a_0000", ".nii.gz")``).

    Returns:
        ``None`` for a hidden file or a name without one of :data:`VOLUME_SUFFIXES` (nor anything before it).
    """
    if filename.startswith("."):
        return None
    lower = filename.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)], filename[-len(suffix) :]
    return None


class PathFinder(ABC):
    """Finds the cases of a dataset folder laid out in one way.

    Subclasses name their default folders in :attr:`IMG_FOLDERNAME` and :attr:`SEG_FOLDERNAME` and implement
    :meth:`_get_all_paths` and :meth:`_extract_channelnames_from_folder`.

    Args:
        basepath: the dataset folder.
        img_foldername: its folder of images (the layout's default when ``None``).
        seg_foldername: its folder of label maps (the layout's default when ``None``).
    """

    IMG_FOLDERNAME: str = "images"
    SEG_FOLDERNAME: str = "labels"

    def __init__(
        self, basepath: str | os.PathLike, img_foldername: str | None = None, seg_foldername: str | None = None
    ) -> None:
        self.basepath = Path(basepath)
        self.img_foldername = self.IMG_FOLDERNAME if img_foldername is None else img_foldername
        self.seg_foldername = self.SEG_FOLDERNAME if seg_foldername is None else seg_foldername

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.basepath)!r}, {self.img_foldername!r}, {self.seg_foldername!r})"

    @property
    def image_folder(self) -> Path:
        """The folder of images."""
        return self.basepath / self.img_foldername

    @property
    def seg_folder(self) -> Path:
        """The folder of label maps."""
        return self.basepath / self.seg_foldername

    @property
    def channel_names(self) -> list[str]:
        """The channel names found in the image folder, in channel order (``["0000", "0001"]``)."""
        return self._extract_channelnames_from_folder()

    def cases(self, require_labels: bool = False) -> list[Case]:
        """Every case of the dataset, sorted by name.

        Args:
            require_labels: refuse a case without a label map (a training set).

        Returns:
            The cases, each with one image per channel of :attr:`channel_names`.

        Raises:
            InputError: the image folder is missing or holds no volume file; a file name that does not follow
                the layout; two files for the same case and channel; a case lacking a channel that another case
                has; a label map without an image; with ``require_labels``, a missing label folder or a case
                without a label map.
        """
        channel_names = self._extract_channelnames_from_folder()
        images, labels = self._get_all_paths()
        for name, label in sorted(labels.items()):
            if name not in images:
                raise InputError(label, f"label map has no image: no case {name!r} in {self.image_folder}")
        if require_labels and not self.seg_folder.is_dir():
            raise InputError(self.seg_folder, "label folder not found")
        cases = []
        for name in sorted(images):
            found = images[name]
            missing = [channel for channel in channel_names if channel not in found]
            if missing:
                example = next(images[other][missing[0]] for other in sorted(images) if missing[0] in images[other])
                raise InputError(
                    next(iter(found.values())),
                    f"case {name!r} lacks channel(s) {', '.join(missing)} that other cases have (e.g. {example.name})",
                )
            label = labels.get(name)
            if label is None and require_labels:
                image = found[channel_names[0]].name
                raise InputError(self.seg_folder, f"no label map for case {name!r} (image {image})")
            cases.append(Case(name, [found[channel] for channel in channel_names], label))
        return cases

    @abstractmethod
    def _get_all_paths(self) -> tuple[ImagePaths, LabelPaths]:
        """The image files by case and channel, and the label map files by case, as found in the folders.

        Raises:
            InputError: a file name that does not follow the layout, or two files for one case and channel.
        """

    @abstractmethod
    def _extract_channelnames_from_folder(self) -> list[str]:
        """The channel names the image folder holds, sorted (``["0000", "0001"]``).

        Raises:
            InputError: the image folder is missing, holds no volume file, or a file name that does not follow
                the layout.
        """

    def _volume_files(self, folder: Path, required: bool) -> list[tuple[str, Path]]:
        """``(stem, file)`` of every volume file of ``folder``, sorted by name.

        Args:
            folder: the folder to list.
            required: refuse a missing or empty folder (else a missing folder holds nothing).

        Raises:
            InputError: with ``required``, the folder is missing or holds no volume file.
        """
        if not folder.is_dir():
            if required:
                raise InputError(folder, "folder not found")
            return []
        files = []
        for path in sorted(folder.iterdir()):
            parts = split_volume_name(path.name)
            if parts is not None and path.is_file():
                files.append((parts[0], path))
        if required and not files:
            raise InputError(folder, f"holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
        return files


def _unique_by_name(entries: Iterable[tuple[str, Path]], what: str) -> dict[str, Path]:
    """``name -> file``; two files for one name (``a.nii.gz`` and ``a.nrrd``) are refused, naming both."""
    found: dict[str, Path] = {}
    for name, path in entries:
        if name in found:
            raise InputError(path, f"{what} {name!r} has two files: {found[name].name} and {path.name}")
        found[name] = path
    return found


class DefaultNNUnetFormatPathFinder(PathFinder):
    """nnU-Net's layout: ``images_tr/NAME_XXXX.nii.gz`` (XXXX the 4-digit channel) and ``labelsTr/NAME.nii.gz``."""

    IMG_FOLDERNAME = "images_tr"
    SEG_FOLDERNAME = "labelsTr"

    _IMAGE_STEM = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

    def _images(self) -> list[tuple[str, str, Path]]:
        """``(case, channel, file)`` of every image file.

        Raises:
            InputError: the image folder is missing or empty, or an image not named ``NAME_XXXX``.
        """
        images = []
        for stem, path in self._volume_files(self.image_folder, required=True):
            match = self._IMAGE_STEM.match(stem)
            if match is None:
                raise InputError(path, "image is not named NAME_XXXX with XXXX its 4-digit channel (case_0000.nii.gz)")
            images.append((match["case"], match["channel"], path))
        return images

    def _extract_channelnames_from_folder(self) -> list[str]:
        return sorted({channel for _, channel, _ in self._images()})

    def _get_all_paths(self) -> tuple[ImagePaths, LabelPaths]:
        images: ImagePaths = {}
        for case, channel, path in self._images():
            previous = images.setdefault(case, {}).get(channel)
            if previous is not None:
                raise InputError(
                    path, f"case {case!r} channel {channel} has two files: {previous.name} and {path.name}"
                )
            images[case][channel] = path
        labels = _unique_by_name(self._volume_files(self.seg_folder, required=False), "label map of case")
        return images, labels


class RegistrationLayoutPathFinder(PathFinder):
    """The registration data layout: ``images/NAME.nii.gz`` (one channel) and ``masks/seg_NAME.nii.gz``.

    Files of the label folder not starting with ``seg_`` are not label maps and are ignored, as the registration
    training reads this layout. The only channel is named ``0000``, like nnU-Net's first channel.
    """

    IMG_FOLDERNAME = "images"
    SEG_FOLDERNAME = "masks"
    CHANNEL_NAME = "0000"
    LABEL_PREFIX = "seg_"

    def _extract_channelnames_from_folder(self) -> list[str]:
        self._volume_files(self.image_folder, required=True)
        return [self.CHANNEL_NAME]

    def _get_all_paths(self) -> tuple[ImagePaths, LabelPaths]:
        images = _unique_by_name(self._volume_files(self.image_folder, required=True), "case")
        labels = _unique_by_name(
            (
                (stem[len(self.LABEL_PREFIX) :], path)
                for stem, path in self._volume_files(self.seg_folder, required=False)
                if stem.startswith(self.LABEL_PREFIX) and len(stem) > len(self.LABEL_PREFIX)
            ),
            "label map of case",
        )
        return {name: {self.CHANNEL_NAME: path} for name, path in images.items()}, labels


PATHFINDERS: dict[str, type[PathFinder]] = {
    "nnunet": DefaultNNUnetFormatPathFinder,
    "registration": RegistrationLayoutPathFinder,
}
"""Config name -> layout; a new :class:`PathFinder` subclass is entered here."""


def pathfinder(
    name: str, basepath: str | os.PathLike, img_foldername: str | None = None, seg_foldername: str | None = None
) -> PathFinder:
    """The path finder of a layout named in a config.

    Args:
        name: a key of :data:`PATHFINDERS` (``"nnunet"``, ``"registration"``).
        basepath: the dataset folder.
        img_foldername: the folder of images (the layout's default when ``None``).
        seg_foldername: the folder of label maps (the layout's default when ``None``).

    Raises:
        SettingsError: an unknown layout name (the message lists the known ones).
    """
    check_choice(name, list(PATHFINDERS), "pathfinder")
    return PATHFINDERS[name](basepath, img_foldername, seg_foldername)
