"""Survey statistics: descriptive, NPS/CSAT, correlation and key drivers, factor analysis,
reliability and clusters, on a numpy response matrix (no database; see ``analyse``).

Modules: ``types`` (inputs and results), ``prepare`` (answer checks, missing-data rules),
``descriptive``, ``correlation``, ``factors``, ``reliability``, ``clusters``, ``analysis``.
"""

from __future__ import annotations

from plugins.surveys.stats.analysis import analyse
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
