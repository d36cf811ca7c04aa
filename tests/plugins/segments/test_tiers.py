"""Value tiers: the RFM scores and tiers of a hand-worked example, the run's audit entry
and event, Customer.valueTier in one statement per page, the valueTier filter, the job
through startJob and the CLI."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy import select

from core import jobs, outbox
from core.cli import cli
from core.db import db
from core.models import AuditEntry, OutboxEvent
from core.services.customers import erase_customer, export_customer
from plugins.segments.models import ValueTier
from plugins.segments.tiers import compute_tiers
from tests.conftest import GraphQL, count_statements
from tests.core.test_event_emission import _mismatches
from tests.plugins.segments.conftest import CUSTOMERS, customer, gid, names, purchase

AS_OF = dt.date(2026, 6, 30)  # the window: 2025-07-01 00:00 UTC to 2026-07-01 00:00 UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def example() -> dict[str, int]:
    """Five buyers in the window, one who bought before it, one who never bought, one with
    a refund only. Worked by hand (quintiles of five buyers: ranks 1-5):

    ========  ============  =========  =====  ===  ===  ===  =====  ======
    customer  last (UTC)    recency    F      M    R    F    M      tier
    ========  ============  =========  =====  ===  ===  ===  =====  ======
    Ada       06-29 10:00   1 day      3      300  4    3    3      high (10)
    Bob       06-30 23:00   0 days     1      50   5    1    2      medium (8)
    Cy        06-20 00:00   11 days    5      1000 3    5    5      top (13)
    Dee       2025-09-01    303 days   2      40   1    2    1      low (4)
    Eve       06-15 00:00   16 days    4      450  2    4    4      high (10)
    ========  ============  =========  =====  ===  ===  ===  =====  ======

    Eve's last purchase is in EUR: it counts for recency and frequency, not for spend.
    """
    ids = {name: customer(name) for name in ("Ada", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus",
                                             "Hal")}
    for day in ("2026-06-29T10:00", "2026-05-01", "2026-01-10"):
        purchase(ids["Ada"], "100", at(day))
    purchase(ids["Bob"], "50", at("2026-06-30T23:00"))
    purchase(ids["Bob"], "70", at("2026-07-01T00:00"))  # after the window
    for day in ("2026-06-20", "2026-03-01", "2026-01-01", "2025-12-01", "2025-11-01"):
        purchase(ids["Cy"], "200", at(day))
    for day in ("2025-08-01", "2025-09-01"):
        purchase(ids["Dee"], "20", at(day))
    for day in ("2026-06-01", "2026-05-01", "2026-04-01"):
        purchase(ids["Eve"], "150", at(day))
    purchase(ids["Eve"], "999", at("2026-06-15"), currency="EUR")
    purchase(ids["Fay"], "1000", at("2025-06-30T23:59"))  # before the window
    purchase(ids["Hal"], "10", at("2026-06-01"), kind="refund")
    return ids


EXPECTED = {  # name: (tier, recency, frequency, monetary, r, f, m)
    "Ada": ("high", 1, 3, Decimal("300"), 4, 3, 3),
    "Bob": ("medium", 0, 1, Decimal("50"), 5, 1, 2),
    "Cy": ("top", 11, 5, Decimal("1000"), 3, 5, 5),
    "Dee": ("low", 303, 2, Decimal("40"), 1, 2, 1),
    "Eve": ("high", 16, 4, Decimal("450"), 2, 4, 4),
    "Fay": ("none", None, 0, Decimal("0"), None, None, None),
    "Gus": ("none", None, 0, Decimal("0"), None, None, None),
    "Hal": ("none", None, 0, Decimal("0"), None, None, None),
}


def stored(ids: dict[str, int]) -> dict[str, tuple[Any, ...]]:
    by_id = {row.customer_id: row for row in db.session.scalars(select(ValueTier))}
    return {name: (by_id[i].tier, by_id[i].recency_days, by_id[i].frequency,
                   by_id[i].monetary, by_id[i].r_score, by_id[i].f_score, by_id[i].m_score)
            for name, i in ids.items()}


def test_tiers_match_the_hand_worked_example(segments_app: Flask) -> None:
    ids = example()
    run = compute_tiers(AS_OF)
    assert stored(ids) == EXPECTED
    assert run.counts == {"top": 1, "high": 2, "medium": 1, "low": 1, "none": 3}
    assert run.changed == 8  # a first tier is a change
    assert db.session.get(ValueTier, ids["Ada"]).as_of == AS_OF

    purchase(ids["Dee"], "5000", at("2026-06-30T12:00"))
    erase_customer(ids["Hal"])
    again = compute_tiers(AS_OF)
    # By hand again. R (last purchase): Eve 1, Cy 2, Ada 3, Dee 4 (06-30 12:00), Bob 5;
    # F: Bob 1, Ada and Dee 2 (3 purchases each: NTILE's 2 and 3, ties share the lowest),
    # Eve 4, Cy 5;
    # M: Bob 1, Ada 2, Eve 3, Cy 4, Dee 5 (5,040).
    tiers = {name: row[0] for name, row in stored(
        {k: v for k, v in ids.items() if k != "Hal"}).items()}
    assert tiers == {"Ada": "medium", "Bob": "medium", "Cy": "high", "Dee": "high",
                     "Eve": "medium", "Fay": "none", "Gus": "none"}
    assert db.session.get(ValueTier, ids["Hal"]) is None  # erased: no tier, and no new one
    assert again.customers == 7
    assert again.changed_ids == sorted(ids[n] for n in ("Ada", "Cy", "Dee", "Eve"))
    assert again.changed == 4

    entries = db.session.execute(select(AuditEntry.operation, AuditEntry.object_ids).where(
        AuditEntry.operation == "segments.tiers").order_by(AuditEntry.id)).all()
    assert len(entries) == 2
    assert sorted(entries[1].object_ids) == sorted(gid("Customer", i) for i in again.changed_ids)
    events = db.session.scalars(select(OutboxEvent.data).where(
        OutboxEvent.type == "segments.value_tiers.updated").order_by(OutboxEvent.id)).all()
    assert events[0] == {
        "asOf": "2026-06-30", "windowDays": 365, "customers": 8,
        "tiers": {"top": 1, "high": 2, "medium": 1, "low": 1, "none": 3}, "changed": 8,
        "changedCustomerIds": [gid("Customer", i) for i in sorted(ids.values())],
        "changedTruncated": False}
    assert events[1]["changed"] == 4
    schema = outbox.catalogue()["segments.value_tiers.updated"].schema
    assert [_mismatches(schema, data) for data in events] == [[], []]
    assert events[1]["tiers"] == {"top": 0, "high": 2, "medium": 3, "low": 0, "none": 2}


def test_refunds_are_deducted_from_monetary_and_from_spend_filters(
        segments_app: Flask, gql: GraphQL) -> None:
    """M is the window's purchases net of the window's refunds (base currency, at least
    0); minSpend and maxSpend compare all-time purchases net of all-time refunds.

    ====  ======================================  ======  ========  ===  ===  ===  ======
    who   in the window (USD unless EUR)          M       all time  R    F    M    tier
    ====  ======================================  ======  ========  ===  ===  ===  ======
    Ann   buys 100, 100.25; refund 30.10          170.15  170.15    2    3    2    medium
    Ben   buys 50; refund 80 (of an older 80)     0       50        3    1    1    low
    Cal   buys 200; refund 40 EUR (old: 50 USD)   200     150       1    1    3    low
    Dan   refund 10 only                          none    -10
    ====  ======================================  ======  ========  ===  ===  ===  ======
    """
    ids = {name: customer(name) for name in ("Ann", "Ben", "Cal", "Dan")}
    purchase(ids["Ann"], "100", at("2026-06-01"))
    purchase(ids["Ann"], "100.25", at("2026-06-10"))
    purchase(ids["Ann"], "30.10", at("2026-06-12"), kind="refund")
    purchase(ids["Ben"], "80", at("2025-01-10"))  # before the window
    purchase(ids["Ben"], "50", at("2026-06-20"))
    purchase(ids["Ben"], "80", at("2026-06-21"), kind="refund")
    purchase(ids["Cal"], "50", at("2025-02-01"), kind="refund")  # before the window
    purchase(ids["Cal"], "200", at("2026-05-01"))
    purchase(ids["Cal"], "40", at("2026-06-02"), currency="EUR", kind="refund")
    purchase(ids["Dan"], "10", at("2026-06-01"), kind="refund")
    run = compute_tiers(AS_OF)
    assert stored(ids) == {
        "Ann": ("medium", 21, 2, Decimal("170.15"), 2, 3, 2),
        "Ben": ("low", 11, 1, Decimal("0"), 3, 1, 1),
        "Cal": ("low", 61, 1, Decimal("200"), 1, 1, 3),
        "Dan": ("none", None, 0, Decimal("0"), None, None, None),
    }
    assert run.counts == {"top": 0, "high": 0, "medium": 1, "low": 2, "none": 1}
    cases = [({"minSpend": "170.15"}, ["Ann"]), ({"minSpend": "170.16"}, []),
             ({"minSpend": "50"}, ["Ann", "Ben", "Cal"]), ({"minSpend": "50.01"}, ["Ann", "Cal"]),
             ({"maxSpend": "50"}, ["Ben", "Dan"]), ({"maxSpend": "150"}, ["Ben", "Cal", "Dan"]),
             ({"minSpend": "100", "maxSpend": "160"}, ["Cal"])]
    for spec, expected in cases:
        result = gql(CUSTOMERS, {"f": spec})
        assert names(result) == expected, spec
        assert result["customers"]["totalCount"] == len(expected), spec


def test_value_tier_field_and_filter(segments_app: Flask, gql: GraphQL) -> None:
    example()
    compute_tiers(AS_OF)
    query = """{ customers(first: 20) { edges { node { name valueTier { tier recency
      frequency monetary { amount currency } rScore fScore mScore asOf windowDays
      computedAt } } } } }"""
    with count_statements(segments_app) as statements:
        edges = gql(query)["customers"]["edges"]
    tiers = [s for s in statements if "segments_value_tiers" in s]
    assert len(tiers) == 1, statements
    found = {e["node"]["name"]: e["node"]["valueTier"] for e in edges}
    assert found["Cy"]["tier"] == "TOP" and found["Cy"]["recency"] == 11
    assert found["Cy"]["monetary"] == {"amount": "1000.00", "currency": "USD"}
    assert (found["Cy"]["rScore"], found["Cy"]["fScore"], found["Cy"]["mScore"]) == (3, 5, 5)
    assert found["Gus"]["tier"] == "NONE" and found["Gus"]["recency"] is None

    assert names(gql(CUSTOMERS, {"f": {"valueTier": ["TOP", "HIGH"]}})) == ["Ada", "Cy", "Eve"]
    assert names(gql(CUSTOMERS, {"f": {"valueTier": ["LOW"], "search": "de"}})) == ["Dee"]
    unscored = customer("Ivy")
    assert gql("query($id: ID!) { customer(id: $id) { valueTier { tier } } }",
               {"id": gid("Customer", unscored)})["customer"] == {"valueTier": None}
    assert "Ivy" not in names(gql(CUSTOMERS, {"f": {"valueTier": ["NONE"]}}))


START = """mutation($parameters: GenericScalar) {
  startJob(input: {kind: "segments.tiers", parameters: $parameters}) {
    job { id } errors { field code message } } }"""


def test_the_job_through_start_job_and_the_cli(make_app: Any) -> None:
    app = make_app(enabled=["segments"], RAPPORT_JOB_THREADS=1,
                   RAPPORT_RATE_LIMIT="unlimited")
    from tests.conftest import admin_token

    gql = GraphQL(app, admin_token(app))
    with app.app_context():
        ids = example()
    bad = gql(START, {"parameters": {"windowDays": 0, "asOf": "2026-02-30"}})["startJob"]
    assert sorted((e["field"], e["code"]) for e in bad["errors"]) == [
        ("input.parameters.asOf", "INVALID"), ("input.parameters.windowDays", "INVALID")]
    started = gql(START, {"parameters": {"asOf": AS_OF.isoformat()}})["startJob"]
    assert started["errors"] == []
    deadline = time.monotonic() + 30
    while True:
        job = gql("query($id: ID!) { job(id: $id) { status result } }",
                  {"id": started["job"]["id"]})["job"]
        if job["status"] in ("SUCCEEDED", "FAILED"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    assert job["status"] == "SUCCEEDED", job
    assert job["result"]["tiers"] == {"top": 1, "high": 2, "medium": 1, "low": 1, "none": 3}
    jobs.wait_for_threads(app)

    runner = app.test_cli_runner()
    result = runner.invoke(cli, ["segments", "tiers", "--as-of", "2026-06-30",
                                 "--window-days", "30"])
    assert result.exit_code == 0, result.output
    # Over 30 days only Ada, Bob, Cy and Eve bought: 4 buyers, 4 without.
    assert "8 customers scored as of 2026-06-30 over 30 days" in result.output
    assert "none 4" in result.output
    with app.app_context():
        assert stored(ids)["Dee"][0] == "none"
    refused = runner.invoke(cli, ["segments", "tiers", "--window-days", "0"])
    assert refused.exit_code == 1 and "windowDays" in refused.output


def test_a_one_day_window(segments_app: Flask) -> None:
    ids = example()
    run = compute_tiers(AS_OF, 1)
    # Only Bob bought on 2026-06-30: alone in his quintiles, every score is 1.
    assert stored({"Bob": ids["Bob"]}) == {"Bob": ("low", 0, 1, Decimal("50"), 1, 1, 1)}
    assert run.counts["none"] == 7


def test_export_and_erasure(segments_app: Flask) -> None:
    ids = example()
    compute_tiers(AS_OF)
    document = export_customer(ids["Cy"])
    assert document["plugins"]["segments"]["valueTier"] | {"computedAt": None} == {
        "tier": "top", "recencyDays": 11, "frequency": 5, "monetary": "1000.00",
        "currency": "USD", "rScore": 3, "fScore": 5, "mScore": 5, "asOf": "2026-06-30",
        "windowDays": 365, "computedAt": None}
    narrow = export_customer(ids["Cy"], may_read=lambda domain: domain != "segments")
    assert "plugins.segments" in narrow["omitted"]
    erased = erase_customer(ids["Cy"])
    assert db.session.get(ValueTier, ids["Cy"]) is None
    assert erased.reports["segments"] == {"valueTierRemoved": True}
