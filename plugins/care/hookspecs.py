"""Hooks the care plugin offers to other plugins (added by ``rapport_add_hookspecs``).

Implement them with ``@hookimpl(optionalhook=True)`` so your plugin also loads where the
care plugin is disabled. See docs/plugin_hooks.md, "Cross-plugin hooks".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.hookspecs import hookspec

if TYPE_CHECKING:
    from sqlalchemy import Select


@hookspec
def rapport_care_at_risk_customers(min_risk: float) -> Select[Any] | None:
    """Customers at risk of churning, for the monthly at-risk run (``care.at_risk``).

    **When:** once per run of the job. Return a ``Select`` of two columns,
    ``customer_id`` and ``risk`` (a probability, 0 to 1), of the customers whose current
    risk is at least ``min_risk`` and who are not already marked churned, at most one row
    per customer; or ``None`` when you hold no scores. The churn plugin answers from its
    stored scores of the current model version. Several answers are combined by taking
    each customer's highest risk.
    """
