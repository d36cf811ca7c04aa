"""Hostile review of the churn records, importer, features and report: each test here
failed before its fix (odd input, races, timezone edges, double counting, erasure)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from graphene import relay
from sqlalchemy import create_engine, func, insert, select, update

from core.cli import cli
from core.db import db
from core.errors import UserError
from core.models import Alert, Customer, CustomerStatus, Interaction
from core.services.customers import (
    create_customer, erase_customer, merge_customers, update_customer,
)
from plugins.churn import features, report, service
from plugins.churn.models import ChurnRateAlert, ChurnRecord, TimeUnit, WinbackCampaign
from tests.conftest import AppFactory, GraphQL, admin_token, wait_for_a_lock_wait
from tests.plugins.churn.conftest import customer, days_ago, mark, purchase

UTC = dt.timezone.utc


def gid(type_name: str, number: int) -> str:
    return relay.Node.to_global_id(type_name, number)


@pytest.fixture
def paris_app(make_app: AppFactory) -> Iterator[Flask]:
    app = make_app(enabled=["churn"], RAPPORT_TIMEZONE="Europe/Paris")
    with app.app_context():
        yield app


def _created(ids: list[int], when: dt.datetime) -> None:
    db.session.execute(update(Customer).where(Customer.id.in_(ids)).values(created_at=when))
    db.session.commit()


# --- Periods at the ends of the calendar ------------------------------------------------------

REPORT = "query($f: Date!, $t: Date!) { churnReport(from: $f, to: $t) { months { month } } }"
STATS = "query($f: Date!, $t: Date!) { winbackStats(from: $f, to: $t) { total { attempts } } }"


@pytest.mark.parametrize("query", [REPORT, STATS])
@pytest.mark.parametrize(("first", "last"), [("9999-12-01", "9999-12-31"),
                                             ("0001-01-01", "0001-01-31")])
def test_periods_at_the_ends_of_the_calendar_are_input_errors_not_500s(
        paris_app: Flask, query: str, first: str, last: str) -> None:
    gql = GraphQL(paris_app, admin_token(paris_app))
    response = gql.raw(query, {"f": first, "t": last})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body


def test_a_report_far_in_the_past_is_empty_not_an_error(churn_app: Flask) -> None:
    figures = report.churn_report({"from": "1900-01-01", "to": "1900-03-31"})
    assert [(m.month, m.active_at_start, m.churned) for m in figures.months] == [
        ("1900-01", 0, 0), ("1900-02", 0, 0), ("1900-03", 0, 0)]


# --- The importer's jump check: months of RAPPORT_TIMEZONE -------------------------------------


def test_import_checks_the_business_month_of_every_imported_record(
        paris_app: Flask, tmp_path: Path) -> None:
    """The first row falls on 1 February in Paris (23:30 UTC on 31 January); the next six
    are January's jump: January must still be checked."""
    ids = []
    for n in range(20):
        made = create_customer({"name": f"C{n}"})
        update_customer(made.id, {"external_id": f"C-{n}", "source": "default"})
        ids.append(made.id)
    _created(ids, dt.datetime(2025, 6, 1, tzinfo=UTC))
    rows = ["C-0,2026-01-31T23:30:00Z"] + [f"C-{n},2026-01-1{n}T12:00:00Z" for n in range(1, 7)]
    path = tmp_path / "churn.csv"
    path.write_text("customer_external_id,churned_at,type,reason\n" + "".join(
        f"{row},natural,other\n" for row in rows), encoding="utf-8")
    result = paris_app.test_cli_runner().invoke(cli, ["churn", "import", str(path)])
    assert result.exit_code == 0, result.output
    alerts = db.session.scalars(select(Alert).where(Alert.kind == "churn_rate_jump")).all()
    assert [a.evidence["month"] for a in alerts] == ["2026-01"]


# --- BTYD summary before 1970 -----------------------------------------------------------------


