"""``python -m RegSegLib.cli ...`` runs the ``regseg`` command."""

from RegSegLib.cli.main import run_and_exit

run_and_exit()
