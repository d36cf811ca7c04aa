"""Rapport core: the public API for plugin authors.

    from core import hookimpl, db, models, create_app
"""

from core import models
from core.app import create_app, rapport
from core.db import db, plugin_table
from core.errors import ErrorCode, FieldError, UserError
from core.hookspecs import hookimpl, hookspec

__all__ = ["ErrorCode", "FieldError", "UserError", "create_app", "db", "hookimpl", "hookspec",
           "models", "plugin_table", "rapport"]
