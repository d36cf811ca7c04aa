"""Demo data: a default programme and points for the demo customers' purchases."""

from __future__ import annotations

import datetime as dt
import random

from flask import Flask
from sqlalchemy import func, insert, select

from core.db import db
from core.demo import generate_demo
from core.models import Customer, Interaction
from plugins import loyalty as plugin
from plugins.loyalty.models import Account, EarnRule, EntryKind, LedgerEntry, Reward, Tier
from tests.plugins.loyalty.conftest import assert_ledger_invariants, customer

AS_OF = dt.datetime(2026, 6, 30, 12, tzinfo=dt.timezone.utc)


def _interactions(customer_id: int, rows: list[tuple[str, str | None, str | None, int]]
                  ) -> None:
    """Written like core's demo: multi-row INSERT, no hooks fired."""
    db.session.execute(insert(Interaction), [
        {"customer_id": customer_id, "kind": kind, "amount": amount, "currency": currency,
         "occurred_at": AS_OF - dt.timedelta(days=days), "payload": {}}
        for kind, amount, currency, days in rows])


def _ledger() -> list[tuple[int, str, int]]:
    return [(c, k.value, p) for c, k, p in db.session.execute(
        select(LedgerEntry.customer_id, LedgerEntry.kind, LedgerEntry.points)
        .order_by(LedgerEntry.customer_id, LedgerEntry.occurred_at, LedgerEntry.id))]


def test_demo_hook_seeds_a_programme_and_points(loyalty_app: Flask) -> None:
    ada, bob, cy = customer("Ada"), customer("Bob"), customer("Cy")
    _interactions(ada, [("purchase", "120.50", "USD", 20), ("purchase", "80", "USD", 400),
                        ("visit", None, None, 3), ("purchase", "3", "USD", 2)])
    _interactions(bob, [("purchase", "700", "USD", 250), ("purchase", "90", "EUR", 10)])
    _interactions(cy, [("call", None, None, 5)])
    db.session.flush()
    customers = db.session.scalars(select(Customer).order_by(Customer.id)).all()
    plugin.rapport_demo_data(rng=random.Random(3), customers=customers, as_of=AS_OF)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(EarnRule)) == 2
    assert [t.name for t in db.session.scalars(select(Tier).order_by(Tier.threshold_points))] \
        == ["Silver", "Gold", "Platinum"]
    assert db.session.scalar(select(func.count()).select_from(Reward)) == 3
    earned = [(c, p) for c, k, p in _ledger() if k == "earn"]
    # before the launch (400 days), under the minimum (3 USD) and in EUR: nothing
    assert earned == [(ada, 120), (ada, 20), (bob, 700)]
    # Bob's points were earned 250 days ago and last 6 months: expired, then nothing left
    assert ("expire", -700) in [(k, p) for c, k, p in _ledger() if c == bob]
    assert db.session.get(Account, cy) is None
    assert_ledger_invariants()

    plugin.rapport_demo_data(rng=random.Random(3), customers=[], as_of=AS_OF)  # next chunk
    assert db.session.scalar(select(func.count()).select_from(EarnRule)) == 2


def test_rapport_demo_gives_members_points_tiers_and_redemptions(loyalty_app: Flask) -> None:
    generate_demo(120, seed=11, as_of=AS_OF, chunk_size=50)
    kinds = dict(db.session.execute(select(LedgerEntry.kind, func.count())
                                    .group_by(LedgerEntry.kind)).all())
    assert kinds[EntryKind.EARN] > 100 and kinds[EntryKind.REDEEM] > 5
    assert kinds[EntryKind.EXPIRE] > 0 and kinds.get(EntryKind.REVERSE, 0) > 0
    members = db.session.scalar(select(func.count()).select_from(Account))
    assert 0 < members < 120  # local-currency buyers and pre-launch customers are not members
    assert db.session.scalar(select(func.count()).select_from(Account).where(
        Account.tier_id.is_not(None))) > 0
    assert db.session.scalar(select(func.max(LedgerEntry.occurred_at))) <= AS_OF
    assert_ledger_invariants()
