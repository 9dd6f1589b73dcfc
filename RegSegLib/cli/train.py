"""``regseg train list-models [--architecture NAME] [--input-size C@DxHxW]``: the trainable networks.

Like ClinicaDL's ``train list_models``: each architecture of the model group with its default arguments,
its parameter count, the size of its weights, and what it returns for an input size. Training itself runs
through the Hydra scripts (``Scripts/run_affine_training.py``).
"""

from __future__ import annotations

import argparse
import re
from typing import Callable

from RegSegLib.vocabulary import AFFINE_ARCHITECTURES

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
    listing.add_argument("--architecture", choices=AFFINE_ARCHITECTURES, help="only this architecture")
    listing.add_argument("--input-size", type=input_size, default=(1, 64, 64, 64), metavar="C@DxHxW",
                         help="the size of one image given to the network (default 1@64x64x64)")


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Builds each architecture with its default arguments and runs one pair of zero images through it."""
    from dataclasses import asdict

    import torch

    from RegSegLib.errors import InputError
    from RegSegLib.networks.affine import build_affine_network
    from RegSegLib.training.config import MODEL_CONFIGS

    channels, *shape = args.input_size
    if channels != 1:
        raise InputError("--input-size", f"the affine networks take one channel per image, not {channels}")
    names = [args.architecture] if args.architecture else list(MODEL_CONFIGS)
    for name in names:
        arguments = asdict(MODEL_CONFIGS[name]().model_args)
        network = build_affine_network(name, arguments).eval()
        parameters = sum(parameter.numel() for parameter in network.parameters())
        images = torch.zeros(1, 1, *shape)
        with torch.no_grad():
            total, _ = network(images, images)
        print(f"{name}: {parameters:,} parameters ({parameters * 4 / 1e6:.1f} MB as float32)", flush=True)
        print(f"  arguments: {', '.join(f'{key}={value}' for key, value in arguments.items())}", flush=True)
        print(f"  input: moving and fixed 1@{'x'.join(map(str, shape))}; output: transform {list(total.shape)} "
              "(network-frame matrix per pair)", flush=True)
    return 0
