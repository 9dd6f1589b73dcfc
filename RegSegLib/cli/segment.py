"""``regseg segment IMAGE [IMAGE2 ...] --model NAME|FILE -o OUT``: segments an image with a trained model.

Writes into the folder OUT: ``labels.nii.gz`` (the label map on the first image's grid),
``segmentation.seg.nrrd`` (the same as a Slicer segmentation with the model's segment names, colours and
terminology) and ``metrics.json`` (model, settings, volume of each segment, times).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from RegSegLib.vocabulary import DEVICES

COMMAND = "segment"
ORDER = 15
HELP = "segment an image with a trained model (e.g. the prostate gland in MR or ultrasound)"
DESCRIPTION = (
    "Segments IMAGE (and further sequences IMAGE2 ... when the model takes several channels; they are resampled "
    "onto IMAGE's grid in physical space) with a segmentation model, and writes into the folder OUT: labels.nii.gz, "
    "segmentation.seg.nrrd (for Slicer) and metrics.json."
)
OUTPUTS = ("labels.nii.gz", "segmentation.seg.nrrd", "metrics.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image(s), one per channel the model takes")
    parser.add_argument("--model", required=True, metavar="NAME|FILE", help="a name from 'regseg models list --task segmentation' or a model.pt")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--no-mirroring", action="store_true", help="skip the mirroring test-time augmentation (8 times faster)")
    parser.add_argument("--largest-component", action="store_true", help="keep each segment's largest connected component")
    parser.add_argument("--device", choices=DEVICES, default="auto")


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Reads the model, then the images, segments and writes the outputs atomically."""
    from RegSegLib.cli.runtime import StagingFolder
    from RegSegLib.errors import InputError
    from RegSegLib.io.files import refuse_overwriting_inputs
    from RegSegLib.io.prefetch import read_ahead

    if not args.output.strip():
        raise InputError("-o/--output", "is empty; name an output folder")
    output = Path(args.output)
    refuse_overwriting_inputs([output, *(output / name for name in OUTPUTS)], args.images)
    staging = StagingFolder(output, OUTPUTS)
    try:
        report(0.0, "reading the model")
        read_ahead(args.images)
        started = time.perf_counter()

        import numpy as np

        from RegSegLib.evaluation import json_ready
        from RegSegLib.io import write_volume
        from RegSegLib.io.checks import read_image
        from RegSegLib.io.segmentation_files import write_segmentation_nrrd
        from RegSegLib.runtime import resolve_device
        from RegSegLib.segmentation.inference import segment
        from RegSegLib.segmentation.models import load_segmentation_model

        device = resolve_device(args.device)
        model = load_segmentation_model(args.model, device)
        if len(args.images) != model.channels:
            raise InputError(args.images[-1], f"the model {args.model} takes {model.channels} image(s), {len(args.images)} given")
        report(0.05, "reading the images")
        images = [read_image(path) for path in args.images]
        read_seconds = time.perf_counter() - started
        segment_started = time.perf_counter()
        labels = segment(
            model.network, model.plan, images, mirror=not args.no_mirroring, largest_component=args.largest_component,
            device=device, report=lambda fraction: report(0.1 + 0.8 * fraction, "segmenting"),
        )
        segment_seconds = time.perf_counter() - segment_started
        report(0.92, "writing results")
        write_volume(labels, staging.file("labels.nii.gz"))
        write_segmentation_nrrd(labels, model.segments, staging.file("segmentation.seg.nrrd"))
        voxel_ml = float(abs(np.linalg.det(labels.ijk_to_ras[:3, :3]))) / 1000.0
        volumes = {s.name: float((labels.data == s.label).sum()) * voxel_ml for s in model.segments}
        metrics: dict[str, Any] = {
            "command": COMMAND, "images": args.images, "model": args.model, "device": str(device),
            "mirroring": not args.no_mirroring, "largest_component": bool(args.largest_component),
            "segments": [{"label": s.label, "name": s.name, "volume_ml": volumes[s.name]} for s in model.segments],
            "seconds": {"read": read_seconds, "segment": segment_seconds, "total": time.perf_counter() - started},
        }
        staging.file("metrics.json").write_text(json.dumps(json_ready(metrics), indent=2) + "\n")
        written = staging.commit()
    finally:
        staging.cleanup()
    report(1.0, "done")
    for item in metrics["segments"]:
        if item["volume_ml"] == 0.0:
            print(f"regseg: warning: segment '{item['name']}' is empty: check the image and the model", file=sys.stderr, flush=True)
    sizes = ", ".join(f"{item['name']} {item['volume_ml']:.2f} ml" for item in metrics["segments"])
    print(f"regseg: segmented in {metrics['seconds']['total']:.1f} s on {device}; {sizes}")
    print(f"regseg: wrote {', '.join(str(p) for p in written)}", flush=True)
    return 0
