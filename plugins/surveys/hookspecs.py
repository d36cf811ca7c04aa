"""Hooks the surveys plugin offers to other plugins (added by ``rapport_add_hookspecs``).

Implement them with ``@hookimpl(optionalhook=True)`` so your plugin also loads where the
surveys plugin is disabled.
"""

from __future__ import annotations

from typing import Any

from core.hookspecs import hookspec


@hookspec
def rapport_survey_response_recorded(response: Any) -> None:
    """A survey response was recorded (``submitSurveyResponse`` or ``rapport surveys
    import``), flushed with an id, inside the transaction that stores it: raise to refuse
    it, and write your own rows in the same transaction.

    ``response`` is a ``plugins.surveys.models.Response``: ``survey_id``, ``customer_id``
    (None for an anonymous survey), ``submitted_at``, and the answers by question key in
    ``numbers`` (NPS and RATING), ``choices`` and ``texts``. A detractor (NPS 0-6) could
    open a complaint, for example. The importer fires it once per imported row.
    """
