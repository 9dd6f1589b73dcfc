"""Learned affine initialisation (HyReg): a trained network's prediction, as the start of the iterative
stages or alone (``--method network``).

A model is a ``model.pt`` record saved by a training run (``best-METRIC/model.pt``: weights and the run's
resolved configuration; the network is built with MONAI), or a model-store entry whose record holds the
network as a TorchScript archive (``torchscript``, :func:`~RegSegLib.networks.affine.torchscript_bytes`:
loads without MONAI, whose import alone takes seconds). Its input contract is the configuration's ``data``
section: the network grid's shape, and its spacing (``null``: fitted to the field of view of the pair,
:func:`RegSegLib.networks.inputs.network_spacing`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from RegSegLib.errors import InputError
from RegSegLib.transforms import AffineTransform
from RegSegLib.volume import Volume
from RegSegLib.vocabulary import AFFINE_ARCHITECTURES


@dataclass
class AffineModel:
    """A loaded affine network and its input contract.

    Attributes:
        network: :class:`~RegSegLib.networks.affine.AffineParamsNet`, or its TorchScript archive, in
            evaluation mode; ``(moving, fixed)`` -> composed network-frame matrices (first output).
        shape: network grid size (D, H, W).
        spacing_mm: network grid spacing; ``None``: fitted to the pair's field of view.
        family: the family it predicts.
        source: where it came from (a model name or a file), for messages and metrics.json.
    """

    network: torch.nn.Module
    shape: tuple[int, int, int]
    spacing_mm: float | None
    family: str
    source: str


def load_affine_model(source: str, device: str | torch.device = "cpu") -> AffineModel:
    """Loads an affine model from a file (``model.pt`` of a run) or by its model-store name.

    Raises:
        InputError: no such model or file, a record that is not an affine model, or weights that do not fit it.
    """
    from RegSegLib.models.store import load_record

    record = load_record(source, "affine")
    if not isinstance(record, dict) or record.get("architecture") not in AFFINE_ARCHITECTURES or "config" not in record:
        raise InputError(source, "is not an affine registration model (no affine_params or affine_matrix record)")
    config: dict[str, Any] = record["config"]
    args = config["model_config"]["model_args"]
    if "torchscript" in record:
        network = torch.jit.load(io.BytesIO(record["torchscript"]), map_location="cpu")
    elif "state_dict" in record:
        from RegSegLib.networks.affine import build_affine_network

        network = build_affine_network(record["architecture"], args)
        try:
            network.load_state_dict(record["state_dict"])
        except RuntimeError as error:
            raise InputError(source, f"weights do not fit the {record['architecture']} network it names") from error
    else:
        raise InputError(source, "holds neither weights nor a TorchScript network")
    network.eval().to(device)
    data = config["data"]
    return AffineModel(network, tuple(int(n) for n in data["shape"]), data.get("spacing_mm"), args["family"], source)


def inference_record(network: torch.nn.Module, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a shipped affine model file holds: the architecture, the training configuration (``model_config``
    and ``data`` at least) and the network as a TorchScript archive for the configuration's input shape;
    ``extra`` adds fields (epoch, selection metric and value)."""
    from RegSegLib.networks.affine import torchscript_bytes

    shape = [int(n) for n in config["data"]["shape"]]
    architecture = config["model_config"]["name"]
    return {"architecture": architecture, "config": config, "torchscript": torchscript_bytes(network, shape), **extra}


def network_to_ras(total: np.ndarray, spacing_mm: float, fixed_centre: np.ndarray, moving_centre: np.ndarray) -> np.ndarray:
    """The RAS fixed-to-moving matrix ``[4, 4]`` of a network-frame prediction ``total`` (translation in
    network voxels): ``T(p) = c_m + s t + A (p - c_f)``."""
    linear, translation = total[:3, :3], total[:3, 3] * spacing_mm
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = moving_centre + translation - linear @ fixed_centre
    return matrix


@torch.no_grad()
def predict_affine(model: AffineModel, fixed: Volume, moving: Volume) -> AffineTransform:
    """The network's fixed-to-moving transform (RAS) for a pair of volumes.

    Each image is read onto its network grid (centred on its own field of view, axis-aligned, isotropic),
    robustly scaled to [0, 1], and both go through the network once.
    """
    from RegSegLib.networks.inputs import network_grid, network_input, network_spacing, prepared_for

    spacing = network_spacing([fixed.grid, moving.grid], model.shape, model.spacing_mm)
    device = next(model.network.parameters()).device
    inputs = []
    for volume in (moving, fixed):
        image = prepared_for(volume, spacing)
        inputs.append(network_input(image, network_grid(volume.grid.centre_ras, model.shape, spacing))[None].to(device))
    output = model.network(*inputs)
    total = output if isinstance(output, torch.Tensor) else output[0]
    matrix = network_to_ras(total[0].double().cpu().numpy(), spacing, fixed.grid.centre_ras, moving.grid.centre_ras)
    return AffineTransform(matrix)
