"""The entry point every training script shares: Hydra composition, continuation, exit status.

``launch("affine_config")`` composes ``RegSegLib/training/configs/affine_config.yaml`` with the command
line's overrides (Hydra syntax, ``-m`` for multiruns), or, with ``continue_from=RUN``, the stored config of
that run with the overrides; then trains. A configuration error is one line on stderr and exit status 2;
under ``Slicer --python-script`` the application is ended with the status (it would otherwise stay open).
"""

from __future__ import annotations

import sys
from pathlib import Path

CONFIG_FOLDER = Path(__file__).resolve().parent / "configs"


def launch(config_name: str) -> None:
    """Runs the Hydra application of ``config_name`` and ends the process with its status."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    from RegSegLib.process import exit_with
    from RegSegLib.errors import RegSegError
    from RegSegLib.training.config import register_configs
    from RegSegLib.training.runner import TrainingError, continue_config, run_training, to_config

    register_configs()
    script = Path(sys.argv[0]).stem

    @hydra.main(version_base="1.3", config_path=str(CONFIG_FOLDER), config_name=config_name)
    def main(node: DictConfig) -> None:
        try:
            if node.get("continue_from"):
                config, notes = continue_config(node.continue_from, HydraConfig.get().overrides.task)
            else:
                config, notes = to_config(node), []
            for note in notes:
                print(f"{script}: {note}", file=sys.stderr, flush=True)
            folder = run_training(config)
        except (RegSegError, TrainingError, OmegaConfBaseException, ValueError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"{script}: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        print(f"{script}: run folder {folder}", flush=True)

    status = 1
    try:
        main()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        exit_with(status)
