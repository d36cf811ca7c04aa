"""``rapport demo``: value tiers for the customers of each chunk, so the demo shows them.

Each chunk is ranked among itself (the chunks are drawn alike, so its quintiles are
close to everyone's); the nightly ``segments.tiers`` run ranks all customers together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from core.app import rapport
from core.models import Customer

from plugins.segments.tiers import compute_tiers


def seed_demo(customers: Sequence[Customer], as_of: dt.datetime) -> None:
    if customers:
        compute_tiers(as_of.astimezone(rapport().settings.tz).date(),
                      customer_ids=[c.id for c in customers])
