"""Synthetic, realistic demo data for ``rapport demo``.

Customers get a profile (real cities, plausible demographics, contacts on reserved
example domains and fictional numbers) and a behaviour that drives about a year of
interactions: frequency and basket size differ by customer, some stopped buying months
ago, some joined last month, a few never bought. RFM segments, churn scores and loyalty
tiers therefore have something to find. A few customers registered twice, with a
variation of their name, e-mail or phone, so duplicate detection has work too.

Everything random comes from one ``random.Random``: a seed and an ``as_of`` reproduce the
data exactly. Rows are written with multi-row INSERTs, one transaction per chunk of
customers; the ``rapport_demo_data`` hook then lets each plugin add its own rows.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice
from typing import Any

from sqlalchemy import insert, select

from core import changes as audit
from core.app import rapport
from core.db import db, utcnow
from core.errors import ErrorCode, UserError
from core.ids import global_id
from core.models import (
    Agent, Customer, CustomerExternalId, CustomerStatus, CustomerTag, Interaction,
    LifecycleStage,
)
from core.money import quantize
from core.services import transaction
from core.services.customers import derived_columns, normalise_phone

DEMO_SOURCE = "demo"
DEFAULT_CUSTOMERS = 200
CHUNK_SIZE = 250
YEAR = dt.timedelta(days=365)
#: One customer in TWIN_EVERY registered a second time.
TWIN_EVERY = 40
#: The ORM's bulk INSERT leaves out None values, and starts another statement whenever the
#: next row's set of non-None columns differs; rendering NULLs keeps one statement per page.
ONE_STATEMENT = {"render_nulls": True}


# --- Reference tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class City:
    country: str
    region: str
    name: str
    currency: str
    phone_prefix: str
    language: str
    weight: float  # roughly the metro population, in millions


CITIES: tuple[City, ...] = (
    City("US", "New York", "New York", "USD", "+1", "en", 19.5),
    City("US", "Illinois", "Chicago", "USD", "+1", "en", 9.4),
    City("US", "Texas", "Austin", "USD", "+1", "en", 2.4),
    City("US", "California", "San Francisco", "USD", "+1", "en", 4.6),
    City("US", "Washington", "Seattle", "USD", "+1", "en", 4.0),
    City("US", "Massachusetts", "Boston", "USD", "+1", "en", 4.9),
    City("CA", "Ontario", "Toronto", "CAD", "+1", "en", 6.2),
    City("CA", "Quebec", "Montreal", "CAD", "+1", "fr", 4.3),
    City("GB", "England", "London", "GBP", "+44", "en", 9.6),
    City("GB", "England", "Manchester", "GBP", "+44", "en", 2.8),
    City("GB", "Scotland", "Edinburgh", "GBP", "+44", "en", 0.9),
    City("FR", "Île-de-France", "Paris", "EUR", "+33", "fr", 11.2),
    City("FR", "Auvergne-Rhône-Alpes", "Lyon", "EUR", "+33", "fr", 2.3),
    City("FR", "Provence-Alpes-Côte d'Azur", "Marseille", "EUR", "+33", "fr", 1.9),
    City("DE", "Berlin", "Berlin", "EUR", "+49", "de", 4.5),
    City("DE", "Bavaria", "Munich", "EUR", "+49", "de", 2.9),
    City("DE", "Hamburg", "Hamburg", "EUR", "+49", "de", 2.5),
    City("ES", "Community of Madrid", "Madrid", "EUR", "+34", "es", 6.8),
    City("ES", "Catalonia", "Barcelona", "EUR", "+34", "es", 5.6),
    City("IT", "Lombardy", "Milan", "EUR", "+39", "it", 4.3),
    City("IT", "Lazio", "Rome", "EUR", "+39", "it", 4.2),
    City("JP", "Tokyo", "Tokyo", "JPY", "+81", "ja", 14.0),
    City("JP", "Osaka", "Osaka", "JPY", "+81", "ja", 8.8),
    City("BR", "São Paulo", "São Paulo", "BRL", "+55", "pt", 12.3),
    City("AU", "New South Wales", "Sydney", "AUD", "+61", "en", 5.3),
    City("AU", "Victoria", "Melbourne", "AUD", "+61", "en", 5.1),
)

#: (female, male) given names and family names per language.
GIVEN_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (("Olivia", "Emma", "Amelia", "Sophia", "Isla", "Grace", "Chloe", "Ava", "Emily",
            "Hannah", "Zoe", "Lily"),
           ("Liam", "Noah", "Oliver", "James", "Jack", "Henry", "Lucas", "Ethan", "Samuel",
            "Daniel", "Thomas", "Owen")),
    "fr": (("Camille", "Léa", "Chloé", "Manon", "Inès", "Louise", "Jade", "Élise", "Juliette",
            "Margaux"),
           ("Louis", "Gabriel", "Hugo", "Arthur", "Jules", "Théo", "Raphaël", "Nathan",
            "Antoine", "Étienne")),
    "de": (("Mia", "Hannah", "Lena", "Leonie", "Marie", "Katharina", "Johanna", "Anna",
            "Jana", "Sophie"),
           ("Lukas", "Felix", "Jonas", "Maximilian", "Paul", "Leon", "Moritz", "Tobias",
            "Jan", "Stefan")),
    "es": (("Lucía", "María", "Paula", "Carmen", "Sofía", "Elena", "Marta", "Alba", "Irene"),
           ("Hugo", "Martín", "Pablo", "Alejandro", "Javier", "Diego", "Álvaro", "Sergio",
            "Adrián")),
    "it": (("Giulia", "Sofia", "Aurora", "Chiara", "Francesca", "Alessia", "Martina",
            "Giorgia"),
           ("Leonardo", "Francesco", "Alessandro", "Lorenzo", "Matteo", "Giuseppe", "Marco",
            "Riccardo")),
    "ja": (("Yui", "Aoi", "Sakura", "Hina", "Yuna", "Mei", "Haruka", "Rin"),
           ("Haruto", "Sota", "Yuto", "Riku", "Kaito", "Ren", "Takumi", "Hiroshi")),
    "pt": (("Ana", "Beatriz", "Mariana", "Larissa", "Camila", "Fernanda", "Juliana"),
           ("João", "Pedro", "Lucas", "Gabriel", "Rafael", "Mateus", "Thiago")),
}
FAMILY_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Smith", "Johnson", "Williams", "Brown", "Taylor", "Wilson", "Davies", "Evans",
           "Thomas", "Roberts", "Walker", "Wright", "Robinson", "Thompson", "Hughes", "Clarke",
           "Mitchell", "Campbell", "Anderson", "Murphy"),
    "fr": ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
           "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Fontaine"),
    "de": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
           "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf"),
    "es": ("García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez",
           "Pérez", "Gómez", "Ruiz", "Díaz", "Moreno"),
    "it": ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
           "Marino", "Greco", "Bruno", "Gallo"),
    "ja": ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
           "Kobayashi", "Kato"),
    "pt": ("Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
           "Lima", "Gomes", "Costa"),
}
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # reserved: never delivered

EDUCATION = (("secondary", 0.30), ("vocational", 0.18), ("bachelor", 0.32), ("master", 0.16),
             ("doctorate", 0.04))
#: Income bands and how much a customer's baskets scale with income.
INCOME_BANDS = (("<25k", 0.7), ("25k-50k", 0.85), ("50k-75k", 1.0), ("75k-100k", 1.15),
                ("100k-150k", 1.4), ("150k+", 1.8))
OCCUPATIONS = (
    "teacher", "nurse", "software engineer", "accountant", "sales representative", "student",
    "retired", "electrician", "designer", "physician", "shop assistant", "civil servant",
    "lawyer", "chef", "consultant", "driver", "researcher", "self-employed",
)
#: USD per unit of each currency, rounded: demo baskets are priced in local money.
USD_RATES = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CAD": 0.73, "AUD": 0.66, "JPY": 0.0067,
             "BRL": 0.2}
PURCHASE_CATEGORIES = ("apparel", "electronics", "home", "beauty", "sports", "books",
                       "groceries", "toys")
PURCHASE_CHANNELS = (("web", 0.45), ("app", 0.25), ("store", 0.25), ("phone", 0.05))
CONTACT_KINDS = (("email", 0.34), ("call", 0.2), ("chat", 0.16), ("visit", 0.14),
                 ("service", 0.1), ("note", 0.06))
CALL_TOPICS = ("order status", "billing question", "product advice", "delivery delay",
               "return request", "account access")
EMAIL_SUBJECTS = ("Your order has shipped", "Question about my invoice", "Spring offers",
                  "Thank you for your feedback", "Return label", "Password reset")
SERVICE_TYPES = ("installation", "repair", "maintenance", "warranty check")
NOTES = ("Prefers to be contacted in the morning.", "Asked about the loyalty programme.",
         "Interested in the new collection.", "Complained about a late delivery.",
         "Wants invoices by e-mail only.")
AGENTS = (("Nadia Benali", "Customer care"), ("Tom Becker", "Customer care"),
          ("Sofia Marino", "Sales"), ("Kenji Ito", "Sales"), ("Laura Pérez", "Field service"),
          ("Owen Hughes", "Field service"))


@dataclass(frozen=True)
class Behaviour:
    """How a kind of customer buys: the spread that makes RFM segments meaningful."""

    name: str
    share: float
    purchases_per_year: float
    basket_usd: float
    contacts_per_year: float
    stopped_days: tuple[int, int]  # days before as_of since the last activity
    joined_days: tuple[int, int]   # days before as_of the customer was created
    stage: LifecycleStage


BEHAVIOURS = (
    Behaviour("champion", 0.10, 30, 110, 10, (0, 10), (400, 2000), LifecycleStage.LOYAL),
    Behaviour("loyal", 0.18, 12, 70, 6, (0, 30), (400, 2000), LifecycleStage.LOYAL),
    Behaviour("regular", 0.24, 6, 45, 4, (0, 60), (200, 1500), LifecycleStage.CUSTOMER),
    Behaviour("newcomer", 0.12, 8, 40, 4, (0, 7), (10, 75), LifecycleStage.TRIAL),
    Behaviour("at_risk", 0.14, 10, 60, 5, (110, 200), (400, 1500), LifecycleStage.AT_RISK),
    Behaviour("lapsed", 0.14, 6, 35, 2, (240, 340), (400, 2500), LifecycleStage.LAPSED),
    Behaviour("prospect", 0.08, 0, 0, 3, (0, 60), (5, 300), LifecycleStage.PROSPECT),
)
REFUND_RATE = 0.05


# --- Plans: what to write, before ids exist ----------------------------------------------


@dataclass
class CustomerPlan:
    external_id: str
    profile: dict[str, Any]
    tags: list[str]
    behaviour: Behaviour
    currency: str
    spend_factor: float
    created_at: dt.datetime
    owner: int | None = None  # index into AGENTS, set for VIP and B2B customers
    twin_of: str | None = None  # external id of the customer registered first


@dataclass
class DemoSummary:
    seed: int
    as_of: dt.datetime
    customers: int = 0
    interactions: int = 0
    agents: int = 0
    #: (first registration, second registration) customer ids.
    near_duplicates: list[tuple[int, int]] = field(default_factory=list)


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([value for value, _ in pairs], [weight for _, weight in pairs])[0]


def _income_band(rng: random.Random, education: str) -> tuple[str, float]:
    """Income rises with education, with a wide spread around it."""
    level = [name for name, _ in EDUCATION].index(education)
    index = round(rng.gauss(1 + level * 0.5, 1.1))
    return INCOME_BANDS[min(len(INCOME_BANDS) - 1, max(0, index))]


def _occupation(rng: random.Random, age: int) -> str:
    if age < 23 and rng.random() < 0.6:
        return "student"
    if age > 66 and rng.random() < 0.8:
        return "retired"
    return rng.choice(OCCUPATIONS)


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in ".-"))


class _Planner:
    """Draws customer plans one by one.

    It remembers e-mails, phones and names per city, so that only the planned twins look
    like duplicates (a city holds a few hundred combinations of the names above).
    """

    #: Draws of another name before accepting a namesake in the same city.
    NAME_ATTEMPTS = 20

    def __init__(self, rng: random.Random, as_of: dt.datetime, base_currency: str):
        self.rng = rng
        self.as_of = as_of
        self.base_currency = base_currency
        self.emails: set[str] = set()
        self.phones: set[str | None] = set()
        self.names: set[tuple[str, str]] = set()

    def plans(self, count: int) -> Iterator[CustomerPlan]:
        previous: CustomerPlan | None = None
        for number in range(1, count + 1):
            external_id = f"D{number:06d}"
            if previous is not None and number % TWIN_EVERY == 0:
                plan = self._twin(previous, external_id, number)
            else:
                plan = self._customer(external_id)
            previous = plan
            yield plan

    def _customer(self, external_id: str) -> CustomerPlan:
        rng = self.rng
        city = rng.choices(CITIES, [c.weight for c in CITIES])[0]
        gender = _weighted(rng, (("female", 0.49), ("male", 0.48), ("non-binary", 0.03)))
        given, name = self._name(city, gender)
        behaviour = rng.choices(BEHAVIOURS, [b.share for b in BEHAVIOURS])[0]
        education = _weighted(rng, EDUCATION)
        income_band, income_factor = _income_band(rng, education)
        age = int(rng.triangular(18, 88, 38))
        born = self.as_of.date() - dt.timedelta(days=age * 365 + rng.randrange(365))
        local = city.currency != self.base_currency and rng.random() < 0.15
        tags = [tag for tag, chance in (("newsletter", 0.45), ("app_user", 0.3), ("b2b", 0.06),
                                        ("events", 0.1)) if rng.random() < chance]
        if behaviour.name == "champion":
            tags.append("vip")
        profile = {
            "name": name, "email": self._email(given, name), "phone": self._phone(city),
            "birth_date": born, "gender": gender, "education": education,
            "occupation": _occupation(rng, age), "income_band": income_band,
            "country": city.country, "region": city.region, "city": city.name,
            "lifecycle_stage": behaviour.stage,
            "attributes": {"preferred_channel": _weighted(rng, PURCHASE_CHANNELS),
                           "marketing_opt_in": "newsletter" in tags},
        }
        joined = self.as_of - dt.timedelta(days=rng.randint(*behaviour.joined_days),
                                           seconds=rng.randrange(86_400))
        return CustomerPlan(
            external_id=external_id, profile=profile, tags=tags, behaviour=behaviour,
            currency=city.currency if local else self.base_currency,
            spend_factor=income_factor * rng.lognormvariate(0, 0.25), created_at=joined,
            owner=rng.randrange(len(AGENTS)) if {"vip", "b2b"} & set(tags) else None)

    def _name(self, city: City, gender: str) -> tuple[str, str]:
        female, male = GIVEN_NAMES[city.language]
        pool = female if gender == "female" else male if gender == "male" else female + male
        for _ in range(self.NAME_ATTEMPTS):
            given = self.rng.choice(pool)
            name = f"{given} {self.rng.choice(FAMILY_NAMES[city.language])}"
            if (city.name, name) not in self.names:
                break
        self.names.add((city.name, name))
        return given, name

    def _email(self, given: str, name: str) -> str:
        family = name.split(" ", 1)[1]
        base = f"{_ascii(given)}.{_ascii(family)}".lower()
        domain = self.rng.choice(EMAIL_DOMAINS)
        email, n = f"{base}@{domain}", 1
        while email in self.emails:
            n += 1
            email = f"{base}{n}@{domain}"
        self.emails.add(email)
        return email

    def _phone(self, city: City) -> str:
        while True:
            phone = self._phone_number(city)
            if normalise_phone(phone) not in self.phones:
                self.phones.add(normalise_phone(phone))
                return phone

    def _phone_number(self, city: City) -> str:
        rng = self.rng
        if city.phone_prefix == "+1":  # 555-01xx numbers are reserved for fiction
            return f"+1 {rng.randint(201, 989)} 555 01{rng.randint(0, 99):02d}"
        return (f"{city.phone_prefix} {rng.randint(10, 99)} {rng.randint(100, 999)} "
                f"{rng.randint(1000, 9999)}")

    def _twin(self, first: CustomerPlan, external_id: str, number: int) -> CustomerPlan:
        """The same person registered again: one variation duplicate detection should see."""
        rng = self.rng
        profile = dict(first.profile)
        variation = number // TWIN_EVERY % 3
        given, family = profile["name"].split(" ", 1)
        if variation == 0:  # the same e-mail typed in another case, no phone
            profile["email"] = profile["email"].capitalize()
            profile["phone"] = None
        elif variation == 1:  # the same phone written without spaces, another e-mail
            profile["phone"] = profile["phone"].replace(" ", "")
            profile["email"] = self._email(given, f"{given} {family}x")
        else:  # a typo in the name, in the same city, no contact details
            cut = rng.randrange(1, len(family))
            profile["name"] = f"{given} {family[:cut]}{family[cut - 1]}{family[cut:]}"
            profile["email"] = profile["phone"] = None
        profile["lifecycle_stage"] = LifecycleStage.PROSPECT
        registered = first.created_at + (self.as_of - first.created_at) * rng.uniform(0.3, 0.9)
        return CustomerPlan(
            external_id=external_id, profile=profile, tags=[], behaviour=BEHAVIOURS[-1],
            currency=first.currency, spend_factor=first.spend_factor, created_at=registered,
            twin_of=first.external_id)


# --- Interactions -----------------------------------------------------------------------


@dataclass
class _Purchase:
    row: dict[str, Any]
    refund: dict[str, Any] | None


def _event_times(rng: random.Random, per_year: float, start: dt.datetime, end: dt.datetime
                 ) -> list[dt.datetime]:
    """A Poisson process of ``per_year`` events between ``start`` and ``end``."""
    if per_year <= 0 or end <= start:
        return []
    times: list[dt.datetime] = []
    at = start
    mean_gap_days = 365 / per_year
    while True:
        at += dt.timedelta(days=rng.expovariate(1 / mean_gap_days))
        if at >= end:
            return times
        times.append(at)


def _window(rng: random.Random, plan: CustomerPlan, as_of: dt.datetime
            ) -> tuple[dt.datetime, dt.datetime]:
    start = max(plan.created_at, as_of - YEAR)
    end = as_of - dt.timedelta(days=rng.randint(*plan.behaviour.stopped_days))
    return start, end


def _interaction(customer_id: int, kind: str, at: dt.datetime, *, channel: str | None,
                 payload: dict[str, Any], amount: Decimal | None = None,
                 currency: str | None = None, agent_id: int | None = None) -> dict[str, Any]:
    # Every row has every key: a multi-row INSERT takes one shape.
    return {"customer_id": customer_id, "kind": kind, "channel": channel, "occurred_at": at,
            "amount": amount, "currency": currency, "payload": payload, "source": None,
            "external_id": None, "refers_to_id": None, "agent_id": agent_id,
            "recorded_at": at}


def _purchases(rng: random.Random, plan: CustomerPlan, customer_id: int,
               start: dt.datetime, end: dt.datetime, as_of: dt.datetime) -> list[_Purchase]:
    behaviour = plan.behaviour
    rate = behaviour.purchases_per_year * rng.lognormvariate(0, 0.3)
    basket = behaviour.basket_usd * plan.spend_factor / USD_RATES.get(plan.currency, 1.0)
    times = _event_times(rng, rate, start, end)
    if not times and rate > 0 and end > start:
        times = [start + (end - start) * rng.random()]  # a customer has bought at least once
    purchases: list[_Purchase] = []
    for at in times:
        amount = quantize(Decimal(str(round(max(basket * 0.05, rng.lognormvariate(
            math.log(basket), 0.55)), 2))), plan.currency)
        channel = _weighted(rng, PURCHASE_CHANNELS)
        row = _interaction(customer_id, "purchase", at, channel=channel, amount=amount,
                           currency=plan.currency,
                           payload={"items": rng.randint(1, 6),
                                    "category": rng.choice(PURCHASE_CATEGORIES)})
        refund = None
        refunded_at = at + dt.timedelta(days=rng.uniform(1, 20))
        if rng.random() < REFUND_RATE and refunded_at < as_of:
            share = Decimal(1) if rng.random() < 0.7 else Decimal(rng.randint(10, 60)) / 100
            refund = _interaction(customer_id, "refund", refunded_at, channel=channel,
                                  amount=quantize(amount * share, plan.currency),
                                  currency=plan.currency,
                                  payload={"reason": rng.choice(
                                      ("damaged", "wrong size", "changed mind", "late"))})
        purchases.append(_Purchase(row, refund))
    return purchases


def _contacts(rng: random.Random, plan: CustomerPlan, customer_id: int, start: dt.datetime,
              end: dt.datetime, city: str, agent_ids: Sequence[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for at in _event_times(rng, plan.behaviour.contacts_per_year, start, end):
        kind = _weighted(rng, CONTACT_KINDS)
        agent = rng.choice(agent_ids) if kind in ("call", "service", "note") else None
        channel, payload = _contact_details(rng, kind, city)
        rows.append(_interaction(customer_id, kind, at, channel=channel, payload=payload,
                                 agent_id=agent))
    return rows


def _contact_details(rng: random.Random, kind: str, city: str
                     ) -> tuple[str | None, dict[str, Any]]:
    """The channel and payload a contact of ``kind`` typically has."""
    if kind == "email":
        return "email", {"subject": rng.choice(EMAIL_SUBJECTS),
                         "direction": rng.choice(("inbound", "outbound"))}
    if kind == "call":
        return "phone", {"topic": rng.choice(CALL_TOPICS),
                         "duration_s": int(rng.lognormvariate(5.3, 0.6))}
    if kind == "chat":
        return "web_chat", {"messages": rng.randint(2, 30)}
    if kind == "visit":
        return "store", {"store": city}
    if kind == "service":
        return rng.choice(("store", "field", "remote")), {"type": rng.choice(SERVICE_TYPES)}
    return None, {"text": rng.choice(NOTES)}


def _insert_interactions(rng: random.Random, plans: Sequence[CustomerPlan],
                         customer_ids: Sequence[int], agent_ids: Sequence[int],
                         as_of: dt.datetime) -> int:
    """Purchases first (their ids come back), then refunds naming them, then contacts."""
    purchases: list[_Purchase] = []
    contacts: list[dict[str, Any]] = []
    for plan, customer_id in zip(plans, customer_ids):
        start, end = _window(rng, plan, as_of)
        purchases += _purchases(rng, plan, customer_id, start, end, as_of)
        contacts += _contacts(rng, plan, customer_id, start, end, plan.profile["city"],
                              agent_ids)
    refunds: list[dict[str, Any]] = []
    if purchases:
        ids = db.session.scalars(
            insert(Interaction).returning(Interaction.id, sort_by_parameter_order=True),
            [p.row for p in purchases], execution_options=ONE_STATEMENT).all()
        refunds = [p.refund | {"refers_to_id": purchase_id}
                   for p, purchase_id in zip(purchases, ids) if p.refund is not None]
    for rows in (refunds, contacts):
        if rows:
            db.session.execute(insert(Interaction), rows, execution_options=ONE_STATEMENT)
    return len(purchases) + len(refunds) + len(contacts)


# --- Writing ----------------------------------------------------------------------------


def _insert_agents(as_of: dt.datetime) -> list[int]:
    rows = [{"name": name, "team": team, "active": True, "created_at": as_of - 2 * YEAR,
             "email": f"{_ascii(name.replace(' ', '.')).lower()}@staff.example.com"}
            for name, team in AGENTS]
    return list(db.session.scalars(
        insert(Agent).returning(Agent.id, sort_by_parameter_order=True), rows))


def _insert_customers(plans: Sequence[CustomerPlan], agent_ids: Sequence[int]) -> list[int]:
    rows = [plan.profile | derived_columns(
        plan.profile["email"], plan.profile["phone"], plan.profile["name"]) | {
        "status": CustomerStatus.ACTIVE,
        "owner_id": agent_ids[plan.owner] if plan.owner is not None else None,
        "created_at": plan.created_at, "updated_at": plan.created_at,
    } for plan in plans]
    ids = list(db.session.scalars(
        insert(Customer).returning(Customer.id, sort_by_parameter_order=True), rows,
        execution_options=ONE_STATEMENT))
    db.session.execute(insert(CustomerExternalId), [
        {"customer_id": cid, "source": DEMO_SOURCE, "external_id": plan.external_id}
        for cid, plan in zip(ids, plans)])
    tags = [{"customer_id": cid, "tag": tag} for cid, plan in zip(ids, plans)
            for tag in plan.tags]
    if tags:
        db.session.execute(insert(CustomerTag), tags)
    return ids


def _refuse_second_run() -> None:
    if db.session.scalar(select(CustomerExternalId.id).where(
            CustomerExternalId.source == DEMO_SOURCE).limit(1)) is not None:
        raise UserError.single(
            "This database already holds demo data (customers of source 'demo'); use a "
            "fresh database for another demo.", ErrorCode.CONFLICT)


def _record_chunk(customer_ids: Sequence[int], interactions: int) -> None:
    """One audit entry and one summarising event per chunk, like an import batch."""
    first, last = global_id("Customer", min(customer_ids)), global_id("Customer",
                                                                      max(customer_ids))
    counts = {"recorded": len(customer_ids), "interactions": interactions}
    audit.record(None, [], {**{k: [None, v] for k, v in counts.items()},
                            "firstId": [None, first], "lastId": [None, last]},
                 [audit.Event("customers.imported", first, {
                     **counts, "source": DEMO_SOURCE, "firstId": first, "lastId": last})])


def generate_demo(count: int = DEFAULT_CUSTOMERS, seed: int | None = None,
                  as_of: dt.datetime | None = None, *, chunk_size: int = CHUNK_SIZE,
                  on_progress: Callable[[int], None] | None = None) -> DemoSummary:
    """Write ``count`` demo customers with a year of interactions each, then plugins' rows.

    ``seed`` (random when None; the summary says which) and ``as_of`` (default: now)
    reproduce the data. ``on_progress`` receives the number of customers of each chunk
    once it is committed.
    """
    if count < 1:
        raise UserError.single("Ask for at least one customer.", ErrorCode.INVALID,
                               "customers")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    as_of = (as_of or utcnow()).astimezone(dt.timezone.utc)
    rng = random.Random(seed)
    summary = DemoSummary(seed=seed, as_of=as_of)
    _refuse_second_run()
    agent_ids: list[int] = []
    planner = _Planner(rng, as_of, rapport().settings.base_currency)
    plans = planner.plans(count)
    ids_by_external: dict[str, int] = {}  # twins name a customer of an earlier chunk
    while chunk := list(islice(plans, chunk_size)):
        with transaction():
            if not agent_ids:  # in the first chunk's transaction: a failed demo leaves nothing
                agent_ids = _insert_agents(as_of)
                summary.agents = len(agent_ids)
            ids = _insert_customers(chunk, agent_ids)
            added = _insert_interactions(rng, chunk, ids, agent_ids, as_of)
            summary.interactions += added
            _record_chunk(ids, added)
            customers = db.session.scalars(
                select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)).all()
            rapport().hook.rapport_demo_data(rng=rng, customers=customers, as_of=as_of)
        for plan, customer_id in zip(chunk, ids):
            if plan.twin_of is not None:
                summary.near_duplicates.append((ids_by_external[plan.twin_of], customer_id))
            ids_by_external[plan.external_id] = customer_id
        summary.customers += len(chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    return summary


__all__ = ["CITIES", "DEFAULT_CUSTOMERS", "DEMO_SOURCE", "DemoSummary", "generate_demo"]
