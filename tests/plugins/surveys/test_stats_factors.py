"""Factor analysis: adequacy checks by hand, rotation invariants, and recovery of a known
oblique three-factor structure by oblimin and promax."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from plugins.surveys.stats import AnalysisOptions, Item, analyse
from plugins.surveys.stats.factors import (
    bartlett,
    factor_analysis,
    kmo,
    parallel_analysis,
    principal_axis,
    random_eigenvalues,
    rotate,
    varimax,
)
from plugins.surveys.stats.prepare import CompleteData
from plugins.surveys.stats.simulate import factor_responses, simple_structure

PHI = np.array([[1.0, 0.3, 0.4], [0.3, 1.0, 0.5], [0.4, 0.5, 1.0]])


def _pattern() -> np.ndarray:
    pattern = simple_structure([4, 4, 4], 0.7)
    pattern[[0, 5, 10], [0, 1, 2]] = [0.8, 0.6, 0.75]
    return pattern


def _fit(values: np.ndarray, **options: object):
    keys = [f"q{j}" for j in range(values.shape[1])]
    data = CompleteData(values, np.arange(values.shape[0]), "listwise (test)")
    return factor_analysis(keys, data, AnalysisOptions(**options), [])


def _congruence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tucker's congruence of every column of a with every column of b."""
    return (a.T @ b) / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))


def _matched(found: np.ndarray, truth: np.ndarray) -> list[int]:
    """For each true factor, the found column most congruent with it (all distinct)."""
    order = [int(np.argmax(np.abs(_congruence(found, truth))[:, t]))
             for t in range(truth.shape[1])]
    assert sorted(order) == list(range(truth.shape[1]))
    return order


def test_kmo_and_bartlett_by_hand_on_three_items() -> None:
    r12, r13, r23 = 0.5, 0.4, 0.3
    corr = np.array([[1, r12, r13], [r12, 1, r23], [r13, r23, 1]])

    def partial(rab: float, rac: float, rbc: float) -> float:
        return (rab - rac * rbc) / math.sqrt((1 - rac ** 2) * (1 - rbc ** 2))

    p12, p13, p23 = partial(r12, r13, r23), partial(r13, r12, r23), partial(r23, r12, r13)
    r_sq, p_sq = r12 ** 2 + r13 ** 2 + r23 ** 2, p12 ** 2 + p13 ** 2 + p23 ** 2
    overall, per_item = kmo(corr)
    assert overall == pytest.approx(r_sq / (r_sq + p_sq))
    assert per_item[0] == pytest.approx((r12 ** 2 + r13 ** 2)
                                        / (r12 ** 2 + r13 ** 2 + p12 ** 2 + p13 ** 2))
    det = 1 + 2 * r12 * r13 * r23 - r12 ** 2 - r13 ** 2 - r23 ** 2
    chi2 = -(100 - 1 - (2 * 3 + 5) / 6) * math.log(det)
    assert bartlett(corr, 100) == (pytest.approx(chi2), 3,
                                   pytest.approx(scipy_stats.chi2.sf(chi2, 3)))


def test_varimax_is_an_orthogonal_rotation_that_keeps_communalities() -> None:
    loadings = np.random.default_rng(5).uniform(-0.8, 0.8, size=(10, 3))
    rotated, rotation = varimax(loadings)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-10)
    np.testing.assert_allclose((rotated ** 2).sum(axis=1), (loadings ** 2).sum(axis=1),
                               atol=1e-10)

    def criterion(matrix: np.ndarray) -> float:
        normalised = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return float(((normalised ** 2).var(axis=0)).sum())

    assert criterion(rotated) > criterion(loadings)


def test_varimax_recovers_an_orthogonal_structure() -> None:
    truth = _pattern()
    data = factor_responses(4000, truth, seed=21).continuous
    result = _fit(data, n_factors=3, rotation="varimax")
    found = np.array(result.loadings)
    order = _matched(found, truth)
    for t, column in enumerate(order):
        assert abs(_congruence(found[:, [column]], truth[:, [t]])[0, 0]) > 0.95
    np.testing.assert_allclose(result.factor_correlations, np.eye(3), atol=1e-9)
    communalities = (np.array(result.loadings) ** 2).sum(axis=1)
    np.testing.assert_allclose(communalities, result.communalities, atol=1e-5)


