"""Survey statistics: descriptive, NPS/CSAT, correlation and key drivers, factor analysis,
reliability and clusters, on a numpy response matrix (no database; see ``analyse``).

Modules: ``types`` (inputs and results), ``prepare`` (answer checks, missing-data rules),
``descriptive``, ``correlation``, ``factors``, ``reliability``, ``clusters``, ``analysis``.
"""

from __future__ import annotations

from typing import Any

from plugins.surveys.stats.types import (
    AnalysisOptions,
    ClusterResult,
    CorrelationResult,
    DriverResult,
    FactorResult,
    Item,
    ItemSummary,
    NpsResult,
    ReliabilityResult,
    ScaleSpec,
    SurveyAnalysis,
)

__all__ = ["AnalysisOptions", "ClusterResult", "CorrelationResult", "DriverResult",
           "FactorResult", "Item", "ItemSummary", "NpsResult", "ReliabilityResult",
           "ScaleSpec", "SurveyAnalysis", "analyse"]


def analyse(*args: Any, **kwargs: Any) -> SurveyAnalysis:
    """``stats.analysis.analyse``, imported on first use: numpy, scipy and scikit-learn
    load when a survey is analysed, not when the app starts."""
    from plugins.surveys.stats.analysis import analyse as run

    return run(*args, **kwargs)
