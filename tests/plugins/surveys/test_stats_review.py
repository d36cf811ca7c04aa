"""Defects found in a review of the survey statistics, each pinned by a test that failed
before its fix: factor signs, variance explained under oblique rotations, the NPS interval,
promax on a factor without loadings, and scales that name an item twice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.surveys.stats import AnalysisOptions, Item, ScaleSpec, analyse
from plugins.surveys.stats.factors import factor_analysis, rotate
from plugins.surveys.stats.prepare import CompleteData
from plugins.surveys.stats.simulate import factor_responses, simple_structure


def _fit(values: np.ndarray, **options: object):
    keys = [f"q{j}" for j in range(values.shape[1])]
    data = CompleteData(values, np.arange(values.shape[0]), "listwise (test)")
    return factor_analysis(keys, data, AnalysisOptions(**options), [])


# --- Factor signs -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_a_single_factor_loads_positively_on_positively_correlated_items(seed: int) -> None:
    """Before: one factor skipped the sign rule of ``rotate`` and came out with the sign
    of an eigenvector, which numpy returned negative on this data."""
    data = factor_responses(300, simple_structure([5], 0.7), seed=seed).continuous
    result = _fit(data, n_factors=1)
    loadings = np.array(result.loadings)[:, 0]
    assert result.available and result.n_factors == 1
    assert (loadings > 0.4).all(), loadings
    np.testing.assert_allclose(result.structure, result.loadings)
    reversed_order = np.array(_fit(data[:, ::-1], n_factors=1).loadings)[::-1, 0]
    np.testing.assert_allclose(reversed_order, loadings, atol=1e-6)


# --- Variance explained ---------------------------------------------------------------------


def _oblique_data() -> np.ndarray:
    pattern = simple_structure([4, 4], 0.6)
    pattern[[1, 5], [1, 0]] = 0.4  # cross-loadings
    phi = np.array([[1.0, 0.6], [0.6, 1.0]])
    return factor_responses(4000, pattern, phi, seed=17).continuous


@pytest.mark.parametrize("rotation", ["varimax", "oblimin", "promax"])
def test_variance_explained_adds_up_to_the_common_variance(rotation: str) -> None:
    """The factors together explain the mean communality, whatever the rotation. Before:
    the oblique figures were the pattern's squared loadings, which leave out what the
    correlated factors share (psych's SS loadings use diag(Phi P'P) for that reason)."""
    result = _fit(_oblique_data(), n_factors=2, rotation=rotation)
    p = len(result.keys)
    assert sum(result.variance_explained) == pytest.approx(sum(result.communalities) / p,
                                                           abs=1e-6)
    pattern, phi = np.array(result.loadings), np.array(result.factor_correlations)
    structure = np.array(result.structure)
    np.testing.assert_allclose(result.variance_explained,
                               (pattern * structure).sum(axis=0) / p, atol=1e-6)
    np.testing.assert_allclose(structure, pattern @ phi, atol=1e-5)
    assert result.variance_explained == sorted(result.variance_explained, reverse=True)


# --- NPS interval ---------------------------------------------------------------------------


def _nps(answers: list[float]):
    return analyse(np.array(answers, dtype=float)[:, None], [Item("nps", "NPS", 0, 10)]).nps[0]


def test_nps_interval_is_the_adjusted_wald_interval() -> None:
    """Rocks (2016): add 3 to n, 3/4 to the promoters and 3/4 to the detractors, then the
    normal interval of the difference of the two proportions (by hand below)."""
    nps = _nps([10] * 50 + [8] * 30 + [3] * 20)
    assert nps.score == pytest.approx(30.0)
    pro, det = 50.75 / 103, 20.75 / 103
    half = 1.959964 * math.sqrt((pro + det - (pro - det) ** 2) / 103) * 100
    assert half == pytest.approx(15.08, abs=0.01)
    assert nps.ci_low == pytest.approx(100 * (pro - det) - half, abs=1e-3)
    assert nps.ci_high == pytest.approx(100 * (pro - det) + half, abs=1e-3)
    assert "adjusted Wald" in nps.method


@pytest.mark.parametrize("answers", [[10.0, 9.0, 10.0], [0.0] * 5, [3.0], [8.0, 7.0]])
def test_nps_interval_never_claims_certainty_from_a_few_answers(answers: list[float]) -> None:
    """Before: all promoters (or all detractors, or one answer) gave a variance of 0 and an
    interval of zero width, e.g. 100 to 100 from three answers."""
    nps = _nps(answers)
    assert nps.ci_low is not None and nps.ci_high is not None
    assert -100.0 <= nps.ci_low < nps.ci_high <= 100.0
    assert nps.ci_high - nps.ci_low > 30.0
    assert nps.ci_low <= nps.score <= nps.ci_high


# --- Promax ---------------------------------------------------------------------------------


def test_promax_of_a_factor_without_loadings_does_not_raise() -> None:
    """Before: numpy.linalg.LinAlgError (singular matrix) escaped from ``promax``."""
    loadings = np.column_stack([np.linspace(0.5, 0.8, 6), np.zeros(6)])
    rotated = rotate(loadings, "promax")
    assert np.isfinite(rotated.loadings).all() and np.isfinite(rotated.correlations).all()
    np.testing.assert_allclose(rotated.loadings @ rotated.correlations @ rotated.loadings.T,
                               loadings @ loadings.T, atol=1e-9)


# --- Scales ---------------------------------------------------------------------------------


def test_a_scale_naming_an_item_twice_is_explained_not_counted_twice() -> None:
    """Before: ('a', 'a', 'b') computed alpha with item a counted twice (inflated)."""
    items = [Item(k, "RATING", 1, 5) for k in "abc"]
    rng = np.random.default_rng(1)
    matrix = np.clip(np.round(3 + rng.standard_normal((100, 1))
                              + rng.standard_normal((100, 3))), 1, 5)
    result = analyse(matrix, items, [ScaleSpec("s", ("a", "a", "b"))]).reliability[0]
    assert not result.available and "more than once" in result.explanation
    assert result.cronbach_alpha is None


def test_a_reverse_keyed_item_outside_its_scale_is_reported() -> None:
    """Before: reversed_items naming a survey item that is not in the scale was silently
    dropped, so the scale was scored as if nothing were reverse-keyed."""
    items = [Item(k, "RATING", 1, 5) for k in "abc"]
    matrix = np.array([[1.0, 2, 5], [2, 2, 4], [4, 5, 2], [5, 4, 1], [3, 3, 3]])
    result = analyse(matrix, items, [ScaleSpec("s", ("a", "b"), ("c",))]).reliability[0]
    assert result.available and result.reversed_items == []
    assert any("'c'" in w and "not one of its items" in w for w in result.warnings)


# --- Report charts --------------------------------------------------------------------------

LONG_LABELS = ["How likely are you to recommend us to a friend?", "Overall satisfaction",
               "Staff were friendly and helpful", "Waiting time at the counter was fine",
               "The website is easy to use", "Prices are fair for what you get",
               "Delivery arrived on time", "Product quality met expectations",
               "Support solved my problem", "Billing was clear", "The app works well",
               "I trust this company with my data"]


def _long_label_analysis():
    sim = factor_responses(800, simple_structure([5, 5], 0.7), scale=(1, 7), seed=8)
    nps = np.clip(np.round(6 + 2 * sim.continuous[:, :5].mean(axis=1)), 0, 10)
    overall = np.clip(np.round(4 + 1.2 * sim.continuous.mean(axis=1)), 1, 7)
    matrix = np.column_stack([nps, overall, sim.ratings])
    items = [Item("nps", "NPS", 0, 10, LONG_LABELS[0]),
             Item("overall", "RATING", 1, 7, LONG_LABELS[1])]
    items += [Item(f"q{j}", "RATING", 1, 7, LONG_LABELS[2 + j]) for j in range(10)]
    return analyse(matrix, items, overall_key="overall",
                   options=AnalysisOptions(rotation="promax", n_clusters=3))


def _draw(fig):
    """Lay the figure out as ``figure_svg`` does and return its renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_report_charts_keep_long_labels_inside_the_picture() -> None:
    """A guard (no defect found: the browser showed these charts whole): everything the
    long-label charts draw stays inside the figure once laid out."""
    from plugins.surveys.report import drivers_figure, heatmap_figure, profiles_figure

    analysis = _long_label_analysis()
    labels = [s.label[:28] for s in analysis.items]
    figures = {
        "profiles": profiles_figure(analysis.clusters, analysis),
        "drivers": drivers_figure(analysis.drivers, analysis),
        "heatmap": heatmap_figure(np.eye(len(labels)), labels, labels, "r", True),
    }
    for name, fig in figures.items():
        tight = fig.get_tightbbox(_draw(fig))
        width, height = fig.get_size_inches()
        assert (tight.x0 >= -0.02 and tight.y0 >= -0.02 and tight.x1 <= width + 0.02
                and tight.y1 <= height + 0.02), (name, tight, width, height)


