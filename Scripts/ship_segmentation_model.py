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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from Scripts.shipping import best_record, ship, shipping_parser  # noqa: E402

MODALITIES = {"mr": "MR", "us": "transrectal ultrasound"}
"""``--modality`` -> the images' description in the model card (their labels are ``<modality>_labels``)."""
TRAINING_DATA = (
    "prostate-mr-us (DeepReg demo data, Apache-2.0) {modality} volumes of cases case000000-case000021 with the gland "
    "(channel 0 of {labels}); fold {fold} of 5 (cases {validation}) for model selection; cases case000022-case000026 "
    "never used (the test set)"
)


def main() -> None:
    from RegSegLib.io.segmentation_files import PROSTATE_COLOUR, PROSTATE_TERMINOLOGY
    from RegSegLib.models.manifest import InputContract
    from RegSegLib.segmentation.models import build_network, segments_of, shipped_record

    parser = shipping_parser(__doc__.splitlines()[0], "dice")
    parser.add_argument("--modality", required=True, choices=tuple(MODALITIES), help="the prostate-mr-us images it was trained on")
    args = parser.parse_args()
    record = best_record(args)
    config = record["config"]
    plan = config["data"]["plan"]
    gland = {"label": 1, "name": "prostate", "colour": list(PROSTATE_COLOUR), "terminology": PROSTATE_TERMINOLOGY}
    shipped = shipped_record(build_network(record), plan, segments_of(plan, [gland]), epoch=record["epoch"], metric=record["metric"], value=record["value"])
    ship(
        args, shipped, record, task="segmentation", licence="Apache-2.0 (weights); training data Apache-2.0",
        training_data=TRAINING_DATA.format(
            modality=MODALITIES[args.modality], labels=f"{args.modality}_labels", fold=config["data"]["fold"],
            validation=", ".join(config["data"]["validation_patients"]),
        ),
        input=InputContract(
            channels=int(plan["num_channels"]), normalisation="per-image z-score after resampling to the plan's spacing",
            spacing_mm=tuple(float(s) for s in plan["spacing"][::-1]), shape=None,
        ),
    )


if __name__ == "__main__":
    main()
