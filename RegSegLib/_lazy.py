"""Lazy package exports: a package ``__init__`` names what it offers without importing torch.

Each package of RegSegLib lists its public names in ``__all__`` and maps them to the submodule that
defines them; the submodule is imported on first attribute access (PEP 562). Importing a package, or
one of its torch-free submodules (``RegSegLib.registration.settings``), therefore stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` of a package whose names live in submodules.

    Args:
        package: the package's ``__name__``.
        exports: public name -> submodule (relative to the package) that defines it.

    Returns:
        ``(__all__, __getattr__, __dir__)`` to assign in the package's ``__init__``.
    """

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def dir_() -> list[str]:
        return sorted(exports)

    return sorted(exports), getattr_, dir_