@pytest.mark.parametrize("rotation", ["oblimin", "promax"])
def test_oblique_rotations_recover_pattern_and_factor_correlations(rotation: str) -> None:
    truth = _pattern()
    data = factor_responses(5000, truth, PHI, seed=7).continuous
    result = _fit(data, n_factors=3, rotation=rotation)
    assert result.available and result.rotation == rotation and result.n_factors == 3
    found = np.array(result.loadings)
    order = _matched(found, truth)
    for t, column in enumerate(order):
        assert _congruence(found[:, [column]], truth[:, [t]])[0, 0] > 0.95
    phi = np.array(result.factor_correlations)[np.ix_(order, order)]
    np.testing.assert_allclose(phi, PHI, atol=0.08)
    np.testing.assert_allclose(np.array(result.structure), found @ np.array(
        result.factor_correlations), atol=1e-5)


def test_oblique_rotation_keeps_the_common_part_of_the_correlations() -> None:
    loadings, _, _ = principal_axis(np.corrcoef(
        factor_responses(2000, _pattern(), PHI, seed=3).continuous, rowvar=False), 3)
    for method in ("oblimin", "promax"):
        rotated = rotate(loadings, method)
        np.testing.assert_allclose(rotated.loadings @ rotated.correlations
                                   @ rotated.loadings.T, loadings @ loadings.T, atol=1e-6)
        np.testing.assert_allclose(np.diagonal(rotated.correlations), 1.0, atol=1e-9)


def test_parallel_analysis_suggests_the_true_number_of_factors() -> None:
    data = factor_responses(600, _pattern(), PHI, seed=9).continuous
    result = _fit(data)
    assert result.suggested_parallel == 3 and result.n_factors == 3
    assert result.n_factors_requested is None
    noise = np.random.default_rng(4).standard_normal((600, 10))
    assert _fit(noise).suggested_parallel == 0


def test_random_eigenvalues_match_eigenvalues_of_simulated_normal_data() -> None:
    n, p, draws = 150, 6, 400
    rng = np.random.default_rng(8)
    brute = np.array([np.sort(np.linalg.eigvalsh(np.corrcoef(
        rng.standard_normal((n, p)), rowvar=False)))[::-1] for _ in range(draws)])
    drawn = random_eigenvalues(n, p, draws, np.random.default_rng(1))
    np.testing.assert_allclose(drawn.mean(axis=0), brute.mean(axis=0), atol=0.02)
    np.testing.assert_allclose(np.percentile(drawn, 95, axis=0),
                               np.percentile(brute, 95, axis=0), atol=0.05)
    count, thresholds = parallel_analysis(np.array([3.0, 1.05, 1.0, 0.4, 0.3, 0.25]), n,
                                          200, 0)
    assert count == 1 and thresholds[0] > 1.0


def test_adequacy_warnings_on_unsuitable_data() -> None:
    noise = np.random.default_rng(2).standard_normal((30, 8))
    result = _fit(noise, n_factors=2)
    assert result.available
    text = " ".join(result.warnings)
    assert "Only 30 responses for 8 items" in text
    assert "KMO is" in text and "Bartlett's test is not significant" in text


def test_heywood_case_is_reported() -> None:
    # One factor behind r12 = r13 = 0.8, r23 = 0.5 implies a communality of item 1 of
    # r12 r13 / r23 = 1.28: impossible, the classic Heywood case.
    corr = np.array([[1.0, 0.8, 0.8], [0.8, 1.0, 0.5], [0.8, 0.5, 1.0]])
    data = np.random.default_rng(3).multivariate_normal(np.zeros(3), corr, size=3000)
    result = _fit(data, n_factors=1)
    assert result.available
    assert any("Heywood" in w and "'q0'" in w for w in result.warnings)
    assert result.communalities[0] >= 0.995 and result.items[0].communality >= 0.995


def test_singular_and_tiny_inputs_are_explained() -> None:
    data = factor_responses(200, simple_structure([4], 0.7), seed=1).continuous
    twin = np.column_stack([data, data[:, 0]])
    singular = _fit(twin)
    assert not singular.available and "singular" in singular.explanation
    few = _fit(data[:4])
    assert not few.available and "at least 6 responses" in few.explanation
    two = _fit(data[:, :2])
    assert not two.available and "at least 3" in two.explanation


def test_analyse_recovers_structure_from_ratings_with_missing_answers() -> None:
    truth = _pattern()
    sim = factor_responses(3000, truth, PHI, scale=(1, 7), missing=0.02, seed=12)
    items = [Item(f"q{j}", "RATING", 1, 7) for j in range(truth.shape[0])]
    result = analyse(sim.ratings, items,
                     options=AnalysisOptions(rotation="oblimin", n_clusters=2)).factors
    complete = int((~np.isnan(sim.ratings).any(axis=1)).sum())
    assert result.n_used == complete and result.missing_rule.startswith("listwise")
    assert result.suggested_parallel == 3
    found = np.array(result.loadings)
    order = _matched(found, truth)
    for t, column in enumerate(order):
        assert _congruence(found[:, [column]], truth[:, [t]])[0, 0] > 0.95
