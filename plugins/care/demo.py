"""Demo rows for ``rapport demo``: the owners' task lists, so a newcomer finds open and
closed tasks of every kind for the customers that have an owner (VIP and B2B accounts).

Per owned customer: a birthday greeting when the birthday falls in the next 30 days, and
a few calls, visits and follow-ups spread over the last three months (closed, with an
outcome) and the next two weeks (open). Rows are bulk-inserted like core's demo rows: no
audit entries or events.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from sqlalchemy import insert

from core.db import db
from core.models import Customer

from plugins.care.models import Task, TaskKind, TaskSource, TaskStatus

TITLES = {
    TaskKind.CALL: ["Check in after the last order", "Quarterly account review call",
                    "Call about the renewal"],
    TaskKind.VISIT: ["Visit the store manager", "Present the new range on site"],
    TaskKind.FOLLOW_UP: ["Follow up on the quote", "Follow up on the complaint's solution"],
}
OUTCOMES = ["Reached, happy with the service", "Left a message", "Booked a visit",
            "Asked for a new quote", "Not interested for now"]


def _birthday_within(birth: dt.date | None, today: dt.date, days: int) -> dt.date | None:
    if birth is None:
        return None
    for year in (today.year, today.year + 1):
        try:
            day = birth.replace(year=year)
        except ValueError:  # 29 February in a common year
            day = dt.date(year, 3, 1)
        if today <= day <= today + dt.timedelta(days=days):
            return day
    return None


def seed_demo(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime) -> None:
    today = as_of.date()
    rows = []
    for customer in customers:
        if customer.owner_id is None:
            continue
        base = {"customer_id": customer.id, "assignee_id": customer.owner_id,
                "source": TaskSource.MANUAL, "rule_id": None}
        birthday = _birthday_within(customer.birth_date, today, 30)
        if birthday is not None:
            rows.append({**base, "kind": TaskKind.GREETING, "title": "Birthday greeting",
                         "due_on": birthday, "status": TaskStatus.OPEN, "outcome": None,
                         "created_at": as_of, "updated_at": as_of, "closed_at": None})
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(list(TITLES))
            offset = rng.randint(-90, 14)
            due = today + dt.timedelta(days=offset)
            created = as_of + dt.timedelta(days=min(offset, 0) - rng.randint(1, 10))
            done = offset < 0 and rng.random() < 0.85
            cancelled = offset < 0 and not done
            closed = created + dt.timedelta(days=rng.randint(0, 9)) if offset < 0 else None
            rows.append({**base, "kind": kind, "title": rng.choice(TITLES[kind]),
                         "due_on": due,
                         "status": (TaskStatus.DONE if done else TaskStatus.CANCELLED
                                    if cancelled else TaskStatus.OPEN),
                         "outcome": rng.choice(OUTCOMES) if done else None,
                         "created_at": created, "updated_at": closed or created,
                         "closed_at": min(closed, as_of) if closed else None})
    if rows:
        db.session.execute(insert(Task), rows)
