"""How a RegSeg process ends, torch-free: the same way under plain Python and inside the Slicer application."""

from __future__ import annotations

import sys


def exit_with(code: int) -> None:
    """Ends the process: ``slicer.util.exit`` inside the Slicer application, ``sys.exit`` elsewhere."""
    slicer = sys.modules.get("slicer")
    sys.stdout.flush()
    sys.stderr.flush()
    if getattr(slicer, "app", None) is not None:
        slicer.util.exit(code)
    else:
        sys.exit(code)
