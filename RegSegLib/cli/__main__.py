"""``python -m RegSegLib.cli ...`` runs the ``regseg`` command."""

import sys

from RegSegLib.cli.main import main

sys.exit(main())
