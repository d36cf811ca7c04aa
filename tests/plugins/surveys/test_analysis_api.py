"""Survey.analysis and saveSurveyClusters through GraphQL: a front end defines a survey,
collects responses drawn from a known factor structure, and reads every analysis; the
figures are those of ``stats.analyse`` on the matrix the test itself submitted."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from flask import Flask
from graphene import relay
from sqlalchemy import select

from core.db import db
from core.models import CustomerTag
from core.services.customers import create_customer
from plugins.surveys import service
from plugins.surveys.stats import AnalysisOptions, Item, ScaleSpec, SurveyAnalysis, analyse
from plugins.surveys.stats.simulate import factor_responses, simple_structure
from tests.conftest import GraphQL, admin_token, count_statements
from tests.plugins.surveys.conftest import NOW

RATING_KEYS = [f"q{j + 1}" for j in range(8)]
DEFINITION: dict[str, Any] = {
    "title": "Service study", "overallQuestionKey": "overall",
    "questions": [
        {"key": "nps", "text": "Recommend us?", "type": "NPS"},
        {"key": "overall", "text": "Overall", "type": "RATING", "scaleMin": 1, "scaleMax": 5},
        *({"key": k, "text": f"Item {k}", "type": "RATING", "scaleMin": 1, "scaleMax": 5}
          for k in RATING_KEYS),
        {"key": "channel", "text": "Ordered by", "type": "SINGLE_CHOICE",
         "options": [{"key": "web", "label": "Web"}, {"key": "phone", "label": "Phone"}]},
    ],
    "scales": [{"name": "Delivery", "items": [{"key": "q1"}, {"key": "q2"}, {"key": "q3"},
                                              {"key": "q4", "reverse": True}]},
               {"name": "Staff", "items": [{"key": k} for k in RATING_KEYS[4:]]}],
}
ITEMS = [Item("nps", "NPS", 0, 10, "Recommend us?"), Item("overall", "RATING", 1, 5, "Overall"),
         *(Item(k, "RATING", 1, 5, f"Item {k}") for k in RATING_KEYS)]
SCALES = [ScaleSpec("Delivery", ("q1", "q2", "q3", "q4"), ("q4",)),
          ScaleSpec("Staff", tuple(RATING_KEYS[4:]))]

CREATE = """mutation($input: CreateSurveyInput!) { createSurvey(input: $input) {
  survey { id } errors { field message code } } }"""
OPEN = """mutation($id: ID!) { openSurvey(input: {id: $id}) { errors { code } } }"""
SUBMIT = """mutation($input: SubmitSurveyResponseInput!) { submitSurveyResponse(input: $input) {
  response { id } errors { field message code } } }"""
PART = "available explanation"
ANALYSIS = """query($id: ID!, $filter: CustomerFilterInput, $after: DateTime,
                    $before: DateTime, $options: SurveyAnalysisOptions) {
  survey(id: $id) { analysis(filter: $filter, submittedAfter: $after, submittedBefore: $before,
                             options: $options) {
    errors { field message code }
    responsesUsed warnings rules { analysis missingRule responsesUsed }
    descriptive { %(p)s items { key label kind scaleMin scaleMax n missing mean sd median
        meanCiLow meanCiHigh frequencies { value count percent } }
      choices { key text answered options { key label count percent } } }
    nps { %(p)s items { key n promoters passives detractors promotersPct passivesPct
        detractorsPct score ciLow ciHigh method } }
    csat { %(p)s items { key n topValues satisfied csatPct } }
    correlations { %(p)s missingRule items pearson pearsonP spearman spearmanP pairCounts }
    drivers { %(p)s overallKey missingRule responsesUsed rSquared warnings
      drivers { key label rank n pearson pearsonP spearman beta relativeWeight } }
    factors { %(p)s missingRule responsesUsed items extraction rotation factorCount
      factorCountRequested suggestedKaiser suggestedParallel eigenvalues parallelThresholds
      loadings structure factorCorrelations varianceExplained communalities kmo
      itemAdequacy { key kmo communality } bartlettChi2 bartlettDf bartlettP converged
      warnings }
    reliability { %(p)s scales { name %(p)s missingRule items reversedItems responsesUsed
      cronbachAlpha alphaIfDeleted { key alpha itemTotalCorrelation } scoreMean scoreSd
      warnings } }
    clusters { %(p)s missingRule responsesUsed items k kRequested silhouette
      silhouetteByK { k silhouette } selection profiles { cluster size share means }
      warnings }
  } } }""" % {"p": PART}
SAVE = """mutation($input: SaveSurveyClustersInput!) { saveSurveyClusters(input: $input) {
  clusters { available explanation k profiles { cluster size } }
  tags { cluster tag customers } removedTags errors { field message code } } }"""


def gid(type_name: str, ident: int) -> str:
    return relay.Node.to_global_id(type_name, ident)


def simulated(rows: int, seed: int = 11) -> np.ndarray:
    """nps, overall, q1..q8: two correlated factors of four items each (q4 reversed)."""
    phi = np.array([[1.0, 0.3], [0.3, 1.0]])
    sim = factor_responses(rows, simple_structure([4, 4], 0.75), phi, missing=0.03, seed=seed)
    ratings = sim.ratings.copy()
    ratings[:, 3] = np.where(np.isnan(ratings[:, 3]), np.nan, 6 - ratings[:, 3])
    signal = sim.factors.mean(axis=1)
    rng = np.random.default_rng(seed)
    overall = np.clip(np.round(3 + 1.2 * signal + rng.normal(0, 0.6, rows)), 1, 5)
    nps = np.clip(np.round(7 + 2.2 * signal + rng.normal(0, 1.0, rows)), 0, 10)
    return np.column_stack([nps, overall, ratings])


def answers_of(row: np.ndarray, channel: str | None) -> list[dict[str, Any]]:
    keys = ["nps", "overall", *RATING_KEYS]
    out: list[dict[str, Any]] = [{"key": k, "value": int(v)} for k, v in zip(keys, row)
                                 if not np.isnan(v)]
    if channel:
        out.append({"key": "channel", "value": channel})
    return out


def front_end_survey(gql: GraphQL, **extra: Any) -> str:
    created = gql(CREATE, {"input": {**DEFINITION, **extra}})["createSurvey"]
    assert created["errors"] == []
    survey_id = created["survey"]["id"]
    assert gql(OPEN, {"id": survey_id})["openSurvey"]["errors"] == []
    return survey_id  # type: ignore[no-any-return]


def submit(gql: GraphQL, survey_id: str, matrix: np.ndarray, customers: list[int]) -> None:
    for i, row in enumerate(matrix):
        result = gql(SUBMIT, {"input": {
            "surveyId": survey_id, "customerId": gid("Customer", customers[i]),
            "answers": answers_of(row, "web" if i % 3 else "phone")}})["submitSurveyResponse"]
        assert result["errors"] == [], result


def read(gql: GraphQL, survey_id: str, **variables: Any) -> dict[str, Any]:
    return gql(ANALYSIS, {"id": survey_id, **variables})["survey"]["analysis"]  # type: ignore


def close(actual: Any, expected: Any) -> None:
    """Equal, floats to 1e-9 (the API passes the stats' floats through unchanged)."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, list) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            close(a, e)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)
    else:
        assert actual == expected


def check_against_stats(got: dict[str, Any], expected: SurveyAnalysis) -> None:
    assert got["errors"] == [] and got["responsesUsed"] == expected.n_responses
    assert got["warnings"] == expected.warnings
    for mine, theirs in zip(got["descriptive"]["items"], expected.items):
        for name in ("key", "label", "kind", "n", "missing", "mean", "sd", "median",
                     "mean_ci_low", "mean_ci_high"):
            close(mine[_camel(name)], getattr(theirs, name))
        close([[f["value"], f["count"], f["percent"]] for f in mine["frequencies"]],
              [[f.value, f.count, f.percent] for f in theirs.frequencies])
    nps, reference = got["nps"]["items"][0], expected.nps[0]
    for name in ("n", "promoters", "detractors", "promoters_pct", "score", "ci_low",
                 "ci_high", "method"):
        close(nps[_camel(name)], getattr(reference, name))
    close([c["csatPct"] for c in got["csat"]["items"]], [c.csat_pct for c in expected.csat])
    corr = got["correlations"]
    close(corr["items"], expected.correlations.keys)
    for name in ("pearson", "pearson_p", "spearman", "spearman_p"):
        close(corr[_camel(name)], getattr(expected.correlations, name))
    close(corr["pairCounts"], expected.correlations.n)
    drivers = got["drivers"]
    close(drivers["rSquared"], expected.drivers.r_squared)
    close([[d["key"], d["rank"], d["beta"], d["relativeWeight"], d["pearson"]]
           for d in drivers["drivers"]],
          [[d.key, d.rank, d.beta, d.relative_weight, d.pearson]
           for d in expected.drivers.drivers])
    factors, ref = got["factors"], expected.factors
    for name in ("items", "loadings", "structure", "factor_correlations", "eigenvalues",
                 "parallel_thresholds", "variance_explained", "communalities", "kmo",
                 "bartlett_chi2", "bartlett_df", "bartlett_p", "rotation",
                 "suggested_kaiser", "suggested_parallel"):
        close(factors[_camel(name).replace("Chi2", "Chi2")], getattr(ref, name if name != "items"
                                                                     else "keys"))
    close(factors["factorCount"], ref.n_factors)
    close(factors["responsesUsed"], ref.n_used)
    for mine, theirs in zip(got["reliability"]["scales"], expected.reliability):
        close([mine["name"], mine["cronbachAlpha"], mine["responsesUsed"]],
              [theirs.name, theirs.cronbach_alpha, theirs.n_used])
        close([[a["key"], a["alpha"], a["itemTotalCorrelation"]] for a in
               mine["alphaIfDeleted"]],
              [[a.key, a.alpha, a.item_total_correlation] for a in theirs.alpha_if_deleted])
    clusters, ref_c = got["clusters"], expected.clusters
    close([clusters["k"], clusters["silhouette"], clusters["selection"], clusters["items"]],
          [ref_c.k, ref_c.silhouette, ref_c.selection, ref_c.keys])
    close([[p["cluster"], p["size"], p["share"], p["means"]] for p in clusters["profiles"]],
          [[p.cluster + 1, p.size, p.share, p.means] for p in ref_c.profiles])
    close([[s["k"], s["silhouette"]] for s in clusters["silhouetteByK"]],
          [[k, v] for k, v in ref_c.silhouette_by_k.items()])


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def test_a_front_end_collects_responses_and_reads_every_analysis(gql: GraphQL) -> None:
    matrix = simulated(160)
    customers = [create_customer({"name": f"Customer {i}"}).id for i in range(len(matrix))]
    survey_id = front_end_survey(gql)
    submit(gql, survey_id, matrix, customers)

    options = {"rotation": "OBLIMIN", "nClusters": 3, "seed": 4}
    got = read(gql, survey_id, options=options)
    expected = analyse(matrix, ITEMS, SCALES, "overall",
                       AnalysisOptions(rotation="oblimin", n_clusters=3, seed=4))
    check_against_stats(got, expected)
    for part in ("descriptive", "nps", "csat", "correlations", "drivers", "factors",
                 "reliability", "clusters"):
        assert got[part]["available"] is True, (part, got[part]["explanation"])
        assert got[part]["explanation"]
    # The known structure is recovered: two factors, the items in their blocks.
    factors = got["factors"]
    assert factors["suggestedParallel"] == 2 and factors["factorCount"] == 2
    assert factors["items"] == ["nps", *RATING_KEYS]  # the overall question is the outcome
    loadings = np.abs(np.array(factors["loadings"]))[1:]
    blocks = loadings.argmax(axis=1)
    assert len(set(blocks[:4])) == 1 and len(set(blocks[4:])) == 1 and blocks[0] != blocks[4]
    assert loadings.max(axis=1).min() > 0.5
    assert factors["rotation"] == "oblimin"
    assert got["reliability"]["scales"][0]["reversedItems"] == ["q4"]
    assert got["reliability"]["scales"][0]["cronbachAlpha"] > 0.6
    channel = got["descriptive"]["choices"][0]
    assert channel["answered"] == 160
    assert [(o["key"], o["count"]) for o in channel["options"]] == [("web", 106),
                                                                     ("phone", 54)]
    rules = {r["analysis"]: r for r in got["rules"]}
    assert rules["correlations"]["missingRule"].startswith("pairwise")
    assert rules["factors"]["responsesUsed"] == expected.factors.n_used
    assert rules["reliability: Staff"]["responsesUsed"] == expected.reliability[1].n_used

    # The defaults: varimax, k by silhouette.
    default = read(gql, survey_id)
    check_against_stats(default, analyse(matrix, ITEMS, SCALES, "overall"))
    assert default["clusters"]["kRequested"] is None
    assert "silhouette" in default["clusters"]["selection"]


def test_a_survey_with_too_few_responses_explains_instead_of_failing(gql: GraphQL) -> None:
    survey_id = front_end_survey(gql)
    empty = read(gql, survey_id)
    assert empty["errors"] == [] and empty["responsesUsed"] == 0
    for part in ("descriptive", "nps", "csat", "correlations", "drivers", "factors",
                 "reliability", "clusters"):
        assert empty[part]["available"] is False, part
        assert empty[part]["explanation"], part
    customers = [create_customer({"name": f"C{i}"}).id for i in range(3)]
    submit(gql, survey_id, simulated(3), customers)
    few = read(gql, survey_id)
    assert few["errors"] == [] and few["responsesUsed"] == 3
    assert few["descriptive"]["available"] and few["nps"]["available"]
    assert few["descriptive"]["items"][0]["n"] == 3
    assert few["factors"]["available"] is False and few["factors"]["loadings"] == []
    assert "needs at least" in few["factors"]["explanation"]
    for part in ("correlations", "drivers", "reliability", "clusters"):
        assert few[part]["available"] or few[part]["explanation"], part


def _service_survey(rows: int, *, anonymous: bool = False, seed: int = 3,
                    customers: list[int] | None = None, at: list[dt.datetime] | None = None
                    ) -> tuple[int, np.ndarray]:
    definition = {"title": "S", "anonymous": anonymous, "overall_question_key": "overall",
                  "questions": [{**{("scale_min" if k == "scaleMin" else "scale_max"
                                     if k == "scaleMax" else k): v for k, v in q.items()},
                                 "type": q["type"].lower()} for q in DEFINITION["questions"]]}
    survey = service.create_survey(definition)
    service.open_survey(survey.id)
    matrix = simulated(rows, seed)
    for i, row in enumerate(matrix):
        raw: dict[str, Any] = {"survey_id": survey.id, "answers": answers_of(row, None)}
        if anonymous:
            raw["token"] = survey.collection_token
        else:
            raw["customer_id"] = customers[i] if customers else create_customer(
                {"name": f"R{i}"}).id
        if at:
            raw["submitted_at"] = at[i].isoformat()
        service.submit_response(raw, now=NOW)
    return survey.id, matrix


def test_the_analysis_takes_a_fixed_number_of_statements(gql: GraphQL,
                                                         surveys_app: Flask) -> None:
    small, _ = _service_survey(20)
    large, _ = _service_survey(80, seed=4)
    read(gql, gid("Survey", small))  # the API key's last-use stamp is written once
    counts = []
    for survey_id in (small, large):
        with count_statements(surveys_app) as statements:
            got = read(gql, gid("Survey", survey_id))
        assert got["errors"] == []
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 8, counts


def test_a_segment_and_a_period_narrow_the_responses(gql: GraphQL) -> None:
    paris_vip = [create_customer({"name": f"P{i}", "city": "Paris", "tags": ["vip"]}).id
                 for i in range(30)]
    paris = [create_customer({"name": f"Q{i}", "city": "Paris"}).id for i in range(20)]
    lyon_vip = [create_customer({"name": f"L{i}", "city": "Lyon", "tags": ["vip"]}).id
                for i in range(25)]
    people = paris_vip + paris + lyon_vip
    times = [NOW - dt.timedelta(days=len(people) - i) for i in range(len(people))]
    survey_id, matrix = _service_survey(len(people), customers=people, at=times)
    segment = {"city": ["Paris"], "tagsAll": ["vip"]}
    got = read(gql, gid("Survey", survey_id), filter=segment, options={"nClusters": 2})
    assert got["errors"] == [] and got["responsesUsed"] == 30
    check_against_stats(got, analyse(matrix[:30], ITEMS, [], "overall",
                                     AnalysisOptions(n_clusters=2)))
    cutoff = times[60]
    recent = read(gql, gid("Survey", survey_id), after=cutoff.isoformat(),
                  options={"nClusters": 2})
    assert recent["responsesUsed"] == len(people) - 60
    both = read(gql, gid("Survey", survey_id), filter={"tagsAny": ["VIP"]},
                before=cutoff.isoformat())
    assert both["responsesUsed"] == 30 + (61 - 50)


def test_bad_filters_and_options_are_typed_errors(gql: GraphQL) -> None:
    survey_id, _ = _service_survey(5)
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"options": {"nFactors": 0}}, {"options.nFactors": "INVALID"}),
        ({"options": {"nClusters": 1}}, {"options.nClusters": "INVALID"}),
        ({"options": {"nClusters": 21}}, {"options.nClusters": "INVALID"}),
        ({"options": {"clusterKMin": 6, "clusterKMax": 3}}, {"options.clusterKMin": "INVALID"}),
        ({"options": {"seed": -1}}, {"options.seed": "INVALID"}),
        ({"filter": {"country": ["FRA"]}}, {"filter.country.0": "INVALID"}),
        ({"filter": {"ownerId": "nonsense"}}, {"filter.ownerId": "INVALID"}),
        ({"after": "2026-02-01T00:00:00Z", "before": "2026-01-01T00:00:00Z"},
         {"submittedAfter": "INVALID"}),
    ]
    for variables, expected in cases:
        got = read(gql, gid("Survey", survey_id), **variables)
        assert {e["field"]: e["code"] for e in got["errors"]} == expected, variables
        assert all(e["message"] for e in got["errors"])
        assert got["descriptive"] is None and got["clusters"] is None
    anonymous, _ = _service_survey(5, anonymous=True)
    refused = read(gql, gid("Survey", anonymous), filter={"city": ["Paris"]})
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [("filter", "NOT_ALLOWED")]
    # An empty filter is no segment: an anonymous survey gets every analysis.
    whole = read(gql, gid("Survey", anonymous), filter={})
    assert whole["errors"] == [] and whole["responsesUsed"] == 5
    # A bad rotation never reaches the resolver: the enum refuses it.
    body = gql.raw(ANALYSIS, {"id": gid("Survey", survey_id),
                              "options": {"rotation": "QUARTIMAX"}}).get_json()
    assert body["errors"] and body.get("data") is None


