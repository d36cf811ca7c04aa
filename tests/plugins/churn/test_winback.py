"""Win-back: campaigns, attempts and outcomes, statistics per strategy, and customers who
come back by purchasing again (one interaction, a batch, the importer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from graphene import relay

from core.cli import cli
from core.db import db
from core.errors import UserError
from core.models import Customer, CustomerStatus
from core.services.customers import update_customer
from core.services.interactions import record_interactions
from plugins.churn import service
from plugins.churn.errors import ChurnErrorCode
from plugins.churn.models import ChurnRecord, WinbackAttempt, WinbackOutcome
from tests.conftest import GraphQL, count_statements
from tests.plugins.churn.conftest import NOW, customer, days_ago, mark, purchase


def campaign(name: str = "Call them", strategy: str = "relationship", **extra: object) -> int:
    return service.create_campaign({"name": name, "strategy": strategy,
                                    "started_at": days_ago(60).isoformat(), **extra}).id


def attempt(campaign_id: int, customer_id: int, **extra: object) -> WinbackAttempt:
    return service.record_attempt({"campaign_id": campaign_id, "customer_id": customer_id,
                                   "attempted_at": days_ago(5).isoformat(), **extra})


def state(customer_id: int) -> tuple[CustomerStatus, list[WinbackOutcome], bool]:
    db.session.expire_all()
    record = db.session.query(ChurnRecord).filter_by(customer_id=customer_id).one()
    outcomes = [a.outcome for a in db.session.query(WinbackAttempt).filter_by(
        customer_id=customer_id).order_by(WinbackAttempt.id)]
    return (db.session.get(Customer, customer_id).status,  # type: ignore[union-attr]
            outcomes, record.reactivated_at is None)


def test_attempt_errors(churn_app: Flask) -> None:
    ada, bob = customer("Ada"), customer("Bob")
    mark(ada, days_ago(30))
    call = campaign()
    with pytest.raises(UserError) as exc:
        attempt(call, bob)
    assert exc.value.errors[0].code == ChurnErrorCode.NOT_CHURNED
    with pytest.raises(UserError) as exc:
        attempt(call, ada, attempted_at=days_ago(90).isoformat())
    assert exc.value.errors[0].field == "attemptedAt"
    ended = campaign("Old one", "price", ended_at=days_ago(20).isoformat())
    with pytest.raises(UserError) as exc:
        attempt(ended, ada)
    assert exc.value.errors[0].code == ChurnErrorCode.CAMPAIGN_ENDED
    with pytest.raises(UserError) as exc:
        campaign()
    assert exc.value.errors[0].code == "UNIQUE"
    with pytest.raises(UserError) as exc:
        campaign("Bad", "lottery")
    assert exc.value.errors[0].field == "strategy"
    lost = attempt(call, ada)
    service.resolve_attempt({"id": lost.id, "outcome": "lost"})
    with pytest.raises(UserError) as exc:
        service.resolve_attempt({"id": lost.id, "outcome": "won_back"})
    assert exc.value.errors[0].code == ChurnErrorCode.ALREADY_RESOLVED
    assert state(ada) == (CustomerStatus.CHURNED, [WinbackOutcome.LOST], True)


def test_resolving_won_back_reactivates(churn_app: Flask) -> None:
    ada = customer()
    mark(ada, days_ago(30))
    first = attempt(campaign(), ada)
    second = attempt(campaign("Voucher", "price"), ada)
    service.resolve_attempt({"id": second.id, "outcome": "won_back"})
    assert state(ada) == (CustomerStatus.ACTIVE,
                          [WinbackOutcome.WON_BACK, WinbackOutcome.WON_BACK], False)
    db.session.expire_all()
    assert db.session.get(WinbackAttempt, first.id).resolved_at >= first.attempted_at


def test_a_purchase_after_churn_wins_back(churn_app: Flask) -> None:
    ada, bob = customer("Ada"), customer("Bob")
    mark(ada, days_ago(30))
    mark(bob, days_ago(30))
    attempt(campaign(), ada)
    purchase(bob, days_ago(40))  # a late-recorded purchase from before the churn
    assert state(bob)[0] == CustomerStatus.CHURNED
    purchase(ada, days_ago(2))
    assert state(ada) == (CustomerStatus.ACTIVE, [WinbackOutcome.WON_BACK], False)
    db.session.expire_all()
    record = db.session.query(ChurnRecord).filter_by(customer_id=ada).one()
    assert (record.reactivated_at, record.reactivation_reason) == (days_ago(2), "purchase")


def test_a_batch_of_interactions_wins_back_in_one_go(churn_app: Flask) -> None:
    people = [customer(f"C{n}") for n in range(4)]
    for person in people:
        mark(person, days_ago(30))
    call = campaign()
    attempt(call, people[0])
    rows = [{"customer_id": people[0], "kind": "purchase", "amount": "5", "currency": "USD",
             "occurred_at": days_ago(3).isoformat()},
            {"customer_id": people[0], "kind": "purchase", "amount": "5", "currency": "USD",
             "occurred_at": days_ago(4).isoformat()},
            {"customer_id": people[1], "kind": "call", "occurred_at": days_ago(3).isoformat()},
            {"customer_id": people[2], "kind": "purchase", "amount": "5", "currency": "USD",
             "occurred_at": days_ago(1).isoformat()}]
    with count_statements(churn_app) as statements:
        record_interactions(rows)
    assert [state(p)[0] for p in people] == [CustomerStatus.ACTIVE, CustomerStatus.CHURNED,
                                            CustomerStatus.ACTIVE, CustomerStatus.CHURNED]
    assert state(people[0])[1] == [WinbackOutcome.WON_BACK]
    db.session.expire_all()
    assert db.session.query(ChurnRecord).filter_by(
        customer_id=people[0]).one().reactivated_at == days_ago(4)
    churn_reads = [s for s in statements if "churn_" in s]
    assert len(churn_reads) <= 6, churn_reads  # set-based, not one per interaction


def test_the_interaction_importer_wins_back(churn_app: Flask, tmp_path: Path) -> None:
    ada = customer()
    update_customer(ada, {"external_id": "A-1"})
    mark(ada, days_ago(30))
    path = tmp_path / "interactions.csv"
    path.write_text("customer_external_id,external_id,kind,occurred_at,amount,currency\n"
                    f"A-1,P-1,purchase,{days_ago(1).isoformat()},12.50,USD\n", encoding="utf-8")
    result = churn_app.test_cli_runner().invoke(cli, ["import", "interactions", str(path)])
    assert result.exit_code == 0, result.output
    assert state(ada)[0] == CustomerStatus.ACTIVE


def test_winback_stats_per_strategy(churn_app: Flask) -> None:
    call, voucher = campaign(), campaign("Voucher", "price")
    people = [customer(f"C{n}") for n in range(5)]
    for person in people:
        mark(person, days_ago(30))
    won = attempt(voucher, people[0])
    lost = attempt(voucher, people[1])
    attempt(voucher, people[2])
    attempt(call, people[3])
    service.resolve_attempt({"id": won.id, "outcome": "won_back"})
    service.resolve_attempt({"id": lost.id, "outcome": "lost"})
    stats = service.winback_stats({"from": days_ago(10).date().isoformat(),
                                   "to": NOW.date().isoformat()})
    price = next(s for s in stats.strategies if s.strategy == "price")
    relationship = next(s for s in stats.strategies if s.strategy == "relationship")
    assert (price.attempts, price.won_back, price.lost, price.pending) == (3, 1, 1, 1)
    assert (price.win_rate, price.win_rate_of_all) == (0.5, 1 / 3)
    assert (relationship.attempts, relationship.win_rate) == (1, None)
    assert stats.total.attempts == 4
    empty = service.winback_stats({"from": "2020-01-01", "to": "2020-01-31"})
    assert empty.total.attempts == 0


def test_graphql_winback(churn_app: Flask, gql: GraphQL) -> None:
    ada = customer()
    mark(ada, days_ago(30))
    created = gql("""mutation { createWinbackCampaign(input: {name: "Voucher", strategy: PRICE})
        { campaign { id name strategy } errors { code } } }""")["createWinbackCampaign"]
    assert created["errors"] == []
    made = gql("""mutation($input: RecordWinbackAttemptInput!) { recordWinbackAttempt(
        input: $input) { attempt { id outcome campaign { name } customer { status } }
        errors { field code } } }""", {"input": {
        "campaignId": created["campaign"]["id"], "customerId": relay.Node.to_global_id(
            "Customer", ada), "note": "Offered 20%"}})["recordWinbackAttempt"]
    assert made["attempt"]["outcome"] == "PENDING"
    resolved = gql("""mutation($id: ID!) { resolveWinbackAttempt(input: {id: $id,
        outcome: WON_BACK}) { attempt { outcome resolvedAt customer { status } } errors { code } }
        }""", {"id": made["attempt"]["id"]})["resolveWinbackAttempt"]
    assert (resolved["attempt"]["outcome"], resolved["attempt"]["customer"]["status"]) == (
        "WON_BACK", "ACTIVE")
    bad = gql("""mutation($input: RecordWinbackAttemptInput!) { recordWinbackAttempt(
        input: $input) { attempt { id } errors { field code } } }""", {"input": {
        "campaignId": created["campaign"]["id"], "customerId": relay.Node.to_global_id(
            "Customer", ada)}})["recordWinbackAttempt"]
    assert bad == {"attempt": None, "errors": [{"field": "input.customerId",
                                                "code": "NOT_CHURNED"}]}
    stats = gql("""{ winbackStats(from: "%s", to: "%s") { strategies { strategy attempts
        winRate } total { wonBack } } }""" % (days_ago(3).date(), NOW.date()))["winbackStats"]
    assert {"strategy": "PRICE", "attempts": 1, "winRate": 1.0} in stats["strategies"]
    assert stats["total"]["wonBack"] == 1


def test_winback_campaigns_pages_in_constant_statements(churn_app: Flask,
                                                        gql: GraphQL) -> None:
    query = """query($after: String) { winbackCampaigns(first: 2, after: $after) { totalCount
        pageInfo { hasNextPage endCursor } edges { node { name outcomes { pending } } } } }"""
    for n in range(5):
        service.create_campaign({"name": f"Campaign {n}", "strategy": "other",
                                 "started_at": days_ago(10 - n).isoformat()})
    gql(query)
    with count_statements(churn_app) as statements:
        first = gql(query)["winbackCampaigns"]
    assert [e["node"]["name"] for e in first["edges"]] == ["Campaign 4", "Campaign 3"]
    second = gql(query, {"after": first["pageInfo"]["endCursor"]})["winbackCampaigns"]
    assert [e["node"]["name"] for e in second["edges"]] == ["Campaign 2", "Campaign 1"]
    assert first["totalCount"] == 5
    assert len(statements) <= 4
