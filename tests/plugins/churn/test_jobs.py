"""The churn jobs through GraphQL (on the server's threads): fit, score, the HTML report as
a downloadable file, the churn-rate check, and a fit that fails with its typed code."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from core import jobs
from core.services.customers import import_customers
from core.services.interactions import record_interactions
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.churn.conftest import customer, days_ago, purchase
from tests.plugins.churn.test_modeling import simulate

START = """mutation($kind: String!, $parameters: GenericScalar) {
  startJob(input: {kind: $kind, parameters: $parameters}) {
    job { id } errors { field code message } } }"""
JOB = """query($id: ID!) { job(id: $id) {
  status progress message result error { code message } files { name url } } }"""


@pytest.fixture
def churn_jobs_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn"], RAPPORT_JOB_THREADS=1,
                   RAPPORT_RATE_LIMIT="unlimited")  # the tests poll job(id) quickly
    with app.app_context():
        yield app
    jobs.wait_for_threads(app)


def run(gql: GraphQL, kind: str, parameters: dict[str, Any] | None = None
        ) -> tuple[dict[str, Any], list[float]]:
    """Start a job and follow it to its end; return it and the progress values seen."""
    started = gql(START, {"kind": kind, "parameters": parameters or {}})["startJob"]
    assert started["errors"] == [], started
    seen: list[float] = []
    deadline = time.monotonic() + 120
    while True:
        job = gql(JOB, {"id": started["job"]["id"]})["job"]
        seen.append(job["progress"])
        if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job, seen
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_fit_score_report_and_check_as_jobs(churn_jobs_app: Flask) -> None:
    gql = GraphQL(churn_jobs_app, admin_token(churn_jobs_app))
    people, purchases, _, _ = simulate(n=120, seed=5)
    imported = import_customers(people)
    ids = {p["external_id"]: imported.recorded_ids[i] for i, p in enumerate(people)}
    rows = [{k: v for k, v in p.items() if k != "customer"} | {"customer_id": ids[p["customer"]]}
            for p in purchases]
    for start in range(0, len(rows), 1000):
        assert not record_interactions(rows[start:start + 1000]).errors

    fit, seen = run(gql, "churn.fit", {"timeUnit": "week"})
    assert fit["status"] == "SUCCEEDED", fit
    assert seen == sorted(seen) and seen[-1] == 1.0  # progress only moves forward
    assert fit["result"]["timeUnit"] == "week" and fit["result"]["params"]["bgnbd"]["r"] > 0

    score, _ = run(gql, "churn.score", {"chunkSize": 100})
    assert score["status"] == "SUCCEEDED" and score["result"]["customers"] == 120
    assert score["result"]["modelVersion"] == fit["result"]["modelVersion"]

    first, last = days_ago(200).date().isoformat(), days_ago(0).date().isoformat()
    report, _ = run(gql, "churn.report", {"from": first, "to": last})
    assert report["status"] == "SUCCEEDED" and report["result"]["from"] == first
    (page,) = report["files"]
    assert page["name"] == "churn-report.html"
    html = churn_jobs_app.test_client().get(page["url"])
    assert html.status_code == 200 and html.mimetype == "text/html"
    assert b"<html" in html.get_data()[:500].lower()

    check, _ = run(gql, "churn.check")
    assert check["status"] == "SUCCEEDED" and check["result"]["jumps"] == []

    # As of a past moment: the parameter is stored with the job and read back exactly.
    as_of = days_ago(1).isoformat()
    refit, _ = run(gql, "churn.fit", {"asOf": as_of})
    assert refit["status"] == "SUCCEEDED", refit
    assert dt.datetime.fromisoformat(refit["result"]["asOf"]) == days_ago(1)
    rescore, _ = run(gql, "churn.score", {"asOf": as_of})
    assert rescore["status"] == "SUCCEEDED" and rescore["result"]["customers"] == 120, rescore
    recheck, _ = run(gql, "churn.check", {"asOf": days_ago(2).date().isoformat()})
    assert recheck["status"] == "SUCCEEDED", recheck

    bad = gql(START, {"kind": "churn.report", "parameters": {"from": last, "to": first}})
    assert [(e["field"], e["code"]) for e in bad["startJob"]["errors"]] == [
        ("input.parameters.to", "INVALID")]


def test_a_fit_without_enough_data_fails_with_its_code(churn_jobs_app: Flask) -> None:
    gql = GraphQL(churn_jobs_app, admin_token(churn_jobs_app))
    for n in range(3):
        person = customer(f"Few {n}")
        purchase(person, days_ago(60))
        purchase(person, days_ago(20))
    job, _ = run(gql, "churn.fit")
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "INSUFFICIENT_DATA"
    assert "needs at least 20 customers" in job["error"]["message"]


def test_the_report_file_never_names_owners(churn_jobs_app: Flask) -> None:
    """Any key with churn:read and jobs:read downloads a churn.report job's file: owner
    names and teams (agents' data) are never in it, even when an admin started the job."""
    from core.ids import global_id
    from core.services.staff import create_agent

    zelda = create_agent({"name": "Zelda Quux", "email": "zq@example.com",
                          "team": "Northwind Team"}).id
    for n in range(3):
        purchase(customer(f"Z{n}", created_days_ago=120, owner_id=zelda), days_ago(100))
    gql = GraphQL(churn_jobs_app, admin_token(churn_jobs_app))
    first, last = days_ago(90).date().isoformat(), days_ago(0).date().isoformat()
    job, _ = run(gql, "churn.report", {"from": first, "to": last})
    assert job["status"] == "SUCCEEDED", job
    reader = admin_token(churn_jobs_app, ("churn:read", "jobs:read"))
    html = churn_jobs_app.test_client().get(
        job["files"][0]["url"], headers={"Authorization": f"Bearer {reader}"})
    assert html.status_code == 200
    page = html.get_data(as_text=True)
    assert global_id("Agent", zelda) in page and "need the agents:read scope" in page
    assert "Zelda" not in page and "Northwind" not in page
