"""Trains a segmentation network (seed 001) with Hydra overrides and multiruns.

    python Scripts/train_runner.py --config-name=anatomy_config.yaml data.basepath=DATASET [key=value ...]
    python Scripts/train_runner.py --config-name=lesion_config.yaml data.basepath=DATASET
    python Scripts/train_runner.py --config-name=anatomy_config.yaml -m data.fold=0,1 devices=[1]
    python Scripts/train_runner.py --config-name=anatomy_config.yaml continue_from=RUN_FOLDER [epochs=300 ...]
    Slicer --python-script Scripts/train_runner.py --config-name=anatomy_config.yaml data.basepath=DATASET

The dataset is fingerprinted and planned when the run starts (:mod:`RegSegLib.segmentation.plan`); the run
folder keeps the resolved configuration, plan included (:mod:`RegSegLib.training.runner`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from RegSegLib.training.launch import launch  # noqa: E402

if __name__ == "__main__":
    launch("anatomy_config")