def test_btyd_summary_of_purchases_before_1970(churn_app: Flask) -> None:
    """Negative epoch days: SQLite's CAST truncates towards zero, which is not the floor."""
    ada = customer()
    _created([ada], dt.datetime(1969, 12, 1, tzinfo=UTC))
    for when, amount in [("1969-12-20T00:00:00", "10.00"), ("1969-12-20T23:00:00", "5.00"),
                         ("1969-12-22T12:00:00", "20.00"), ("1969-12-30T00:00:00", "30.00")]:
        purchase(ada, dt.datetime.fromisoformat(when).replace(tzinfo=UTC), amount)
    as_of = dt.datetime(1970, 1, 9, 12, tzinfo=UTC)
    [chunk] = list(features.btyd_chunks(as_of, TimeUnit.DAY))
    assert chunk.customer_ids.tolist() == [ada]
    assert (int(chunk.frequency[0]), chunk.recency[0], chunk.T[0]) == (2, 10.0, 20.0)
    assert chunk.monetary[0] == pytest.approx(25.0)


# --- A mark and a purchase ---------------------------------------------------------------------


def test_a_mark_dated_before_a_recorded_purchase_is_closed_by_that_purchase(
        churn_app: Flask) -> None:
    ada = customer()
    purchase(ada, days_ago(5))
    purchase(ada, days_ago(3))
    record = mark(ada, days_ago(10))
    assert record.reactivated_at == days_ago(5)
    assert record.reactivation_reason == service.REASON_PURCHASE
    db.session.expire_all()
    assert db.session.get(Customer, ada).status == CustomerStatus.ACTIVE  # type: ignore[union-attr]


def test_a_purchase_racing_an_uncommitted_mark_reactivates_the_customer(
        churn_app: Flask, database_url: str) -> None:
    """The mark holds the customer's row and has written its record, not yet committed; a
    purchase after the churn date must wait for it and then close the record."""
    ada = customer()
    result = _while_held(churn_app, database_url, _a_mark(ada, days_ago(10)),
                         lambda: purchase(ada, days_ago(2)))
    assert isinstance(result, int), result
    record = db.session.scalars(select(ChurnRecord)).one()
    assert record.reactivated_at == days_ago(2)
    assert db.session.get(Customer, ada).status == CustomerStatus.ACTIVE  # type: ignore[union-attr]


# --- The report counts customers, not records ------------------------------------------------


def test_a_customer_churned_twice_in_a_month_is_one_churned_customer(paris_app: Flask) -> None:
    ids = [create_customer({"name": f"C{n}"}).id for n in range(4)]
    _created(ids, dt.datetime(2025, 12, 1, tzinfo=UTC))
    mark(ids[0], dt.datetime(2026, 3, 3, tzinfo=UTC))
    service.reactivate_customer({"customer_id": ids[0], "reactivated_at": "2026-03-05T00:00Z"})
    mark(ids[0], dt.datetime(2026, 3, 20, tzinfo=UTC), "natural", "other")
    mark(ids[1], dt.datetime(2026, 3, 21, tzinfo=UTC))
    [month] = report.churn_report({"from": "2026-03-01", "to": "2026-03-31"}).months
    assert (month.active_at_start, month.churned, month.reactivated) == (4, 2, 1)
    assert month.churn_rate == 0.5
    assert month.retention_rate == 0.5


# --- Erasure ---------------------------------------------------------------------------------


def test_erasure_drops_the_free_text_reactivation_reason(churn_app: Flask) -> None:
    ada, bob = customer(), customer("Bob")
    mark(ada, days_ago(20))
    service.reactivate_customer({"customer_id": ada, "reactivated_at": days_ago(10).isoformat(),
                                 "reason": "Ada Lovelace phoned from 12 Baker Street"})
    mark(bob, days_ago(20))
    purchase(bob, days_ago(5))
    erase_customer(ada)
    erase_customer(bob)
    reasons = dict(db.session.execute(select(ChurnRecord.customer_id,
                                             ChurnRecord.reactivation_reason)).all())
    assert reasons == {ada: service.REASON_MANUAL, bob: service.REASON_PURCHASE}


# --- Guards on odd input through GraphQL --------------------------------------------------------

