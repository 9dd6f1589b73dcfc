"""Ships the best model of an affine training run: a TorchScript record in RegSegLib/models/shipped and its
manifest entry (sha256, size, licence, training data, budget, metrics, the command that reproduces it).

    python Scripts/ship_affine_model.py RUN_FOLDER --name regseg-affine-rigid --budget "..." \\
        --reproduce "..." [--metric target_error_mm] [--metrics metrics.json] [--version 1.0.0]

``--metrics`` is a JSON object of figures measured on held-out data (e.g. by bench/affine); the run's own
best validation value is added as ``validation_METRIC``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from Scripts.shipping import best_record, ship, shipping_parser  # noqa: E402

TRAINING_DATA = (
    "synthetic pairs (whole rotation sphere, intensity, label-map and field-of-view augmentation) of: brain-mr "
    "subject_a T1 + aseg (voxelmorph/learn2reg, Apache-2.0); prostate-mr-us MR and US cases 0-21 + gland (DeepReg, "
    "Apache-2.0); abdomen-ct example_ct + TotalSegmentator labels (Apache-2.0); ProstateX-0001 T2 axial (TCIA, CC BY 3.0). "
    "Never seen: brain subject_b, prostate cases 22-26, abdomen example_mr_sm, ProstateX-0000"
)


def main() -> None:
    from RegSegLib.models.manifest import InputContract
    from RegSegLib.networks.affine import build_affine_network
    from RegSegLib.registration.learned import inference_record

    args = shipping_parser(__doc__.splitlines()[0], "target_error_mm").parse_args()
    record = best_record(args)
    config = record["config"]
    network = build_affine_network(config["model_config"]["name"], config["model_config"]["model_args"])
    network.load_state_dict(record["state_dict"])
    shape = [int(n) for n in config["data"]["shape"]]
    shipped = inference_record(network, config, epoch=record["epoch"], metric=record["metric"], value=record["value"])
    spacing = config["data"]["spacing_mm"]
    ship(
        args, shipped, record, task="affine", licence="Apache-2.0 (weights); training data under Apache-2.0 and CC BY 3.0",
        training_data=TRAINING_DATA,
        input=InputContract(
            channels=1, normalisation="0.5-99.5 percentile to [0, 1] on a network grid centred on each image",
            spacing_mm=None if spacing is None else (spacing,) * 3, shape=tuple(shape),
        ),
    )


if __name__ == "__main__":
    main()
