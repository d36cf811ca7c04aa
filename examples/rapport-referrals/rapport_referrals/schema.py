from __future__ import annotations

from collections import defaultdict
from typing import Any

import graphene
from sqlalchemy import func, select

from api import (
    CustomerType, RapportLoader, RapportMutation, ctx, domain, error_type, global_id, page_size,
    scoped,
)
from api.loaders import CustomerByIdLoader
from core.db import db
from rapport_referrals import service
from rapport_referrals.models import Referral as ReferralRow

ReferralError = error_type("Referral")


@domain("referrals")
class Referral(graphene.ObjectType):
    referrer = graphene.Field(CustomerType, required=True)
    referred = graphene.Field(CustomerType, required=True)
    referred_at = graphene.DateTime(required=True)
    note = graphene.String()

    @staticmethod
    def resolve_referrer(root: ReferralRow, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.referrer_id)

    @staticmethod
    def resolve_referred(root: ReferralRow, info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root.referred_id)


class ReferralsByReferrerLoader(RapportLoader):
    def load_batch(self, keys: list[int]) -> list[list[ReferralRow]]:
        found: dict[int, list[ReferralRow]] = defaultdict(list)
        for row in db.session.scalars(select(ReferralRow).where(
                ReferralRow.referrer_id.in_(keys)).order_by(ReferralRow.referred_at)):
            found[row.referrer_id].append(row)
        return [found.get(k, []) for k in keys]


def resolve_customer_referrals(root: Any, info: Any) -> Any:
    return ctx(info).loader(ReferralsByReferrerLoader).load(root.id)


@domain("referrals")
class TopReferrer(graphene.ObjectType):
    customer = graphene.Field(CustomerType, required=True)
    referrals = graphene.Int(required=True)

    @staticmethod
    def resolve_customer(root: tuple[int, int], info: Any) -> Any:
        return ctx(info).loader(CustomerByIdLoader).load(root[0])

    @staticmethod
    def resolve_referrals(root: tuple[int, int], info: Any) -> int:
        return root[1]


TOP_REFERRERS = 10


def resolve_top_referrers(root: Any, info: Any, first: int | None = TOP_REFERRERS
                          ) -> list[tuple[int, int]]:
    # A client may send an explicit null: it means the default, as on connections; a
    # size out of 0..100 is the client's error (page_size says so), never a crash.
    limit = TOP_REFERRERS if first is None else page_size(first)
    count = func.count(ReferralRow.id)
    stmt = (select(ReferralRow.referrer_id, count).group_by(ReferralRow.referrer_id)
            .order_by(count.desc(), ReferralRow.referrer_id).limit(limit))
    return [(referrer, n) for referrer, n in db.session.execute(stmt)]


class RecordReferralInput(graphene.InputObjectType):
    referrer_id = graphene.ID(required=True)
    referred_id = graphene.ID(required=True)
    referred_at = graphene.DateTime()
    note = graphene.String()


class RecordReferral(RapportMutation):
    class Arguments:
        input = RecordReferralInput(required=True)

    referral = graphene.Field(Referral)
    scope = "referrals:write"
    error_type = ReferralError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RecordReferral:
        data = dict(input)
        data["referrer_id"] = global_id(data, "referrer_id", "Customer")
        data["referred_id"] = global_id(data, "referred_id", "Customer")
        if data.get("referred_at") is not None:
            data["referred_at"] = data["referred_at"].isoformat()
        return cls(referral=service.record_referral(data))


def customer_fields() -> dict[str, graphene.Field]:
    return {"referrals": scoped(graphene.Field(
        graphene.List(graphene.NonNull(Referral)), required=True,
        resolver=resolve_customer_referrals,
        description="Customers this customer brought in."), "referrals:read")}


def query_fields() -> dict[str, graphene.Field]:
    return {"topReferrers": scoped(graphene.Field(
        graphene.List(graphene.NonNull(TopReferrer)), required=True,
        first=graphene.Int(default_value=TOP_REFERRERS), resolver=resolve_top_referrers),
        "referrals:read")}
