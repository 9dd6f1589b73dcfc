"""``python -m RegSegLib ...`` runs the ``regseg`` command (:mod:`RegSegLib.cli`)."""

from RegSegLib.cli.main import run_and_exit

run_and_exit()
