"""Hooks the churn plugin offers to other plugins (added by ``rapport_add_hookspecs``).

Implement them with ``@hookimpl(optionalhook=True)`` so your plugin also loads where the
churn plugin is disabled. See docs/plugin_hooks.md, "Cross-plugin hooks".
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from core.hookspecs import hookspec

if TYPE_CHECKING:  # `rapport --help` loads this module: no SQLAlchemy for annotations
    from sqlalchemy import Select
    from sqlalchemy.sql import FromClause


@hookspec
def rapport_churn_features(customers: FromClause, as_of: dt.datetime) -> Select[Any] | None:
    """Contribute churn-model features, computed in SQL.

    **When:** each time churn builds its feature query: fitting, scoring, and
    ``features.feature_rows``, once per chunk of customers (a few thousand).

    ``customers`` is a SQLAlchemy selectable with one column, ``customer_id``; ``as_of``
    an aware UTC datetime. Return a ``Select`` of ``customer_id`` plus feature columns
    named ``<plugin>_<feature>`` (numeric or boolean) computed only from facts dated on or
    before ``as_of``, with at most one row per customer, or ``None``. NULL means "no data":
    churn replaces it by 0 and adds a ``<column>_missing`` indicator. Churn LEFT JOINs
    every contribution into one query: materialise nothing per customer in Python. Build
    the statement without running queries (on PostgreSQL it is compiled with its values
    inlined and read as a binary COPY on another connection).
    """
