"""Trains a learned affine registration network (seed 000) with Hydra overrides and multiruns.

    python Scripts/run_affine_training.py data.roots=[DATASET] [key=value ...]
    python Scripts/run_affine_training.py -m data.fold=0,1 devices=[1] data.roots=[DATASET]
    python Scripts/run_affine_training.py continue_from=RUN_FOLDER [epochs=150 ...]
    Slicer --python-script Scripts/run_affine_training.py data.roots=[DATASET]

The composed configuration is ``RegSegLib/training/configs/affine_config.yaml`` with the structured configs of
:mod:`RegSegLib.training.config`; the run folder keeps the resolved configuration and the checkpoints
(:mod:`RegSegLib.training.runner`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from RegSegLib.training.launch import launch  # noqa: E402

if __name__ == "__main__":
    launch("affine_config")
