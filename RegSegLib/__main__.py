"""``python -m RegSegLib ...`` runs the ``regseg`` command (:mod:`RegSegLib.cli`)."""

import sys

from RegSegLib.cli.main import main

sys.exit(main())
