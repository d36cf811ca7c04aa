"""Occasions: the care.occasions job announces birthdays and customer anniversaries
``daysAhead`` days ahead (RAPPORT_TIMEZONE) as ``customer.occasion.upcoming``, once per
customer, occasion and day, without personal data; rules greet the customers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from core.cli import cli
from core.db import db
from core.errors import UserError
from core.jobs import run_here
from core.models import Agent, AuditEntry, AuditObject, Customer, CustomerStatus, OutboxEvent
from core.scheduler import configured_schedules, seed_schedules
from core.services import customers as customer_service
from tests.conftest import AppFactory, GraphQL, admin_token
from tests.plugins.care.conftest import agent, gid, relay_and_run_rules

UTC = dt.timezone.utc
EVENT = "customer.occasion.upcoming"


def _customer(name: str, owner: Agent | None = None, *, born: dt.date | None = None,
              since: dt.date | None = None, created: dt.datetime | None = None,
              status: CustomerStatus = CustomerStatus.ACTIVE) -> Customer:
    row = Customer(name=name, birth_date=born, customer_since=since, status=status,
                   owner_id=owner.id if owner is not None else None,
                   created_at=created or dt.datetime(2026, 6, 15, 12, tzinfo=UTC))
    db.session.add(row)
    db.session.flush()
    return row


def _events(after: int = 0) -> list[OutboxEvent]:
    return list(db.session.scalars(select(OutboxEvent).where(
        OutboxEvent.type == EVENT, OutboxEvent.id > after).order_by(OutboxEvent.id)))


def _announced(on: dt.date) -> set[tuple[int, str]]:
    from plugins.care.models import AnnouncedOccasion

    return {(r.customer_id, r.occasion.value) for r in db.session.scalars(
        select(AnnouncedOccasion).where(AnnouncedOccasion.on_date == on))}


def test_birthdays_and_anniversaries_across_the_year_end(make_app: AppFactory) -> None:
    from plugins.care import occasions

    app = make_app(enabled=["care"])
    with app.app_context():
        ada = agent()
        born = _customer("Born 2 Jan", ada, born=dt.date(1990, 1, 2))
        since = _customer("Since 2020", ada, since=dt.date(2020, 1, 2),
                          born=dt.date(1985, 7, 1))
        created = _customer("Created 2024", None,
                            created=dt.datetime(2024, 1, 2, 10, tzinfo=UTC))
        # Skipped: churned, erased, another day, a future birth date, less than a year,
        # customer_since wins over the creation date.
        _customer("Churned", ada, born=dt.date(1990, 1, 2), status=CustomerStatus.CHURNED)
        _customer("Erased", ada, born=dt.date(1990, 1, 2), status=CustomerStatus.ERASED)
        _customer("Other day", ada, born=dt.date(1990, 1, 3), since=dt.date(2020, 1, 1))
        _customer("Created this year", ada, created=dt.datetime(2027, 1, 1, 10, tzinfo=UTC),
                  since=dt.date(2027, 1, 2))
        _customer("Since wins", ada, since=dt.date(2021, 5, 5),
                  created=dt.datetime(2023, 1, 2, 10, tzinfo=UTC))
        db.session.commit()

        now = dt.datetime(2026, 12, 26, 12, tzinfo=UTC)
        result = occasions.announce(7, now)
        assert result == {"on": "2027-01-02", "found": 3, "announced": 3, "birthdays": 1,
                          "anniversaries": 2}
        events = _events()
        data = sorted((e.data for e in events), key=lambda d: (d["customerId"], d["occasion"]))
        assert data == sorted([
            {"customerId": gid("Customer", born), "occasion": "birthday", "on": "2027-01-02",
             "years": None, "ownerId": gid("Agent", ada)},
            {"customerId": gid("Customer", since), "occasion": "anniversary",
             "on": "2027-01-02", "years": 7, "ownerId": gid("Agent", ada)},
            {"customerId": gid("Customer", created), "occasion": "anniversary",
             "on": "2027-01-02", "years": 3, "ownerId": None},
        ], key=lambda d: (d["customerId"], d["occasion"]))
        # No personal data: exactly these keys (no birth date, age, e-mail or phone).
        assert all(set(e.data) == {"customerId", "occasion", "on", "years", "ownerId"}
                   for e in events)
        assert {e.aggregate_id for e in events} == {gid("Customer", c)
                                                   for c in (born, since, created)}
        # One audit entry for the batch, naming its customers.
        entries = db.session.scalars(select(AuditEntry).where(
            AuditEntry.operation == occasions.JOB_KIND)).all()
        assert len(entries) == 1
        objects = set(db.session.scalars(select(AuditObject.object_id).where(
            AuditObject.entry_id == entries[0].id)))
        assert objects == {gid("Customer", c) for c in (born, since, created)}

        # Idempotent: a second run for the same day announces nothing new.
        again = occasions.announce(7, now + dt.timedelta(hours=3))
        assert again["found"] == 3 and again["announced"] == 0
        assert len(_events()) == 3
        assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.operation == occasions.JOB_KIND)) == 1

        # Erasure forgets what was announced for the customer.
        customer_service.erase_customer(born.id)
        db.session.commit()
        assert _announced(dt.date(2027, 1, 2)) == {(since.id, "anniversary"),
                                                   (created.id, "anniversary")}
        # A later run deletes the rows of days past.
        assert occasions.announce(0, dt.datetime(2027, 1, 4, 12, tzinfo=UTC))["found"] == 0
        assert _announced(dt.date(2027, 1, 2)) == set()


def test_29_february_falls_on_28_february_in_other_years(make_app: AppFactory) -> None:
    from plugins.care import occasions

    app = make_app(enabled=["care"])
    with app.app_context():
        _customer("Leap", born=dt.date(1992, 2, 29), since=dt.date(2024, 2, 29))
        _customer("Feb 28", born=dt.date(1993, 2, 28))
        _customer("Created on a leap day",
                                 created=dt.datetime(2024, 2, 29, 9, tzinfo=UTC))
        db.session.commit()

        def found(day: dt.date) -> set[tuple[str, str, Any]]:
            result = occasions.find(day, UTC)
            return {(c.name, f.occasion.value, f.years) for f in result
                    for c in [db.session.get(Customer, f.customer_id)]}

        assert found(dt.date(2027, 2, 28)) == {
            ("Leap", "birthday", None), ("Leap", "anniversary", 3),
            ("Feb 28", "birthday", None), ("Created on a leap day", "anniversary", 3)}
        assert found(dt.date(2027, 3, 1)) == set()
        # In a leap year each on its own day.
        assert found(dt.date(2028, 2, 28)) == {("Feb 28", "birthday", None)}
        assert found(dt.date(2028, 2, 29)) == {
            ("Leap", "birthday", None), ("Leap", "anniversary", 4),
            ("Created on a leap day", "anniversary", 4)}


def test_the_day_is_the_business_timezones(make_app: AppFactory) -> None:
    from plugins.care import occasions

    # UTC+14: at 11:00 UTC on 31 December it is already 1 January.
    app = make_app(enabled=["care"], RAPPORT_TIMEZONE="Pacific/Kiritimati")
    with app.app_context():
        new_year = _customer("New year", born=dt.date(1980, 1, 1))
        _customer("New year's eve", born=dt.date(1980, 12, 31))
        # Created at 01:00 local on 1 January 2026 (still 31 December in UTC).
        local = _customer("Local day", created=dt.datetime(2025, 12, 31, 11, tzinfo=UTC))
        # 23:00 local on 31 December 2025: not an anniversary on 1 January.
        _customer("Day before", created=dt.datetime(2025, 12, 31, 9, tzinfo=UTC))
        db.session.commit()

        result = occasions.announce(0, dt.datetime(2026, 12, 31, 11, tzinfo=UTC))
        assert result["on"] == "2027-01-01"
        assert {(e.data["customerId"], e.data["occasion"], e.data["years"])
                for e in _events()} == {(gid("Customer", new_year), "birthday", None),
                                        (gid("Customer", local), "anniversary", 1)}


def test_parameters_schedule_and_the_job(make_app: AppFactory) -> None:
    app = make_app(enabled=["care"])
    with app.app_context():
        for bad, message in (({"daysAhead": 61}, "less than or equal to 60"),
                             ({"daysAhead": -1}, "greater than or equal to 0"),
                             ({"daysAhead": "7"}, "integer"), ({"daysAhead": None}, "null")):
            with pytest.raises(UserError) as caught:
                run_here("care.occasions", bad, lambda fraction, message="": None)
            assert [e.field for e in caught.value.errors] == ["parameters.daysAhead"], bad
            assert message in caught.value.errors[0].message.lower(), caught.value.errors
        result = run_here("care.occasions", {}, lambda fraction, message="": None)
        today = dt.datetime.now(UTC).date()
        assert result["on"] == (today + dt.timedelta(days=7)).isoformat()

        tomorrow = today + dt.timedelta(days=1)
        db.session.add(Customer(name="Tomorrow", birth_date=tomorrow.replace(year=1980)))
        db.session.commit()
    runner = app.test_cli_runner()
    shown = runner.invoke(cli, ["care", "occasions", "--days-ahead", "1"])
    assert shown.exit_code == 0, shown.output
    assert "1 birthdays, 0 anniversaries; 1 announced now" in shown.output
    assert runner.invoke(cli, ["care", "occasions", "--days-ahead", "61"]).exit_code == 2
    with app.app_context():
        assert configured_schedules()["care-occasions"] == {
            "kind": "care.occasions", "cron": "0 5 * * *"}
        assert "care-occasions" in seed_schedules()

    gql = GraphQL(app, admin_token(app))
    started = gql.raw("""mutation { startJob(input: {kind: "care.occasions",
        parameters: {daysAhead: 90}}) { job { id } errors { field code } } }""").get_json()
    assert started["data"]["startJob"]["errors"][0]["field"].endswith("daysAhead"), started


def test_a_birthday_rule_gives_the_owner_a_greeting_task(make_app: AppFactory) -> None:
    from plugins.care import occasions
    from plugins.care.models import Task, TaskKind, TaskSource

    app = make_app(enabled=["care"])
    gql = GraphQL(app, admin_token(app))
    with app.app_context():
        triggers = gql("{ ruleTriggers { eventType } }")["ruleTriggers"]
        assert {"eventType": EVENT} in triggers
        created = gql("""mutation($input: CreateRuleInput!) { createRule(input: $input) {
            rule { id } errors { field code message } } }""", {"input": {
            "name": "Birthday greeting", "eventType": EVENT,
            "conditions": [{"field": "occasion", "op": "EQ", "value": "birthday"}],
            "actions": [{"action": "care.create_task",
                         "parameters": {"kind": "call", "title": "Birthday greeting"}}]}})
        assert created["createRule"]["errors"] == []
        ada = agent()
        birthday = _customer("Birthday", ada, born=dt.date(1970, 1, 2))
        _customer("Anniversary only", ada, since=dt.date(2019, 1, 2))
        _customer("Churned birthday", ada, born=dt.date(1970, 1, 2),
                  status=CustomerStatus.CHURNED)
        db.session.commit()
        result = occasions.announce(7, dt.datetime(2026, 12, 26, 12, tzinfo=UTC))
        assert (result["birthdays"], result["anniversaries"]) == (1, 1)
        relay_and_run_rules(app)

        tasks = db.session.scalars(select(Task)).all()
        assert [(t.customer_id, t.assignee_id, t.kind, t.title, t.source) for t in tasks] == [
            (birthday.id, ada.id, TaskKind.CALL, "Birthday greeting", TaskSource.RULE)]
