"""Modules imported on first use.

The statistics stack (numpy, scipy, scikit-learn, matplotlib) costs about two seconds to
import; the plugins that need it (churn, surveys) name it through ``lazy_module`` so that
building the app, serving requests that do no statistics and ``rapport --help`` never
load it (tests/core/test_checkout_config.py checks).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name``; the first attribute read imports it (Python's
    import lock makes concurrent first reads safe)."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (loaded)'}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` (typed ``Any``: declare the real import under
    ``TYPE_CHECKING`` for type checkers)."""
    return LazyModule(name)
