"""Ships the best model of a segmentation training run: a TorchScript record (network, plan, segments) in
RegSegLib/models/shipped and its manifest entry (sha256, size, licence, training data, budget, metrics, the
command that reproduces it).

    python Scripts/ship_segmentation_model.py RUN_FOLDER --name regseg-prostate-gland-mr --modality mr \\
        --budget "..." --reproduce "..." [--metric dice] [--metrics held_out.json] [--version 1.0.0]

The segment is the prostate gland (Slicer's General Anatomy terminology, SNOMED CT 41216001). ``--metrics``
is a JSON object of figures measured on held-out cases (bench/segmentation); the run's own best validation
value is added as ``validation_METRIC``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODALITIES = {"mr": "MR", "us": "transrectal ultrasound"}
"""``--modality`` -> the images' description in the model card (their labels are ``<modality>_labels``)."""
TRAINING_DATA = (
    "prostate-mr-us (DeepReg demo data, Apache-2.0) {modality} volumes of cases case000000-case000021 with the gland "
    "(channel 0 of {labels}); fold {fold} of 5 (cases {validation}) for model selection; cases case000022-case000026 "
    "never used (the test set)"
)


def main() -> None:
    import torch

    from RegSegLib.io.segmentation_files import PROSTATE_COLOUR, PROSTATE_TERMINOLOGY
    from RegSegLib.models.manifest import InputContract, ModelEntry, file_sha256, read_manifest, write_manifest
    from RegSegLib.segmentation.models import build_network, segments_of, shipped_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--modality", required=True, choices=tuple(MODALITIES), help="the prostate-mr-us images it was trained on")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--metric", default="dice", help="selection metric whose best model ships")
    parser.add_argument("--metrics", type=Path, help="JSON object of held-out figures")
    parser.add_argument("--budget", required=True)
    parser.add_argument("--reproduce", required=True)
    parser.add_argument("--shipped", type=Path, default=ROOT / "RegSegLib" / "models" / "shipped")
    args = parser.parse_args()

    record = torch.load(args.run / f"best-{args.metric}" / "model.pt", map_location="cpu", weights_only=True)
    config = record["config"]
    plan = config["data"]["plan"]
    gland = {"label": 1, "name": "prostate", "colour": list(PROSTATE_COLOUR), "terminology": PROSTATE_TERMINOLOGY}
    shipped = shipped_record(build_network(record), plan, segments_of(plan, [gland]), epoch=record["epoch"], metric=record["metric"], value=record["value"])
    path = args.shipped / f"{args.name}.pt"
    torch.save(shipped, path)
    metrics = {f"validation_{args.metric}": float(record["value"])}
    if args.metrics:
        metrics.update({key: float(value) for key, value in json.loads(args.metrics.read_text()).items()})
    spacing = [float(s) for s in plan["spacing"]][::-1]
    entry = ModelEntry(
        name=args.name, task="segmentation", version=args.version, file=path.name, sha256=file_sha256(path),
        size=path.stat().st_size, licence="Apache-2.0 (weights); training data Apache-2.0",
        training_data=TRAINING_DATA.format(
            modality=MODALITIES[args.modality], labels=f"{args.modality}_labels", fold=config["data"]["fold"],
            validation=", ".join(config["data"]["validation_patients"]),
        ),
        budget=args.budget, reproduce=args.reproduce,
        input=InputContract(
            channels=int(plan["num_channels"]), normalisation="per-image z-score after resampling to the plan's spacing",
            spacing_mm=tuple(spacing), shape=None,
        ),
        metrics=metrics,
    )
    manifest = args.shipped / "manifest.json"
    entries = [existing for existing in read_manifest(manifest) if existing.name != args.name]
    write_manifest(entries + [entry], manifest)
    print(f"ship_segmentation_model: {path} ({entry.size / 1e6:.2f} MB, sha256 {entry.sha256[:12]}...)")


if __name__ == "__main__":
    main()
