"""Ships the best model of an affine training run: a TorchScript record in RegSegLib/models/shipped and its
manifest entry (sha256, size, licence, training data, budget, metrics, the command that reproduces it).

    python Scripts/ship_affine_model.py RUN_FOLDER --name regseg-affine-rigid --budget "..." \\
        --reproduce "..." [--metric target_error_mm] [--metrics metrics.json] [--version 1.0.0]

``--metrics`` is a JSON object of figures measured on held-out data (e.g. by bench/affine); the run's own
best validation value is added as ``validation_METRIC``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRAINING_DATA = (
    "synthetic pairs (whole rotation sphere, intensity, label-map and field-of-view augmentation) of: brain-mr "
    "subject_a T1 + aseg (voxelmorph/learn2reg, Apache-2.0); prostate-mr-us MR and US cases 0-21 + gland (DeepReg, "
    "Apache-2.0); abdomen-ct example_ct + TotalSegmentator labels (Apache-2.0); ProstateX-0001 T2 axial (TCIA, CC BY 3.0). "
    "Never seen: brain subject_b, prostate cases 22-26, abdomen example_mr_sm, ProstateX-0000"
)


def main() -> None:
    import torch

    from RegSegLib.models.manifest import InputContract, ModelEntry, file_sha256, read_manifest, write_manifest
    from RegSegLib.networks.affine import build_affine_network
    from RegSegLib.registration.learned import inference_record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--metric", default="target_error_mm", help="selection metric whose best model ships")
    parser.add_argument("--metrics", type=Path, help="JSON object of held-out figures")
    parser.add_argument("--budget", required=True)
    parser.add_argument("--reproduce", required=True)
    parser.add_argument("--shipped", type=Path, default=ROOT / "RegSegLib" / "models" / "shipped")
    args = parser.parse_args()

    record = torch.load(args.run / f"best-{args.metric}" / "model.pt", map_location="cpu", weights_only=True)
    config = record["config"]
    network = build_affine_network(config["model_config"]["name"], config["model_config"]["model_args"])
    network.load_state_dict(record["state_dict"])
    shape = [int(n) for n in config["data"]["shape"]]
    shipped = inference_record(network, config, epoch=record["epoch"], metric=record["metric"], value=record["value"])
    path = args.shipped / f"{args.name}.pt"
    torch.save(shipped, path)
    metrics = {f"validation_{args.metric}": float(record["value"])}
    if args.metrics:
        metrics.update({key: float(value) for key, value in json.loads(args.metrics.read_text()).items()})
    spacing = config["data"]["spacing_mm"]
    entry = ModelEntry(
        name=args.name, task="affine", version=args.version, file=path.name, sha256=file_sha256(path),
        size=path.stat().st_size, licence="Apache-2.0 (weights); training data under Apache-2.0 and CC BY 3.0",
        training_data=TRAINING_DATA, budget=args.budget, reproduce=args.reproduce,
        input=InputContract(
            channels=1, normalisation="0.5-99.5 percentile to [0, 1] on a network grid centred on each image",
            spacing_mm=None if spacing is None else (spacing,) * 3, shape=tuple(shape),
        ),
        metrics=metrics,
    )
    manifest = args.shipped / "manifest.json"
    entries = [existing for existing in read_manifest(manifest) if existing.name != args.name]
    write_manifest(entries + [entry], manifest)
    print(f"ship_affine_model: {path} ({entry.size / 1e6:.1f} MB, sha256 {entry.sha256[:12]}...)")


if __name__ == "__main__":
    main()
