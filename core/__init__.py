"""Rapport core: the public API for plugin authors.

    from core import hookimpl, db, models, create_app

The names are imported on first use (``__getattr__`` below): ``rapport --help`` and a
plugin's entry module (``from core import hookimpl``) must not pay for SQLAlchemy and the
models. ``core.db`` is the database object, as ``from core import db`` promises, even after
the ``core.db`` module was imported.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core import models
    from core.app import create_app, rapport
    from core.db import db, plugin_table
    from core.errors import ErrorCode, FieldError, UserError
    from core.hookspecs import hookimpl, hookspec

#: Public name -> the module that defines it (``None``: the name is the module itself).
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "ErrorCode": ("core.errors", "ErrorCode"),
    "FieldError": ("core.errors", "FieldError"),
    "UserError": ("core.errors", "UserError"),
    "create_app": ("core.app", "create_app"),
    "rapport": ("core.app", "rapport"),
    "db": ("core.db", "db"),
    "plugin_table": ("core.db", "plugin_table"),
    "hookimpl": ("core.hookspecs", "hookimpl"),
    "hookspec": ("core.hookspecs", "hookspec"),
    "models": ("core.models", None),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'core' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _CorePackage(ModuleType):
    """Importing the submodule ``core.db`` binds the package attribute ``db`` to the
    module; keep it the database object instead (what ``from core import db`` gives)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "db" and isinstance(value, ModuleType) and value.__name__ == "core.db":
            value = value.db
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _CorePackage