MARK = """mutation($input: MarkCustomerChurnedInput!) { markCustomerChurned(input: $input) {
  churnRecord { id } errors { field code } } }"""
MARKS = """mutation($input: MarkCustomersChurnedInput!) { markCustomersChurned(input: $input) {
  churnRecords { id } recordedCount errors { field code } } }"""


@pytest.mark.parametrize(("change", "code"), [
    ({"customerId": gid("Customer", 2 ** 70)}, "INVALID"),
    ({"churnedAt": "1900-01-01T00:00:00"}, "BEFORE_CUSTOMER_EXISTED"),
    ({"churnedAt": "9999-12-31T23:59:59"}, "IN_THE_FUTURE"),
])
def test_odd_single_marks_are_typed_errors(gql: GraphQL, churn_app: Flask, change: dict,
                                           code: str) -> None:
    ada = customer()
    item = {"customerId": gid("Customer", ada), "type": "NATURAL", "reason": "OTHER",
            "churnedAt": days_ago(1).isoformat(), **change}
    payload = gql(MARK, {"input": item})["markCustomerChurned"]
    assert payload["churnRecord"] is None
    assert [e["code"] for e in payload["errors"]] == [code]
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 0


def test_a_batch_of_1001_and_a_duplicated_customer(gql: GraphQL, churn_app: Flask) -> None:
    ada = customer()
    item = {"customerId": gid("Customer", ada), "type": "NATURAL", "reason": "OTHER",
            "churnedAt": days_ago(1).isoformat()}
    # Over 1,000 items, any list is refused before the mutation runs (docs/graphql.md).
    refused = gql.raw(MARKS, {"input": {"marks": [item] * 1001}})
    assert refused.status_code == 400
    assert refused.get_json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 0
    payload = gql(MARKS, {"input": {"marks": [item, item]}})["markCustomersChurned"]
    assert payload["recordedCount"] == 1
    assert payload["errors"] == []
    assert payload["churnRecords"][0] == payload["churnRecords"][1]


# --- The importer and odd values -------------------------------------------------------------


