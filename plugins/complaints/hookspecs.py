"""Hooks the complaints plugin offers to other plugins (added by ``rapport_add_hookspecs``).

Partners extend the vocabularies of complaint types and channels: filing validates against
the union of every implementation's answer (the plugin's own defaults come through the
same hooks). Implement them with ``@hookimpl(optionalhook=True)`` so your plugin also
loads where the complaints plugin is disabled.
"""

from __future__ import annotations

from core.hookspecs import hookspec


@hookspec
def rapport_complaint_types() -> list[tuple[str, str]] | None:
    """Return extra complaint types as ``(code, description)``; codes are lowercase words
    (``product_quality``). The first description given for a code wins."""


@hookspec
def rapport_complaint_channels() -> list[tuple[str, str]] | None:
    """Return extra channels complaints arrive through as ``(code, description)``
    (``phone``, ``chat_widget``). The first description given for a code wins."""
