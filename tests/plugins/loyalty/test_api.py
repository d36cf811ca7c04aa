"""The loyalty API: a front-end configures the programme, watches points, tiers and
redemptions through GraphQL alone; bad input is a typed error that writes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from graphql_relay import to_global_id
from sqlalchemy import func, inspect, select

from core.db import db
from plugins.loyalty.models import EarnRule, LedgerEntry, Reward, Tier
from tests.conftest import AppFactory, GraphQL, admin_token, count_statements
from tests.plugins.loyalty.conftest import NOW, assert_ledger_invariants, customer, days_ago

CREATE_RULE = """mutation($input: CreateEarnRuleInput!) {
  createEarnRule(input: $input) {
    earnRule { id name kind currency pointsPerUnit rounding minimumAmount { amount currency }
               bonusPoints capPoints capPeriod expiryMonths validFrom validUntil inForce }
    errors { field message code } } }"""
UPDATE_RULE = """mutation($input: UpdateEarnRuleInput!) {
  updateEarnRule(input: $input) {
    earnRule { id pointsPerUnit validFrom validUntil supersedes { id validUntil } }
    errors { field message code } } }"""
RETIRE_RULE = """mutation($id: ID!) { retireEarnRule(input: {id: $id}) {
  earnRule { retired validUntil } errors { field message code } } }"""
CREATE_TIER = """mutation($input: CreateTierInput!) { createTier(input: $input) {
  tier { id name thresholdPoints windowMonths discountPercent earnMultiplier benefits }
  errors { field message code } } }"""
UPDATE_TIER = """mutation($input: UpdateTierInput!) { updateTier(input: $input) {
  tier { name thresholdPoints } errors { field message code } } }"""
RETIRE_TIER = """mutation($id: ID!) { retireTier(input: {id: $id}) {
  tier { retired } errors { field message code } } }"""
CREATE_REWARD = """mutation($input: CreateRewardInput!) { createReward(input: $input) {
  reward { id name pointCost stock available } errors { field message code } } }"""
UPDATE_REWARD = """mutation($input: UpdateRewardInput!) { updateReward(input: $input) {
  reward { name stock } errors { field message code } } }"""
RETIRE_REWARD = """mutation($id: ID!) { retireReward(input: {id: $id}) {
  reward { retired available } errors { field message code } } }"""
RECORD = """mutation($input: RecordInteractionInput!) {
  recordInteraction(input: $input) { interaction { id } errors { field message } } }"""
REDEEM_POINTS = """mutation($input: RedeemPointsInput!) { redeemPoints(input: $input) {
  entry { id kind points reason } loyalty { balance } errors { field message code } } }"""
REDEEM_REWARD = """mutation($input: RedeemRewardInput!) { redeemReward(input: $input) {
  entry { id points reward { name } } reward { stock } loyalty { balance }
  errors { field message code } } }"""
ADJUST = """mutation($input: AdjustPointsInput!) { adjustPoints(input: $input) {
  entry { id points reason expiresAt remaining } loyalty { balance }
  errors { field message code } } }"""
LOYALTY = """query($id: ID!) { customer(id: $id) { loyalty {
  member balance tier { name benefits discountPercent earnMultiplier } pointsToNextTier
  expiringPoints(withinDays: 30) later: expiringPoints(withinDays: 800)
  ledger(first: 2) { totalCount pageInfo { hasNextPage endCursor }
    edges { node { kind points interaction { kind } reward { name } expiresAt remaining } } }
  tierHistory { fromTier { name } toTier { name } reason qualifyingPoints }
} } }"""
PROGRAM = """{ loyaltyProgram {
  earnRules { name } tiers { name } rewards { name available } pointValue { amount currency }
  defaultExpiryMonths
  all: earnRules(includeRetired: true) { name retired } } }"""


def _ok(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["errors"] == [], payload["errors"]
    return payload


def _gid(type_name: str, ident: int) -> str:
    return to_global_id(type_name, ident)


def test_a_front_end_runs_the_programme_through_graphql(gql: GraphQL) -> None:
    rule = _ok(gql(CREATE_RULE, {"input": {
        "name": "Points on purchases", "currency": "usd", "pointsPerUnit": "1.5",
        "rounding": "NEAREST", "minimumAmount": "5", "validFrom": days_ago(90).isoformat()}})[
        "createEarnRule"])["earnRule"]
    assert rule | {"id": None, "validFrom": None} == {
        "id": None, "name": "Points on purchases", "kind": "purchase", "currency": "USD",
        "pointsPerUnit": "1.5", "rounding": "NEAREST",
        "minimumAmount": {"amount": "5.00", "currency": "USD"}, "bonusPoints": None,
        "capPoints": None, "capPeriod": None, "expiryMonths": 24, "validFrom": None,
        "validUntil": None, "inForce": True}
    _ok(gql(CREATE_TIER, {"input": {
        "name": "Gold", "thresholdPoints": 200, "discountPercent": "10", "earnMultiplier": "2",
        "benefits": "Free delivery"}})["createTier"])["tier"]
    _ok(gql(CREATE_TIER, {"input": {"name": "Silver", "thresholdPoints": 50}})["createTier"])
    mug = _ok(gql(CREATE_REWARD, {"input": {"name": "Mug", "pointCost": 120, "stock": 3}})[
        "createReward"])["reward"]
    assert mug | {"id": None} == {"id": None, "name": "Mug", "pointCost": 120, "stock": 3,
                                  "available": True}

    ada = _gid("Customer", customer("Ada"))
    # 150 points reach Silver, 90.45 round to 90 and reach Gold, then 15 are doubled
    for amount, days in (("100", 20), ("60.30", 10), ("10", 5)):
        _ok(gql(RECORD, {"input": {"customerId": ada, "kind": "purchase", "amount": amount,
                                   "currency": "USD",
                                   "occurredAt": days_ago(days).isoformat()}})[
            "recordInteraction"])
    loyalty = gql(LOYALTY, {"id": ada})["customer"]["loyalty"]
    assert loyalty["balance"] == 150 + 90 + 30
    assert loyalty["tier"] == {"name": "Gold", "benefits": "Free delivery",
                               "discountPercent": "10", "earnMultiplier": "2"}
    assert loyalty["pointsToNextTier"] is None
    assert (loyalty["expiringPoints"], loyalty["later"]) == (0, 270)
    assert [(h["fromTier"], h["toTier"]["name"]) for h in loyalty["tierHistory"]] == [
        (None, "Silver"), ({"name": "Silver"}, "Gold")]

    redeemed = _ok(gql(REDEEM_REWARD, {"input": {"customerId": ada, "rewardId": mug["id"],
                                                 "idempotencyKey": "order-1"}})[
        "redeemReward"])
    assert (redeemed["entry"]["points"], redeemed["entry"]["reward"], redeemed["reward"],
            redeemed["loyalty"]) == (-120, {"name": "Mug"}, {"stock": 2}, {"balance": 150})
    replay = gql(REDEEM_REWARD, {"input": {"customerId": ada, "rewardId": mug["id"],
                                           "idempotencyKey": "order-1"}})["redeemReward"]
    assert replay["entry"]["id"] == redeemed["entry"]["id"]
    assert replay["loyalty"] == {"balance": 150}

    page = gql(LOYALTY, {"id": ada})["customer"]["loyalty"]["ledger"]
    assert page["totalCount"] == 4 and page["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["points"] for e in page["edges"]] == [-120, 30]
    rest = gql("""query($id: ID!, $after: String) { customer(id: $id) { loyalty {
        ledger(first: 5, after: $after) { edges { node { points interaction { kind } } } }
        } } }""", {"id": ada, "after": page["pageInfo"]["endCursor"]})
    assert rest["customer"]["loyalty"]["ledger"]["edges"] == [
        {"node": {"points": 90, "interaction": {"kind": "purchase"}}},
        {"node": {"points": 150, "interaction": {"kind": "purchase"}}}]

    program = gql(PROGRAM)["loyaltyProgram"]
    assert program["tiers"] == [{"name": "Silver"}, {"name": "Gold"}]
    assert program["pointValue"] == {"amount": "0.01", "currency": "USD"}
    assert program["defaultExpiryMonths"] == 24
    _ok(gql(RETIRE_RULE, {"id": rule["id"]})["retireEarnRule"])
    program = gql(PROGRAM)["loyaltyProgram"]
    assert program["earnRules"] == []
    assert program["all"] == [{"name": "Points on purchases", "retired": True}]
    assert_ledger_invariants()


def test_changing_a_rule_in_force_starts_a_new_version(gql: GraphQL) -> None:
    rule = _ok(gql(CREATE_RULE, {"input": {
        "name": "Base", "currency": "USD", "pointsPerUnit": "1",
        "validFrom": days_ago(30).isoformat()}})["createEarnRule"])["earnRule"]
    renamed = _ok(gql(UPDATE_RULE, {"input": {"id": rule["id"], "name": "Base rate"}})[
        "updateEarnRule"])["earnRule"]
    assert renamed["id"] == rule["id"]  # no term changed: edited in place
    changed = _ok(gql(UPDATE_RULE, {"input": {"id": rule["id"], "pointsPerUnit": "2"}})[
        "updateEarnRule"])["earnRule"]
    assert changed["id"] != rule["id"]
    assert changed["supersedes"]["id"] == rule["id"]
    assert changed["supersedes"]["validUntil"] == changed["validFrom"]
    ada = customer()
    gql(RECORD, {"input": {"customerId": _gid("Customer", ada), "kind": "purchase",
                           "amount": "10", "currency": "USD",
                           "occurredAt": days_ago(5).isoformat()}})
    gql(RECORD, {"input": {"customerId": _gid("Customer", ada), "kind": "purchase",
                           "amount": "10", "currency": "USD",
                           "occurredAt": dt.datetime.now(dt.timezone.utc).isoformat()}})
    # the purchase dated before the change earned at the old rate
    assert sorted(db.session.scalars(select(LedgerEntry.points))) == [10, 20]
    old = gql(UPDATE_RULE, {"input": {"id": rule["id"], "pointsPerUnit": "3"}})[
        "updateEarnRule"]
    assert old["errors"] == [{"field": "input.id", "code": "NOT_ALLOWED",
                              "message": "This rule's window has ended; create a new rule."}]


def test_loyalty_of_a_page_of_customers_costs_a_fixed_number_of_statements(
        gql: GraphQL, loyalty_app: Flask) -> None:
    from plugins.loyalty import programme, service

    tiers = [programme.create_tier({"name": n, "threshold_points": t})
             for n, t in (("Silver", 10), ("Gold", 100))]
    ids = [customer(f"C{i:02d}") for i in range(60)]
    for i, cid in enumerate(ids[::2]):
        service.adjust_points({"customer_id": cid, "points": 5 + i, "reason": "seed",
                               "idempotency_key": f"s{i}"})
    db.session.execute(db.text("UPDATE loyalty_account SET tier_id = CASE WHEN balance > 20 "
                               "THEN :gold ELSE :silver END"),
                       {"gold": tiers[1].id, "silver": tiers[0].id})
    db.session.commit()
    query = "query($n: Int!) { customers(first: $n) { edges { node { name loyalty { balance " \
            "tier { name } } } } } }"
    gql("{ plugins { name } }")
    counts = {}
    for n in (5, 50):
        with count_statements(loyalty_app) as statements:
            edges = gql(query, {"n": n})["customers"]["edges"]
        assert len(edges) == n
        counts[n] = len(statements)
    assert counts[5] == counts[50], counts
    assert counts[50] == 3, counts  # customers page, accounts, tiers (the key: cached)
    by_name = {e["node"]["name"]: e["node"]["loyalty"] for e in edges}
    assert by_name["C00"] == {"balance": 5, "tier": {"name": "Silver"}}
    assert by_name["C01"] == {"balance": 0, "tier": None}
    assert by_name["C40"] == {"balance": 25, "tier": {"name": "Gold"}}


def _ledger_size() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry)) or 0


def _config_rows() -> tuple[int, int, int]:
    return tuple(db.session.scalar(select(func.count()).select_from(m)) or 0  # type: ignore
                 for m in (EarnRule, Tier, Reward))


@pytest.fixture
def seeded(gql: GraphQL) -> dict[str, str]:
    """A member with 50 points, a reward in stock, a retired one, a rule and a tier."""
    from plugins.loyalty import programme, service

    ada = customer("Ada")
    service.adjust_points({"customer_id": ada, "points": 50, "reason": "seed",
                           "idempotency_key": "seed"})
    mug = programme.create_reward({"name": "Mug", "point_cost": 10, "stock": 1})
    old = programme.create_reward({"name": "Old", "point_cost": 10})
    programme.retire_reward(old.id)
    rule = programme.create_earn_rule({"name": "Base", "currency": "USD", "points_per_unit": 1})
    tier = programme.create_tier({"name": "Gold", "threshold_points": 100})
    return {"ada": _gid("Customer", ada), "mug": _gid("LoyaltyReward", mug.id),
            "old": _gid("LoyaltyReward", old.id), "rule": _gid("LoyaltyEarnRule", rule.id),
            "tier": _gid("LoyaltyTier", tier.id), "nobody": _gid("Customer", 999_999)}


BAD_INPUT: list[tuple[str, str, dict[str, Any], list[tuple[str, str]]]] = [
    # (mutation document, payload field, input with $placeholders, expected (field, code))
    (REDEEM_POINTS, "redeemPoints", {"customerId": "$ada", "points": 0, "idempotencyKey": "k"},
     [("input.points", "INVALID")]),
    (REDEEM_POINTS, "redeemPoints", {"customerId": "$ada", "points": -3, "idempotencyKey": "k"},
     [("input.points", "INVALID")]),
    (REDEEM_POINTS, "redeemPoints", {"customerId": "$ada", "points": 51, "idempotencyKey": "k"},
     [("input.points", "INSUFFICIENT_POINTS")]),
    (REDEEM_POINTS, "redeemPoints", {"customerId": "$nobody", "points": 5,
                                     "idempotencyKey": "k"}, [("input.customerId", "NOT_FOUND")]),
    (REDEEM_POINTS, "redeemPoints", {"customerId": "junk", "points": 5, "idempotencyKey": "k"},
     [("input.customerId", "INVALID")]),
    (REDEEM_POINTS, "redeemPoints", {"customerId": "$ada", "points": 5, "idempotencyKey": ""},
     [("input.idempotencyKey", "INVALID")]),
    (REDEEM_POINTS, "redeemPoints", {"customerId": "$ada", "points": 6,
                                     "idempotencyKey": "seed"},
     [("input.idempotencyKey", "IDEMPOTENCY_CONFLICT")]),
    (REDEEM_REWARD, "redeemReward", {"customerId": "$ada", "rewardId": "$old",
                                     "idempotencyKey": "k"}, [("input.rewardId", "REWARD_RETIRED")]),
    (REDEEM_REWARD, "redeemReward", {"customerId": "$ada", "rewardId": "$mug", "quantity": 2,
                                     "idempotencyKey": "k"},
     [("input.rewardId", "REWARD_OUT_OF_STOCK")]),
    (REDEEM_REWARD, "redeemReward", {"customerId": "$ada", "rewardId": "$mug", "quantity": 0,
                                     "idempotencyKey": "k"}, [("input.quantity", "INVALID")]),
    (REDEEM_REWARD, "redeemReward", {"customerId": "$ada", "rewardId": "$ada",
                                     "idempotencyKey": "k"}, [("input.rewardId", "INVALID")]),
    (REDEEM_REWARD, "redeemReward", {"customerId": "$nobody", "rewardId": "$mug",
                                     "idempotencyKey": "k"}, [("input.customerId", "NOT_FOUND")]),
    (ADJUST, "adjustPoints", {"customerId": "$ada", "points": 0, "reason": "r",
                              "idempotencyKey": "k"}, [("input.points", "INVALID")]),
    (ADJUST, "adjustPoints", {"customerId": "$ada", "points": -51, "reason": "r",
                              "idempotencyKey": "k"}, [("input.points", "INSUFFICIENT_POINTS")]),
    (ADJUST, "adjustPoints", {"customerId": "$ada", "points": 5, "reason": "",
                              "idempotencyKey": "k"}, [("input.reason", "INVALID")]),
    (ADJUST, "adjustPoints", {"customerId": "$nobody", "points": 5, "reason": "r",
                              "idempotencyKey": "k"}, [("input.customerId", "NOT_FOUND")]),
    (CREATE_RULE, "createEarnRule", {"name": "W", "currency": "USD", "pointsPerUnit": "1",
                                     "validFrom": "2026-05-01T00:00:00Z",
                                     "validUntil": "2026-04-01T00:00:00Z"},
     [("input.validUntil", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "A", "pointsPerUnit": "1", "minimumAmount": "5"},
     [("input.currency", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "N", "currency": "USD", "pointsPerUnit": "-1"},
     [("input.pointsPerUnit", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "Z", "currency": "USD"},
     [("input.pointsPerUnit", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "K", "kind": "teleport", "bonusPoints": 5},
     [("input.kind", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "R", "kind": "refund", "bonusPoints": 5},
     [("input.kind", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "V", "kind": "visit", "currency": "USD",
                                     "pointsPerUnit": "1"}, [("input.pointsPerUnit", "INVALID")]),
    (CREATE_RULE, "createEarnRule", {"name": "C", "bonusPoints": 5, "capPoints": 10},
     [("input.capPeriod", "INVALID")]),
    (UPDATE_RULE, "updateEarnRule", {"id": "$rule", "validUntil": "2020-01-01T00:00:00Z"},
     [("input.validUntil", "INVALID")]),
    (UPDATE_RULE, "updateEarnRule", {"id": "$tier", "name": "x"}, [("input.id", "INVALID")]),
    (RETIRE_RULE.replace("$id: ID!", "$input: RetireEarnRuleInput!").replace("{id: $id}",
                                                                             "$input"),
     "retireEarnRule", {"id": _gid("LoyaltyEarnRule", 999)}, [("input.id", "NOT_FOUND")]),
    (CREATE_TIER, "createTier", {"name": "T", "thresholdPoints": -1},
     [("input.thresholdPoints", "INVALID")]),
    (CREATE_TIER, "createTier", {"name": "T", "thresholdPoints": 100},
     [("input.thresholdPoints", "UNIQUE")]),
    (CREATE_TIER, "createTier", {"name": "gold", "thresholdPoints": 5}, [("input.name", "UNIQUE")]),
    (CREATE_TIER, "createTier", {"name": "T", "thresholdPoints": 5, "discountPercent": "120"},
     [("input.discountPercent", "INVALID")]),
    (CREATE_TIER, "createTier", {"name": "T", "thresholdPoints": 5, "earnMultiplier": "0"},
     [("input.earnMultiplier", "INVALID")]),
    (UPDATE_TIER, "updateTier", {"id": _gid("LoyaltyTier", 999), "name": "x"},
     [("input.id", "NOT_FOUND")]),
    (RETIRE_TIER.replace("$id: ID!", "$input: RetireTierInput!").replace("{id: $id}", "$input"),
     "retireTier", {"id": "$rule"}, [("input.id", "INVALID")]),
    (CREATE_REWARD, "createReward", {"name": "R", "pointCost": 0}, [("input.pointCost", "INVALID")]),
    (CREATE_REWARD, "createReward", {"name": "R", "pointCost": 5, "stock": -1},
     [("input.stock", "INVALID")]),
    (CREATE_REWARD, "createReward", {"name": "R", "pointCost": 5,
                                     "validFrom": "2026-05-01T00:00:00Z",
                                     "validUntil": "2026-05-01T00:00:00Z"},
     [("input.validUntil", "INVALID")]),
    (UPDATE_REWARD, "updateReward", {"id": "$old", "stock": 5}, [("input.id", "RETIRED")]),
    (RETIRE_REWARD.replace("$id: ID!", "$input: RetireRewardInput!").replace("{id: $id}",
                                                                             "$input"),
     "retireReward", {"id": "$old"}, [("input.id", "RETIRED")]),
]


@pytest.mark.parametrize(("document", "name", "raw", "expected"), BAD_INPUT,
                         ids=[f"{n}-{i}" for i, (_, n, _, _) in enumerate(BAD_INPUT)])
def test_bad_input_is_a_typed_error_and_writes_nothing(
        gql: GraphQL, seeded: dict[str, str], document: str, name: str, raw: dict[str, Any],
        expected: list[tuple[str, str]]) -> None:
    before = (_ledger_size(), _config_rows(), db.session.get(Reward, 1).stock)  # type: ignore
    variables = {k: seeded[v[1:]] if isinstance(v, str) and v.startswith("$") else v
                 for k, v in raw.items()}
    payload = gql(document, {"input": variables})[name]
    assert [(e["field"], e["code"]) for e in payload["errors"]] == expected, payload["errors"]
    assert all(e["message"] for e in payload["errors"])
    db.session.expire_all()
    assert (_ledger_size(), _config_rows(), db.session.get(Reward, 1).stock) == before  # type: ignore


def test_scopes(loyalty_app: Flask, seeded: dict[str, str]) -> None:
    reader = GraphQL(loyalty_app, admin_token(loyalty_app, (
        "loyalty:read", "customers:read", "interactions:read")))
    assert reader(LOYALTY, {"id": seeded["ada"]})["customer"]["loyalty"]["balance"] == 50
    # A ledger entry's interaction is interactions data: loyalty:read alone does not read it.
    member = GraphQL(loyalty_app, admin_token(loyalty_app, ("loyalty:read", "customers:read")))
    response = member.raw(LOYALTY, {"id": seeded["ada"]})
    assert response.status_code == 403
    assert "Interaction.kind needs the interactions:read scope" in str(response.get_json())
    response = reader.raw(REDEEM_POINTS, {"input": {"customerId": seeded["ada"], "points": 1,
                                                    "idempotencyKey": "r"}})
    assert response.status_code == 403
    assert response.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    outsider = GraphQL(loyalty_app, admin_token(loyalty_app, ("customers:read",)))
    response = outsider.raw(PROGRAM)
    assert response.get_json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_adjustments_through_the_api(gql: GraphQL, seeded: dict[str, str]) -> None:
    expires = (NOW + dt.timedelta(days=20)).replace(microsecond=0)
    added = _ok(gql(ADJUST, {"input": {"customerId": seeded["ada"], "points": 30,
                                       "reason": "late delivery", "idempotencyKey": "a1",
                                       "expiresAt": expires.isoformat()}})["adjustPoints"])
    assert added["entry"] | {"id": None} == {"id": None, "points": 30, "reason": "late delivery",
                                            "expiresAt": expires.isoformat(), "remaining": 30}
    assert added["loyalty"] == {"balance": 80}
    removed = _ok(gql(ADJUST, {"input": {"customerId": seeded["ada"], "points": -80,
                                         "reason": "fraud", "idempotencyKey": "a2"}})[
        "adjustPoints"])
    assert removed["loyalty"] == {"balance": 0}
    tier = _ok(gql(UPDATE_TIER, {"input": {"id": seeded["tier"], "name": "Platinum"}})[
        "updateTier"])
    assert tier["tier"] == {"name": "Platinum", "thresholdPoints": 100}
    assert _ok(gql(RETIRE_TIER, {"id": seeded["tier"]})["retireTier"])["tier"] == {
        "retired": True}
    stocked = _ok(gql(UPDATE_REWARD, {"input": {"id": seeded["mug"], "stock": None}})[
        "updateReward"])
    assert stocked["reward"] == {"name": "Mug", "stock": None}
    node = gql("query($id: ID!) { node(id: $id) { ... on LoyaltyReward { name } } }",
               {"id": seeded["mug"]})
    assert node == {"node": {"name": "Mug"}}
    assert_ledger_invariants()


def test_a_disabled_plugin_contributes_nothing(make_app: AppFactory) -> None:
    from core.services.interactions import record_interaction
    from core.services.customers import create_customer

    app = make_app(enabled=[])
    schema = app.extensions["rapport_graphql"].schema.graphql_schema
    assert "loyalty" not in schema.get_type("Customer").fields
    assert not {"loyaltyProgram", "loyaltyReport"} & set(schema.query_type.fields)
    assert "redeemPoints" not in schema.mutation_type.fields
    hook = app.extensions["rapport"].pm.hook
    assert "loyalty" not in {i.plugin_name for i in hook.rapport_interactions_recorded
                             .get_hookimpls()}
    with app.app_context():
        ada = create_customer({"name": "Ada"}).id
        record_interaction({"customer_id": ada, "kind": "purchase", "amount": "10",
                            "currency": "USD", "occurred_at": NOW.isoformat()})
        if db.engine.dialect.name == "sqlite":  # a fresh file: the tables were never made
            assert "loyalty_ledger" not in inspect(db.engine).get_table_names()