def _import(app: Flask, path: Path) -> tuple[str, list[list[str]]]:
    result = app.test_cli_runner().invoke(cli, ["churn", "import", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception)
    rejects = Path(f"{path}.rejects.csv")
    lines = rejects.read_text(encoding="utf-8").splitlines()[1:] if rejects.exists() else []
    return result.output, [line.split(",", 3) for line in lines]


def test_import_rejects_nul_in_any_column_instead_of_crashing(churn_app: Flask,
                                                             tmp_path: Path) -> None:
    ada = customer()
    update_customer(ada, {"external_id": "A-1", "source": "shop"})
    when = days_ago(1).isoformat()
    path = tmp_path / "churn.csv"
    path.write_text("customer_external_id,customer_source,churned_at,type,reason,note\n"
                    f"A-\x001,shop,{when},natural,other,\n"
                    f"A-1,sh\x00op,{when},natural,other,\n"
                    f"A-1,shop,{when},natural,other,no\x00te\n"
                    f"A-1,shop,{when},natural,other,fine\n", encoding="utf-8")
    output, rejects = _import(churn_app, path)
    assert "imported: 1, skipped (already there): 0, rejected: 3" in output
    assert [(line, column, code) for line, column, code, _ in rejects] == [
        ("2", "customer_external_id", "INVALID"), ("3", "customer_source", "INVALID"),
        ("4", "note", "INVALID")]
    assert db.session.scalars(select(ChurnRecord.note)).all() == ["fine"]


def test_import_refuses_json_values_that_are_not_text(churn_app: Flask, tmp_path: Path) -> None:
    ada = customer()
    update_customer(ada, {"external_id": "A-1", "source": "default"})
    when = days_ago(1).isoformat()
    rows = [{"customer_external_id": "A-1", "churned_at": when, "type": "natural",
             "reason": "other", "note": {"said": ["too expensive"]}},
            {"customer_external_id": "A-1", "churned_at": when, "type": ["natural"],
             "reason": "other"},
            {"customer_external_id": ["A-1"], "churned_at": when, "type": "natural",
             "reason": "other"},
            {"customer_external_id": "A-1", "churned_at": 1767225600, "type": "natural",
             "reason": "other"}]
    path = tmp_path / "churn.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    output, rejects = _import(churn_app, path)
    assert "imported: 0, skipped (already there): 0, rejected: 4" in output
    assert [(line, column, code) for line, column, code, _ in rejects] == [
        ("1", "note", "INVALID"), ("2", "type", "INVALID"),
        ("3", "customer_external_id", "INVALID"), ("4", "churned_at", "INVALID")]
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 0


# --- Races on PostgreSQL ---------------------------------------------------------------------


def _while_held(app: Flask, database_url: str, hold: list, work: object) -> object:
    """Run ``hold``'s statements in a transaction left open, start ``work`` in another
    thread (the app's session), let it reach a lock wait, commit, and return its result
    (or the repr of what it raised)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: no race to lose")
    engine = create_engine(db.engine.url)
    first = engine.connect()
    first_tx = first.begin()
    for statement in hold:
        first.execute(statement)
    outcome: dict[str, object] = {}

    def worker() -> None:
        with app.app_context():
            try:
                outcome["result"] = work()  # type: ignore[operator]
            except Exception as exc:  # noqa: BLE001 - what the tests guard against
                outcome["result"] = exc
            finally:
                db.session.remove()

    thread = threading.Thread(target=worker)
    thread.start()
    wait_for_a_lock_wait(engine, tries=60)
    first_tx.commit()
    first.close()
    thread.join(timeout=30)
    engine.dispose()
    db.session.expire_all()
    return outcome["result"]


def _a_mark(customer_id: int, churned_at: dt.datetime) -> list:
    """What a mark writes, as ``mark_customers_churned`` does: the customer's row locked,
    the open record, the status."""
    return [select(Customer.id).where(Customer.id == customer_id).with_for_update(),
            insert(ChurnRecord).values(customer_id=customer_id, type="natural",
                                       reason="other", churned_at=churned_at,
                                       recorded_at=days_ago(0)),
            update(Customer).where(Customer.id == customer_id).values(status="churned")]


def _codes(result: object) -> object:
    return [e.code for e in result.errors] if isinstance(result, UserError) else result


def test_two_concurrent_marks_give_one_record_and_a_typed_error(
        churn_app: Flask, database_url: str) -> None:
    ada = customer()
    result = _while_held(churn_app, database_url, _a_mark(ada, days_ago(3)),
                         lambda: mark(ada, days_ago(2)))
    assert _codes(result) == ["ALREADY_CHURNED"]
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 1


def test_a_mark_waiting_on_an_uncommitted_later_purchase_is_closed_by_it(
        churn_app: Flask, database_url: str) -> None:
    ada = customer()
    bought = days_ago(2)
    held = [insert(Interaction).values(customer_id=ada, kind="purchase", occurred_at=bought,
                                       amount=Decimal("10.00"), currency="USD",
                                       recorded_at=days_ago(0))]
    result = _while_held(churn_app, database_url, held, lambda: mark(ada, days_ago(5)).id)
    assert isinstance(result, int), result
    record = db.session.get(ChurnRecord, result)
    assert (record.reactivated_at, record.reactivation_reason) == (bought, "purchase")
    assert db.session.get(Customer, ada).status == CustomerStatus.ACTIVE  # type: ignore[union-attr]


def test_two_campaigns_created_with_one_name_at_once_give_unique(
        churn_app: Flask, database_url: str) -> None:
    held = [insert(WinbackCampaign).values(name="Spring calls", strategy="relationship",
                                           started_at=days_ago(1), created_at=days_ago(0))]
    result = _while_held(churn_app, database_url, held, lambda: service.create_campaign(
        {"name": "Spring calls", "strategy": "price"}).id)
    assert _codes(result) == ["UNIQUE"]
    assert db.session.scalar(select(func.count()).select_from(WinbackCampaign)) == 1


# --- Merge -------------------------------------------------------------------------------------


def test_a_merge_bringing_a_later_purchase_reactivates_the_churned_survivor(
        churn_app: Flask) -> None:
    """The merged customer's purchases become the survivor's: one after the survivor's
    churn date brings it back, as if recorded on it."""
    ada, twin = customer("Ada"), customer("Ada L.")
    mark(ada, days_ago(20))
    purchase(twin, days_ago(30))  # before the churn date: changes nothing
    purchase(twin, days_ago(6))
    purchase(twin, days_ago(4))
    merge_customers(ada, [twin])
    record = db.session.scalars(select(ChurnRecord)).one()
    assert (record.reactivated_at, record.reactivation_reason) == (days_ago(6), "purchase")
    assert db.session.get(Customer, ada).status == CustomerStatus.ACTIVE  # type: ignore[union-attr]


# --- Win-back mutations and odd input -------------------------------------------------------------

CAMPAIGN = """mutation($input: CreateWinbackCampaignInput!) { createWinbackCampaign(input: $input) {
  campaign { id } errors { field code } } }"""
ATTEMPT = """mutation($input: RecordWinbackAttemptInput!) { recordWinbackAttempt(input: $input) {
  attempt { id outcome } errors { field code } } }"""
RESOLVE = """mutation($input: ResolveWinbackAttemptInput!) { resolveWinbackAttempt(input: $input) {
  attempt { id outcome } errors { field code } } }"""
REACTIVATE = """mutation($input: ReactivateCustomerInput!) { reactivateCustomer(input: $input) {
  churnRecord { id } errors { field code } } }"""


def test_odd_winback_and_reactivation_input_gives_typed_errors(gql: GraphQL,
                                                              churn_app: Flask) -> None:
    ada = customer()
    mark(ada, days_ago(20))
    started = days_ago(30).isoformat()

    def errors(query: str, item: dict) -> list[tuple[str, str]]:
        payload = next(iter(gql(query, {"input": item}).values()))
        return [(e["field"], e["code"]) for e in payload["errors"]]

    assert errors(CAMPAIGN, {"name": "A", "strategy": "PRICE",
                             "startedAt": "0001-01-01T00:00:00+05:00"}) == [
        ("input.startedAt", "INVALID")]
    assert errors(CAMPAIGN, {"name": "  ", "strategy": "PRICE"})[0][1] == "INVALID"
    assert errors(CAMPAIGN, {"name": "B", "strategy": "PRICE", "startedAt": started,
                             "endedAt": "1900-01-01T00:00:00"})[0][1] == "INVALID"
    campaign = gql(CAMPAIGN, {"input": {"name": "C", "strategy": "PRICE", "startedAt": started,
                                        "endedAt": "9999-12-31T23:59:59"}})
    cid = campaign["createWinbackCampaign"]["campaign"]["id"]
    base = {"campaignId": cid, "customerId": gid("Customer", ada)}
    assert errors(ATTEMPT, {**base, "campaignId": gid("WinbackCampaign", 2 ** 70)}) == [
        ("input.campaignId", "INVALID")]
    assert errors(ATTEMPT, {**base, "attemptedAt": "1900-01-01T00:00:00"}) == [
        ("input.attemptedAt", "INVALID")]
    assert errors(ATTEMPT, {**base, "attemptedAt": "9999-12-31T23:59:59"}) == [
        ("input.attemptedAt", "IN_THE_FUTURE")]
    assert errors(ATTEMPT, {**base, "outcome": "LOST",
                            "resolvedAt": "1900-01-01T00:00:00"}) == [
        ("input.resolvedAt", "INVALID")]
    attempt = gql(ATTEMPT, {"input": base})["recordWinbackAttempt"]["attempt"]["id"]
    assert errors(RESOLVE, {"id": attempt, "outcome": "LOST",
                            "resolvedAt": "9999-12-31T23:59:59"}) == [
        ("input.resolvedAt", "IN_THE_FUTURE")]
    assert errors(RESOLVE, {"id": gid("WinbackAttempt", 2 ** 62), "outcome": "LOST"}) == [
        ("input.id", "NOT_FOUND")]
    assert errors(REACTIVATE, {"customerId": gid("Customer", ada),
                               "reactivatedAt": "1900-01-01T00:00:00"}) == [
        ("input.reactivatedAt", "INVALID")]
    assert errors(REACTIVATE, {"customerId": gid("Customer", ada),
                               "reactivatedAt": "9999-12-31T23:59:59"}) == [
        ("input.reactivatedAt", "IN_THE_FUTURE")]
    db.session.expire_all()
    assert db.session.get(Customer, ada).status == CustomerStatus.CHURNED  # type: ignore[union-attr]


def test_a_jump_claimed_by_a_concurrent_transaction_is_not_alerted_twice(
        churn_app: Flask, database_url: str) -> None:
    ids = [create_customer({"name": f"C{n}"}).id for n in range(40)]
    _created(ids, dt.datetime(2024, 6, 1, tzinfo=UTC))
    for n, month in enumerate(("2025-01", "2025-02", "2025-03")):
        mark(ids[n], dt.datetime.fromisoformat(f"{month}-15T12:00:00+00:00"))
    service.mark_customers_churned([
        {"customer_id": cid, "type": "natural", "reason": "other",
         "churned_at": "2025-04-10T12:00:00+00:00"} for cid in ids[10:14]])
    held = [insert(ChurnRateAlert).values(month="2025-04", kind=report.JUMP_ALERT,
                                          raised_at=days_ago(0))]
    result = _while_held(churn_app, database_url, held, lambda: mark(
        ids[20], dt.datetime(2025, 4, 12, 12, tzinfo=UTC)).id)
    assert isinstance(result, int), result
    assert db.session.scalar(select(func.count()).select_from(Alert)) == 0
    assert report.churn_report({"from": "2025-04-01", "to": "2025-04-30"}).months[0].churned == 5


def test_churn_without_active_customers_has_no_rate_and_no_alert(churn_app: Flask) -> None:
    """Six customers who joined and left in one month: churned 6, active at start 0."""
    ids = [create_customer({"name": f"C{n}"}).id for n in range(6)]
    _created(ids, dt.datetime(2025, 5, 2, tzinfo=UTC))
    service.mark_customers_churned([
        {"customer_id": cid, "type": "natural", "reason": "other",
         "churned_at": "2025-05-20T12:00:00+00:00"} for cid in ids])
    months = report.churn_report({"from": "2025-02-01", "to": "2025-05-31"}).months
    assert [(m.active_at_start, m.churned, m.churn_rate, m.retention_rate) for m in months] == [
        (0, 0, None, None)] * 3 + [(0, 6, None, None)]
    assert db.session.scalar(select(func.count()).select_from(Alert)) == 0


# --- Episodes do not overlap -----------------------------------------------------------------------


@pytest.mark.parametrize("churned, back, refused, accepted", [
    # Churned 30 days ago, back 20 days ago: an open record from 40 days ago would cover
    # that whole episode (the customer churned twice at once, counted twice).
    (30, 20, 40, 20),
    # Churned 30 days ago, back 10 days ago: a mark from 20 days ago would say the customer
    # left while it was already gone.
    (30, 10, 20, 5),
])
def test_a_mark_overlapping_a_closed_episode_is_refused(
        churn_app: Flask, churned: int, back: int, refused: int, accepted: int) -> None:
    ada = customer()
    mark(ada, days_ago(churned))
    service.reactivate_customer({"customer_id": ada,
                                 "reactivated_at": days_ago(back).isoformat()})
    with pytest.raises(UserError) as exc:
        mark(ada, days_ago(refused))
    assert [(e.field, e.code) for e in exc.value.errors] == [("churnedAt", "INVALID")]
    assert "until" in exc.value.errors[0].message
    # Leaving again from the reactivation on is a second record.
    assert mark(ada, days_ago(accepted)).churned_at == days_ago(accepted)
    assert db.session.scalar(select(func.count()).select_from(ChurnRecord)) == 2
