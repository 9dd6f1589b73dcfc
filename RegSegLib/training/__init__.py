"""Training framework shared by every training script: Hydra structured configs
(:mod:`~RegSegLib.training.config`), ClinicaDL behaviours as Lightning callbacks
(:mod:`~RegSegLib.training.callbacks`), data (:mod:`~RegSegLib.training.data`), the runner with run folders
and continuation (:mod:`~RegSegLib.training.runner`) and the scripts' entry point
(:mod:`~RegSegLib.training.launch`).

Importing this package imports neither torch nor Lightning; its modules do.
"""
