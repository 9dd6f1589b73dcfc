"""Segmentation models: what a model file holds, and loading one from a file or the model store.

A model (seed 001's "weights + plan + label names") is a ``model.pt`` record: ``architecture``
(``plain_conv_unet``), ``plan`` (:class:`RegSegLib.segmentation.plan.Plan` as a dictionary), ``segments``
(per foreground label its name, colour and Slicer terminology entry), and either the weights (``state_dict``, a training run's
``best-METRIC/model.pt``; building the network needs MONAI) or the network traced for the plan's patch size
(``torchscript``, the shipped form: loads with torch alone). The store's manifest entry carries its sha256.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch

from RegSegLib.errors import InputError
from RegSegLib.io.segmentation_files import Segment
from RegSegLib.vocabulary import SEGMENTATION_ARCHITECTURES

PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.62, 0.55), (0.50, 0.68, 0.53), (0.39, 0.58, 0.87), (0.86, 0.83, 0.47), (0.72, 0.49, 0.82), (0.42, 0.79, 0.80),
)
"""Colours of segments that a model does not name (cycled)."""


@dataclass
class SegmentationModel:
    """A loaded segmentation network and what it needs.

    Attributes:
        network: ``[B, C, d, h, w] -> logits [B, classes, d, h, w]`` in evaluation mode.
        plan: the plan (spacing, transposes, normalisation, patch size, foreground labels).
        segments: one per foreground label: name, colour, terminology.
        source: where it came from (a model name or a file).
    """

    network: torch.nn.Module
    plan: dict[str, Any]
    segments: list[Segment]
    source: str

    @property
    def channels(self) -> int:
        """Image channels the model takes."""
        return int(self.plan["num_channels"])


def segments_of(plan: dict[str, Any], described: list[dict[str, Any]] | None = None) -> list[Segment]:
    """The segments of a plan's foreground labels: as ``described`` (``label``, ``name``, ``colour``,
    ``terminology``) where given, else ``label N`` in a colour of :data:`PALETTE`."""
    known = {int(item["label"]): item for item in described or []}
    segments = []
    for index, label in enumerate(int(value) for value in plan["foreground_labels"]):
        item = known.get(label, {})
        colour = tuple(float(c) for c in item.get("colour", PALETTE[index % len(PALETTE)]))
        segments.append(Segment(label, str(item.get("name", f"label {label}")), colour, item.get("terminology")))  # type: ignore[arg-type]
    return segments


def describe(segments: list[Segment]) -> list[dict[str, Any]]:
    """Segments as a model record stores them."""
    return [{"label": s.label, "name": s.name, "colour": list(s.colour), "terminology": s.terminology} for s in segments]


def build_network(record: dict[str, Any]) -> torch.nn.Module:
    """The PlainConvUNet of a training record (``config`` with its plan, ``state_dict``)."""
    from RegSegLib.networks.unet import plain_conv_unet

    plan = record["config"]["data"]["plan"]
    network = plain_conv_unet(int(plan["num_channels"]), int(plan["num_classes"]), plan["features_per_stage"], plan["strides"], plan["kernel_sizes"])
    own = network.state_dict()
    network.load_state_dict({key: value for key, value in record["state_dict"].items() if key in own or not _deep_supervision_head(key)})
    return network


def _deep_supervision_head(key: str) -> bool:
    """Whether a parameter belongs to DynUNet's deep-supervision output heads (training only)."""
    return key.startswith("deep_supervision_heads.") or ".super_head." in key


def shipped_record(network: torch.nn.Module, plan: dict[str, Any], segments: list[Segment], **extra: Any) -> dict[str, Any]:
    """What a shipped segmentation model file holds: the network traced for the plan's patch size."""
    import warnings

    example = torch.zeros(1, int(plan["num_channels"]), *(int(n) for n in plan["patch_size"]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(network.eval(), example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return {"architecture": SEGMENTATION_ARCHITECTURES[0], "plan": plan, "segments": describe(segments), "torchscript": buffer.getvalue(), **extra}


def load_segmentation_model(source: str, device: str | torch.device = "cpu") -> SegmentationModel:
    """Loads a segmentation model from a file (``model.pt``) or by its model-store name.

    Raises:
        InputError: no such model or file, not a segmentation model, or weights that do not fit it.
    """
    from RegSegLib.models.store import load_record

    record = load_record(source, "segmentation")
    if not isinstance(record, dict) or record.get("architecture") not in SEGMENTATION_ARCHITECTURES:
        raise InputError(source, "is not a segmentation model (no plain_conv_unet record)")
    if "torchscript" in record:
        network = torch.jit.load(io.BytesIO(record["torchscript"]), map_location="cpu")
        plan = record["plan"]
    elif "state_dict" in record and "config" in record:
        try:
            network = build_network(record)
        except RuntimeError as error:
            raise InputError(source, "weights do not fit the network its plan describes") from error
        plan = record["config"]["data"]["plan"]
    else:
        raise InputError(source, "holds neither weights with their plan nor a TorchScript network")
    return SegmentationModel(network.eval().to(device), plan, segments_of(plan, record.get("segments")), source)
