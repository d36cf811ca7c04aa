"""Demo rows for ``rapport demo``: two surveys with answers that hang together, so every
analysis has something to show.

- "After-purchase satisfaction" (named): NPS, an overall rating (1-5), six 1-7 items
  driven by two latent factors (delivery and service; one delivery item reverse-keyed),
  a channel, what the customer liked, an occasional comment. Scales "Delivery" and
  "Service". About 40% of each chunk's customers answer, some twice.
- "Website experience" (anonymous): NPS and four 1-5 items driven by one factor; about
  one response per three customers, with no customer recorded.

``rapport_demo_data`` fires once per chunk of customers: the surveys are made by the
first chunk and found again by title afterwards. Rows are bulk-inserted (no hooks fire),
like core's demo rows.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select

from core.db import db
from core.models import Customer

from plugins.surveys.models import Question, QuestionType, Response, Scale, Survey, SurveyState

HISTORY_DAYS = 180
NAMED, ANONYMOUS = "After-purchase satisfaction", "Website experience"
R = QuestionType.RATING

_NAMED_ITEMS = [  # key, text, factor, loading, reverse
    ("delivery_speed", "My order arrived quickly", "delivery", 0.85, False),
    ("delivery_care", "My order arrived in good condition", "delivery", 0.7, False),
    ("delivery_late", "Delivery took longer than promised", "delivery", 0.75, True),
    ("staff_friendly", "Staff were friendly", "service", 0.8, False),
    ("staff_knowledge", "Staff knew the products", "service", 0.75, False),
    ("staff_helpful", "Staff solved my problem", "service", 0.85, False),
]
_WEB_ITEMS = [("find", "It was easy to find what I wanted"), ("speed", "Pages loaded fast"),
              ("checkout", "Checkout was simple"), ("trust", "I trust the site with my data")]
_COMMENTS = ["Great service, thanks!", "Parcel came a day late.", "Friendly staff.",
             "Packaging could be better.", "Will order again."]


def _question(survey_id: int, position: int, key: str, text: str, kind: QuestionType,
              **extra: Any) -> Question:
    extra = {"required": False, "labels": {}, "options": [], **extra}
    return Question(survey_id=survey_id, key=key, position=position, text=text, type=kind,
                    **extra)


def _named_survey(as_of: dt.datetime) -> Survey:
    opened = as_of - dt.timedelta(days=HISTORY_DAYS)
    survey = Survey(title=NAMED, description="Sent a few days after each purchase.",
                    state=SurveyState.OPEN, anonymous=False, overall_question_key="overall",
                    created_at=opened, updated_at=opened, opened_at=opened)
    db.session.add(survey)
    db.session.flush()
    questions = [
        _question(survey.id, 0, "nps", "How likely are you to recommend us to a friend?",
                  QuestionType.NPS, required=True),
        _question(survey.id, 1, "overall", "Overall, how satisfied are you?", R, scale_min=1,
                  scale_max=5, required=True),
        *[_question(survey.id, 2 + i, key, text, R, scale_min=1, scale_max=7)
          for i, (key, text, *_) in enumerate(_NAMED_ITEMS)],
        _question(survey.id, 8, "channel", "How did you order?", QuestionType.SINGLE_CHOICE,
                  options=[{"key": "web", "label": "Website"}, {"key": "app", "label": "App"},
                           {"key": "store", "label": "In store"}]),
        _question(survey.id, 9, "liked", "What did you like?", QuestionType.MULTI_CHOICE,
                  options=[{"key": "price", "label": "Price"},
                           {"key": "range", "label": "Product range"},
                           {"key": "delivery", "label": "Delivery"},
                           {"key": "staff", "label": "Staff"}]),
        _question(survey.id, 10, "comment", "Anything else?", QuestionType.TEXT),
    ]
    questions[1].labels = {"1": "Very dissatisfied", "5": "Very satisfied"}
    db.session.add_all(questions)
    db.session.add_all([
        Scale(survey_id=survey.id, name="Delivery", items=[
            {"key": "delivery_speed", "reverse": False}, {"key": "delivery_care",
                                                          "reverse": False},
            {"key": "delivery_late", "reverse": True}]),
        Scale(survey_id=survey.id, name="Service", items=[
            {"key": k, "reverse": False}
            for k in ("staff_friendly", "staff_knowledge", "staff_helpful")])])
    return survey


def _anonymous_survey(as_of: dt.datetime) -> Survey:
    opened = as_of - dt.timedelta(days=HISTORY_DAYS)
    survey = Survey(title=ANONYMOUS, description="Pop-up after checkout; anonymous.",
                    state=SurveyState.OPEN, anonymous=True,
                    collection_token=secrets.token_urlsafe(24), created_at=opened,
                    updated_at=opened, opened_at=opened)
    db.session.add(survey)
    db.session.flush()
    db.session.add(_question(survey.id, 0, "nps", "Would you recommend our website?",
                             QuestionType.NPS, required=True))
    db.session.add_all([_question(survey.id, 1 + i, key, text, R, scale_min=1, scale_max=5)
                        for i, (key, text) in enumerate(_WEB_ITEMS)])
    return survey


def _surveys(as_of: dt.datetime) -> tuple[Survey, Survey]:
    found = {s.title: s for s in db.session.scalars(select(Survey).where(
        Survey.title.in_([NAMED, ANONYMOUS])))}
    named = found.get(NAMED) or _named_survey(as_of)
    anonymous = found.get(ANONYMOUS) or _anonymous_survey(as_of)
    return named, anonymous


def _point(rng: random.Random, latent: float, low: int, high: int, loading: float = 0.8
           ) -> int:
    """A scale point from a standard-normal latent score plus noise."""
    z = loading * latent + (1 - loading ** 2) ** 0.5 * rng.gauss(0, 1)
    middle, spread = (low + high) / 2, (high - low) / 4
    return max(low, min(high, round(middle + spread * z)))


def _named_answers(rng: random.Random) -> dict[str, Any]:
    delivery, service = rng.gauss(0, 1), rng.gauss(0, 1)
    latent = {"delivery": delivery, "service": 0.3 * delivery + 0.95 * service}
    numbers: dict[str, int] = {}
    for key, _, factor, loading, reverse in _NAMED_ITEMS:
        if rng.random() < 0.04:
            continue  # an item left out now and then
        numbers[key] = _point(rng, -latent[factor] if reverse else latent[factor], 1, 7,
                              loading)
    overall = 0.55 * latent["delivery"] + 0.55 * latent["service"]
    numbers["overall"] = _point(rng, overall / 0.85, 1, 5, 0.85)
    numbers["nps"] = max(0, min(10, round(7.2 + 2.2 * overall + rng.gauss(0, 1.2))))
    liked = sorted(k for k, p in (("price", 0.35), ("range", 0.3),
                                  ("delivery", 0.25 + 0.15 * (delivery > 0)),
                                  ("staff", 0.25 + 0.15 * (service > 0))) if rng.random() < p)
    choices: dict[str, Any] = {"channel": rng.choices(["web", "app", "store"], [5, 3, 2])[0]}
    if liked:
        choices["liked"] = liked
    texts = {"comment": rng.choice(_COMMENTS)} if rng.random() < 0.15 else {}
    return {"numbers": numbers, "choices": choices, "texts": texts}


def _web_answers(rng: random.Random) -> dict[str, Any]:
    latent = rng.gauss(0, 1)
    numbers = {key: _point(rng, latent, 1, 5, 0.75) for key, _ in _WEB_ITEMS}
    numbers["nps"] = max(0, min(10, round(7 + 2 * latent + rng.gauss(0, 1.3))))
    return {"numbers": numbers, "choices": {}, "texts": {}}


def seed_demo(rng: random.Random, customers: Sequence[Customer], as_of: dt.datetime) -> None:
    named, anonymous = _surveys(as_of)
    rows: list[dict[str, Any]] = []

    def when() -> dt.datetime:
        return as_of - dt.timedelta(days=rng.uniform(0, HISTORY_DAYS - 1))

    for customer in customers:
        if rng.random() >= 0.4:
            continue
        for _ in range(1 if rng.random() < 0.8 else 2):
            at = when()
            rows.append({"survey_id": named.id, "anonymous": False, "customer_id": customer.id,
                         "submitted_at": at, "recorded_at": at, **_named_answers(rng)})
    for _ in range(len(customers) // 3):
        at = when()
        rows.append({"survey_id": anonymous.id, "anonymous": True, "customer_id": None,
                     "submitted_at": at, "recorded_at": at, **_web_answers(rng)})
    if rows:
        db.session.execute(insert(Response), rows)
