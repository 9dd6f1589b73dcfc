"""``regseg train list-models [--architecture NAME] [--input-size C@DxHxW]``: the trainable networks.

Like ClinicaDL's ``train list_models``: each architecture of the model group with its default arguments,
its parameter count, the size of its weights, and what it returns for an input size (a segmentation
network's topology is planned for that size at 1 mm, as the plan would). Training itself runs through the
Hydra scripts (``Scripts/run_affine_training.py``, ``Scripts/train_runner.py``).
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

from RegSegLib.vocabulary import AFFINE_ARCHITECTURES, SEGMENTATION_ARCHITECTURES

COMMAND = "train"
ORDER = 50
HELP = "describe the trainable networks (training runs through Scripts/run_*_training.py)"
DESCRIPTION = "Lists the architectures of the training configs' model group, with their size for an input size."
INPUT_SIZE = re.compile(r"^(\d+)@(\d+)x(\d+)x(\d+)$")


def input_size(text: str) -> tuple[int, int, int, int]:
    """``C@DxHxW`` as four positive whole numbers."""
    match = INPUT_SIZE.match(text.strip())
    if match is None or min(int(group) for group in match.groups()) < 1:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not C@DxHxW with positive whole numbers (e.g. 1@64x64x64)")
    channels, depth, height, width = (int(group) for group in match.groups())
    return channels, depth, height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list-models", help="each architecture, its parameters and its output for an input size")
    listing.add_argument("--architecture", choices=AFFINE_ARCHITECTURES + SEGMENTATION_ARCHITECTURES, help="only this architecture")
    listing.add_argument("--input-size", type=input_size, default=(1, 64, 64, 64), metavar="C@DxHxW",
                         help="the size of one image given to the network (default 1@64x64x64)")


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Builds each architecture with its default arguments and runs zero images of the input size through it."""
    from dataclasses import asdict

    import torch

    from RegSegLib.errors import InputError
    from RegSegLib.training.config import MODEL_CONFIGS

    channels, *shape = args.input_size
    names = [args.architecture] if args.architecture else list(MODEL_CONFIGS)
    for name in names:
        arguments = asdict(MODEL_CONFIGS[name]().model_args)
        if name in SEGMENTATION_ARCHITECTURES:
            network, shape_used, described = _segmentation_network(channels, shape, arguments)
            with torch.no_grad():
                output = network.eval()(torch.zeros(1, channels, *shape_used))
            what = f"input 1 x {channels}@{'x'.join(map(str, shape_used))} (the closest valid patch size); output: logits {list(output.shape)} (two classes)"
        else:
            if channels != 1:
                raise InputError("--input-size", f"the affine networks take one channel per image, not {channels}")
            from RegSegLib.networks.affine import build_affine_network

            network, described = build_affine_network(name, arguments).eval(), arguments
            images = torch.zeros(1, 1, *shape)
            with torch.no_grad():
                total, _ = network(images, images)
            what = f"input: moving and fixed 1@{'x'.join(map(str, shape))}; output: transform {list(total.shape)} (network-frame matrix per pair)"
        parameters = sum(parameter.numel() for parameter in network.parameters())
        print(f"{name}: {parameters:,} parameters ({parameters * 4 / 1e6:.1f} MB as float32)", flush=True)
        print(f"  arguments: {', '.join(f'{key}={value}' for key, value in described.items() if value is not None)}", flush=True)
        print(f"  {what}", flush=True)
    return 0


def _segmentation_network(channels: int, shape: list[int], arguments: dict) -> tuple[torch.nn.Module, tuple[int, ...], dict]:
    """A PlainConvUNet planned for an input size at 1 mm (two classes) and its topology."""
    from RegSegLib.networks.unet import plain_conv_unet
    from RegSegLib.segmentation.plan import network_topology

    topology = network_topology(shape, (1.0, 1.0, 1.0))
    stages = len(topology.strides)
    features = [min(arguments["base_features"] * 2**stage, arguments["max_features"]) for stage in range(stages)]
    network = plain_conv_unet(channels, 2, features, topology.strides, topology.kernel_sizes, deep_supervision=False)
    described = {**arguments, "n_stages": stages, "features_per_stage": features, "strides": [list(s) for s in topology.strides]}
    return network, tuple(topology.patch_size), described