def _legend_overlaps(fig) -> bool:
    """Whether the legend's box covers a bar or a data point of the first axes."""
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import Bbox

    renderer = _draw(fig)
    ax = fig.axes[0]
    legend = (ax.get_legend() or fig.legends[0]).get_window_extent(renderer)
    marks = [patch.get_window_extent(renderer) for patch in ax.patches
             if isinstance(patch, Rectangle)]
    points = [ax.transData.transform(c.get_offsets()) for c in ax.collections]
    points += [ax.transData.transform(line.get_xydata()) for line in ax.lines
               if line.get_marker() not in (None, "None", "")]
    for block in points:
        marks += [Bbox.from_bounds(x - 3, y - 3, 6, 6) for x, y in block]
    assert marks
    return any(legend.overlaps(mark) for mark in marks)


def test_chart_legends_cover_no_data() -> None:
    """Before: the legends sat inside the axes (drivers: lower right; profiles: best
    place), over the bars and dots of drivers or clusters that reached that corner."""
    from plugins.surveys.report import drivers_figure, profiles_figure

    analysis = _long_label_analysis()
    for driver in analysis.drivers.drivers:  # every bar and dot at the right edge
        driver.relative_weight, driver.pearson = 0.9, 0.9
    assert not _legend_overlaps(drivers_figure(analysis.drivers, analysis))
    for index, profile in enumerate(analysis.clusters.profiles):  # lines everywhere
        profile.means = [1.0 + 3.0 * ((j + index) % 3) for j in range(len(profile.means))]
    assert not _legend_overlaps(profiles_figure(analysis.clusters, analysis))


def test_an_nps_item_must_have_the_0_to_10_scale() -> None:
    """Before: Item('x', 'NPS', 1, 5) was accepted and every answer counted as a
    detractor (NPS -100); promoters and detractors only mean something on 0-10."""
    with pytest.raises(ValueError, match="NPS"):
        analyse(np.array([[5.0], [4.0]]), [Item("x", "NPS", 1, 5)])


def test_the_reliability_tables_name_items_by_their_labels() -> None:
    """Before: the scale tables showed the bare keys (q0, q1) where every other table and
    chart of the report shows the question's label."""
    from plugins.surveys.report import render_report

    items = [Item(f"q{j}", "RATING", 1, 5, f"Question number {j}") for j in range(3)]
    matrix = np.array([[1.0, 2, 1], [2, 2, 3], [4, 5, 4], [5, 4, 5], [3, 3, 2]])
    html = render_report("Labels", analyse(matrix, items, [ScaleSpec("s", ("q0", "q1",
                                                                          "q2"))]))
    table = html[html.index("<caption>Scale s"):]
    table = table[:table.index("</table>")]
    assert "Question number 0" in table and ">q0<" not in table
