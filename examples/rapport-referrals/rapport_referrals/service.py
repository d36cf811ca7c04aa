from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import select

from core.db import db
from core.errors import ErrorCode, UserError
from core.ids import shown_id
from core.models import Customer, CustomerStatus
from core.services import load, transaction
from rapport_referrals.models import Referral


class ReferralSchema(Schema):
    referrer_id = fields.Integer(required=True)
    referred_id = fields.Integer(required=True)
    referred_at = fields.AwareDateTime(default_timezone=None)
    note = fields.String(validate=validate.Length(max=500), allow_none=True)


def record_referral(raw: Mapping[str, Any]) -> Referral:
    data = load(ReferralSchema(), raw)
    if data["referrer_id"] == data["referred_id"]:
        raise UserError.single("A customer cannot refer themselves.", ErrorCode.INVALID,
                               "referredId")
    with transaction():
        found = dict(db.session.execute(select(Customer.id, Customer.status).where(
            Customer.id.in_([data["referrer_id"], data["referred_id"]]))).all())
        for key, field in (("referrer_id", "referrerId"), ("referred_id", "referredId")):
            status = found.get(data[key])
            if status is None:
                raise UserError.single(f"No customer with id "
                                       f"{shown_id('Customer', data[key])}.",
                                       ErrorCode.NOT_FOUND, field)
            if status == CustomerStatus.ERASED:
                raise UserError.single("That customer is erased.", ErrorCode.NOT_ALLOWED, field)
        if db.session.scalar(select(Referral.id).where(
                Referral.referred_id == data["referred_id"])) is not None:
            raise UserError.single("This customer already has a referrer.", ErrorCode.UNIQUE,
                                   "referredId")
        referral = Referral(**{k: v for k, v in data.items() if v is not None})
        db.session.add(referral)
    return referral