def test_the_analysis_needs_surveys_read(gql: GraphQL, surveys_app: Flask) -> None:
    survey_id, _ = _service_survey(3)
    respond = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:respond",)))
    body = respond.raw(ANALYSIS, {"id": gid("Survey", survey_id)}).get_json()
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    reader = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:read",)))
    assert read(reader, gid("Survey", survey_id))["responsesUsed"] == 3
    refused = reader.raw(SAVE, {"input": {"surveyId": gid("Survey", survey_id),
                                          "tagPrefix": "seg"}}).get_json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Figures over the customers a filter picks are customer data: customers:read too.
    filtered = reader.raw(ANALYSIS, {"id": gid("Survey", survey_id),
                                     "filter": {"city": ["Paris"]}}).get_json()
    assert filtered["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "customers:read" in filtered["errors"][0]["message"]
    both = GraphQL(surveys_app, admin_token(surveys_app, ("surveys:read", "customers:read")))
    assert read(both, gid("Survey", survey_id), filter={"city": ["Paris"]})["errors"] == []


def _tags() -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for customer_id, tag in db.session.execute(select(CustomerTag.customer_id,
                                                      CustomerTag.tag)):
        found.setdefault(tag, set()).add(customer_id)
    return found


def test_clusters_are_saved_as_customer_tags(gql: GraphQL, surveys_app: Flask) -> None:
    people = [create_customer({"name": f"T{i}", "tags": ["keep"]}).id for i in range(90)]
    # The first ten customers answer twice: their latest response decides their cluster.
    survey_id, matrix = _service_survey(100, customers=people + people[:10])
    options = {"nClusters": 3, "seed": 1}
    with count_statements(surveys_app) as statements:
        saved = gql(SAVE, {"input": {"surveyId": gid("Survey", survey_id),
                                     "tagPrefix": " Sat ", "options": options}})
    result = saved["saveSurveyClusters"]
    assert result["errors"] == [] and result["clusters"]["k"] == 3
    expected = analyse(matrix, ITEMS, [], "overall", AnalysisOptions(n_clusters=3, seed=1))
    owner = people + people[:10]
    latest: dict[int, int] = {}
    for row, label in enumerate(expected.clusters.labels):
        if label is not None:
            latest[owner[row]] = label + 1
    tags = _tags()
    for cluster in (1, 2, 3):
        members = {c for c, label in latest.items() if label == cluster}
        assert tags.get(f"sat-{cluster}", set()) == members
    assert [(t["cluster"], t["tag"], t["customers"]) for t in result["tags"]] == [
        (c, f"sat-{c}", len(tags.get(f"sat-{c}", ()))) for c in (1, 2, 3)]
    assert tags["keep"] == set(people)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO CUSTOMER_TAGS")]
    assert len(inserts) == 3

    # Saving again with two clusters replaces the earlier tags of the prefix.
    again = gql(SAVE, {"input": {"surveyId": gid("Survey", survey_id), "tagPrefix": "sat",
                                 "options": {"nClusters": 2, "seed": 1}}})
    assert again["saveSurveyClusters"]["removedTags"] == len(latest)
    after = _tags()
    assert "sat-3" not in after
    assert after["sat-1"] | after["sat-2"] == set(latest)


def test_saving_clusters_refuses_anonymous_and_too_small_surveys(gql: GraphQL) -> None:
    anonymous, _ = _service_survey(40, anonymous=True)
    result = gql(SAVE, {"input": {"surveyId": gid("Survey", anonymous), "tagPrefix": "x"}})
    assert [(e["field"], e["code"]) for e in result["saveSurveyClusters"]["errors"]] == [
        ("input.surveyId", "ANONYMITY")]
    tiny, _ = _service_survey(2)
    result = gql(SAVE, {"input": {"surveyId": gid("Survey", tiny), "tagPrefix": "x"}})
    errors = result["saveSurveyClusters"]["errors"]
    assert [(e["field"], e["code"]) for e in errors] == [("input.surveyId",
                                                          "INSUFFICIENT_DATA")]
    assert "No clusters to save" in errors[0]["message"]
    for bad, field in (({"tagPrefix": "  "}, "input.tagPrefix"),
                       ({"tagPrefix": "x" * 61}, "input.tagPrefix"),
                       ({"tagPrefix": "ok", "options": {"nClusters": 99}},
                        "input.options.nClusters"),
                       ({"tagPrefix": "ok", "surveyId": gid("Survey", 999_999)},
                        "input.surveyId")):
        payload = {"surveyId": gid("Survey", tiny), **bad}
        errors = gql(SAVE, {"input": payload})["saveSurveyClusters"]["errors"]
        assert [e["field"] for e in errors] == [field], bad
    assert _tags() == {}


def test_the_set_based_tagging_skips_erased_full_and_tagged_customers(surveys_app: Flask
                                                                     ) -> None:
    from core.services.customers import erase_customer
    from core.services.tags import add_tag, remove_tags

    plain = create_customer({"name": "Plain"}).id
    tagged = create_customer({"name": "Tagged", "tags": ["grp"]}).id
    full = create_customer({"name": "Full", "tags": [f"t{i}" for i in range(50)]}).id
    erased = create_customer({"name": "Gone"}).id
    erase_customer(erased)
    with count_statements(surveys_app) as statements:
        assert add_tag([plain, tagged, full, erased, plain], " GRP ") == 1
    assert len(statements) == 1
    db.session.commit()
    assert _tags()["grp"] == {plain, tagged}
    assert add_tag([], "grp") == 0
    assert remove_tags(["grp", "GRP"]) == 2
    with pytest.raises(Exception, match="1 to 64 characters"):
        add_tag([plain], " ")
