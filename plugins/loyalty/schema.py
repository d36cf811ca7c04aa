"""GraphQL: ``Customer.loyalty``, ``loyaltyProgram``, ``loyaltyReport`` and the mutations."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import graphene
from graphene import relay

from api import (
    Money, RapportMutation, connection, ctx, domain, error_type, global_id, load_related,
    node_type, page_size, scoped,
)
from api.loaders import AgentByIdLoader, InteractionByIdLoader
from api.limits import REPORT_COST, costly
from api.pagination import bad_input
from core.errors import UserError
from api.types import Agent, Interaction
from core.db import utcnow
from core.money import quantize

from plugins.loyalty import programme, report, service
from plugins.loyalty.config import loyalty_settings
from plugins.loyalty.errors import CODES
from plugins.loyalty.loaders import (
    NEWEST_ENTRIES, ExpiringPointsByCustomerLoader, LoyaltyAccountByCustomerLoader,
    LoyaltyEarnRuleByIdLoader, LoyaltyLedgerByCustomerLoader,
    LoyaltyLedgerCountByCustomerLoader, LoyaltyLedgerEntryByIdLoader, LoyaltyRewardByIdLoader, LoyaltyTierByIdLoader,
    PointsToNextTierByCustomerLoader, TierHistoryByCustomerLoader,
)
from plugins.loyalty.models import (
    CapPeriod, EarnRule, EntryKind, LedgerEntry, Reward, Rounding, Tier, TierChange,
    TierChangeReason,
)

READ, WRITE = "loyalty:read", "loyalty:write"

LoyaltyError = error_type("Loyalty", CODES)
LoyaltyEntryKind = graphene.Enum.from_enum(EntryKind, name="LoyaltyEntryKind")
LoyaltyRounding = graphene.Enum.from_enum(Rounding, name="LoyaltyRounding", description=(
    "How fractional points round: DOWN (floor), NEAREST (half up), UP (ceiling)."))
LoyaltyCapPeriod = graphene.Enum.from_enum(CapPeriod, name="LoyaltyCapPeriod", description=(
    "Calendar period of a cap, in the business time zone (weeks start on Monday)."))
LoyaltyTierChangeReason = graphene.Enum.from_enum(TierChangeReason,
                                                  name="LoyaltyTierChangeReason")


def _retired(root: Any, info: Any) -> bool:
    return root.retired_at is not None


# --- Programme types -------------------------------------------------------------------------


@domain("loyalty")
@node_type(Tier)
class LoyaltyTier(graphene.ObjectType):
    """A member level: reached with ``thresholdPoints`` qualifying points earned (net of
    refunds) over the last ``windowMonths`` months."""

    class Meta:
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    threshold_points = graphene.Int(required=True)
    window_months = graphene.Int(required=True)
    discount_percent = graphene.Decimal(required=True)
    earn_multiplier = graphene.Decimal(required=True)
    benefits = graphene.String()
    retired = graphene.Boolean(required=True, resolver=_retired)
    retired_at = graphene.DateTime()

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(LoyaltyTierByIdLoader).load(int(id))


@domain("loyalty")
@node_type(EarnRule)
class LoyaltyEarnRule(graphene.ObjectType):
    """Points for interactions of ``kind`` dated within [validFrom, validUntil):
    ``pointsPerUnit`` per unit of ``currency`` and/or ``bonusPoints`` per interaction, times
    the member's tier multiplier, rounded, at most ``capPoints`` per ``capPeriod``."""

    class Meta:
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    description = graphene.String()
    kind = graphene.String(required=True)
    currency = graphene.String()
    points_per_unit = graphene.Decimal()
    rounding = graphene.Field(LoyaltyRounding, required=True)
    minimum_amount = graphene.Field(Money)
    bonus_points = graphene.Int()
    cap_points = graphene.Int()
    cap_period = graphene.Field(LoyaltyCapPeriod)
    expiry_months = graphene.Int(description="Months before earned points expire; null: never.")
    valid_from = graphene.DateTime(required=True)
    valid_until = graphene.DateTime()
    in_force = graphene.Boolean(required=True)
    retired = graphene.Boolean(required=True, resolver=_retired)
    retired_at = graphene.DateTime()
    supersedes = graphene.Field(lambda: LoyaltyEarnRule, description=(
        "The earlier version this rule replaced when its terms changed while in force."))

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(LoyaltyEarnRuleByIdLoader).load(int(id))

    @staticmethod
    def resolve_minimum_amount(root: EarnRule, info: Any) -> Money | None:
        if root.minimum_amount is None or root.currency is None:
            return None
        return Money(amount=quantize(root.minimum_amount, root.currency), currency=root.currency)

    @staticmethod
    def resolve_in_force(root: EarnRule, info: Any) -> bool:
        now = utcnow()
        return root.valid_from <= now and (root.valid_until is None or now < root.valid_until)

    @staticmethod
    def resolve_supersedes(root: EarnRule, info: Any) -> Any:
        return load_related(info, LoyaltyEarnRuleByIdLoader, root.supersedes_id)


@domain("loyalty")
@node_type(Reward)
class LoyaltyReward(graphene.ObjectType):
    class Meta:
        interfaces = (relay.Node,)

    name = graphene.String(required=True)
    description = graphene.String()
    point_cost = graphene.Int(required=True)
    stock = graphene.Int(description="Units left; null: unlimited.")
    valid_from = graphene.DateTime()
    valid_until = graphene.DateTime()
    available = graphene.Boolean(required=True, description=(
        "Offered now: not retired, within its validity, in stock."))
    retired = graphene.Boolean(required=True, resolver=_retired)
    retired_at = graphene.DateTime()

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(LoyaltyRewardByIdLoader).load(int(id))

    @staticmethod
    def resolve_available(root: Reward, info: Any) -> bool:
        now = utcnow()
        return (root.retired_at is None and root.stock != 0
                and (root.valid_from is None or root.valid_from <= now)
                and (root.valid_until is None or now < root.valid_until))


@domain("loyalty")
class LoyaltyProgram(graphene.ObjectType):
    """The programme's configuration (retired items on request)."""

    earn_rules = graphene.List(graphene.NonNull(LoyaltyEarnRule), required=True,
                               include_retired=graphene.Boolean(default_value=False))
    tiers = graphene.List(graphene.NonNull(LoyaltyTier), required=True,
                          include_retired=graphene.Boolean(default_value=False),
                          description="Lowest threshold first.")
    rewards = graphene.List(graphene.NonNull(LoyaltyReward), required=True,
                            include_retired=graphene.Boolean(default_value=False))
    point_value = graphene.Field(Money, required=True, description=(
        "What one point is worth in the base currency (RAPPORT_LOYALTY_POINT_VALUE)."))
    default_expiry_months = graphene.Int(description=(
        "Validity of earned points for rules created without one; null: never."))

    @staticmethod
    def resolve_earn_rules(root: Any, info: Any, include_retired: bool) -> list[EarnRule]:
        return programme.earn_rules(include_retired)

    @staticmethod
    def resolve_tiers(root: Any, info: Any, include_retired: bool) -> list[Tier]:
        return programme.tiers(include_retired)

    @staticmethod
    def resolve_rewards(root: Any, info: Any, include_retired: bool) -> list[Reward]:
        return programme.rewards(include_retired)

    @staticmethod
    def resolve_point_value(root: Any, info: Any) -> Money:
        settings = loyalty_settings()
        return Money(amount=settings.point_value, currency=settings.base_currency)

    @staticmethod
    def resolve_default_expiry_months(root: Any, info: Any) -> int | None:
        return loyalty_settings().default_expiry_months


# --- Member types --------------------------------------------------------------------------


@domain("loyalty")
@node_type(LedgerEntry)
class LoyaltyLedgerEntry(graphene.ObjectType):
    """One ledger entry: positive points credit the account, negative ones debit it."""

    class Meta:
        interfaces = (relay.Node,)

    kind = graphene.Field(LoyaltyEntryKind, required=True)
    points = graphene.Int(required=True)
    occurred_at = graphene.DateTime(required=True)
    recorded_at = graphene.DateTime(required=True)
    reason = graphene.String()
    interaction = graphene.Field(Interaction, description="What earned or reversed the points.")
    reward = graphene.Field(LoyaltyReward)
    actor = graphene.Field(Agent)
    expires_at = graphene.DateTime(description="For points credited: when they expire.")
    remaining = graphene.Int(description="For points credited: how many are left to spend.")
    shortfall = graphene.Int(description=(
        "For a refund's reversal: points it could not take back (already spent)."))

    @classmethod
    def get_node(cls, info: Any, id: str) -> Any:
        return ctx(info).loader(LoyaltyLedgerEntryByIdLoader).load(int(id))

    @staticmethod
    def resolve_interaction(root: LedgerEntry, info: Any) -> Any:
        return load_related(info, InteractionByIdLoader, root.interaction_id)

    @staticmethod
    def resolve_reward(root: LedgerEntry, info: Any) -> Any:
        return load_related(info, LoyaltyRewardByIdLoader, root.reward_id)

    @staticmethod
    def resolve_actor(root: LedgerEntry, info: Any) -> Any:
        return load_related(info, AgentByIdLoader, root.actor_id)


LoyaltyLedgerConnection = connection(LoyaltyLedgerEntry, "LoyaltyLedgerEntry")


@domain("loyalty")
class LoyaltyTierChange(graphene.ObjectType):
    from_tier = graphene.Field(LoyaltyTier)
    to_tier = graphene.Field(LoyaltyTier)
    changed_at = graphene.DateTime(required=True)
    reason = graphene.Field(LoyaltyTierChangeReason, required=True)
    qualifying_points = graphene.Int(required=True)

    @staticmethod
    def resolve_from_tier(root: TierChange, info: Any) -> Any:
        return _tier(info, root.from_tier_id)

    @staticmethod
    def resolve_to_tier(root: TierChange, info: Any) -> Any:
        return _tier(info, root.to_tier_id)


def _tier(info: Any, tier_id: int | None) -> Any:
    return None if tier_id is None else ctx(info).loader(LoyaltyTierByIdLoader).load(tier_id)


@dataclass(frozen=True)
class Member:
    """The root of ``Customer.loyalty``: fields load what they need through DataLoaders."""

    customer_id: int


@domain("loyalty")
class LoyaltyAccount(graphene.ObjectType):
    """A customer's points. A customer becomes a member at their first points."""

    member = graphene.Boolean(required=True)
    member_since = graphene.DateTime()
    balance = graphene.Int(required=True, description=(
        "Points the member can spend now: points past their expiry are left out, even "
        "before the expiry job writes them off."))
    tier = graphene.Field(LoyaltyTier)
    tier_since = graphene.DateTime()
    points_to_next_tier = graphene.Int(description=(
        "Qualifying points still needed for the next tier up; null at the top."))
    expiring_points = graphene.Int(required=True, within_days=graphene.Int(default_value=30),
                                   description="Points that expire within the next days.")
    ledger = graphene.Field(LoyaltyLedgerConnection, required=True,
                            first=graphene.Int(description="At most 100 (default 20)."),
                            after=graphene.String(), description="Newest first.")
    tier_history = graphene.List(graphene.NonNull(LoyaltyTierChange), required=True)

    @staticmethod
    async def _member(root: Member, info: Any) -> Any:
        return await ctx(info).loader(LoyaltyAccountByCustomerLoader).load(root.customer_id)

    @staticmethod
    async def _account(root: Member, info: Any) -> Any:
        member = await LoyaltyAccount._member(root, info)
        return member.account if member else None

    @staticmethod
    async def resolve_member(root: Member, info: Any) -> bool:
        return await LoyaltyAccount._account(root, info) is not None

    @staticmethod
    async def resolve_member_since(root: Member, info: Any) -> dt.datetime | None:
        account = await LoyaltyAccount._account(root, info)
        return account.created_at if account else None

    @staticmethod
    async def resolve_balance(root: Member, info: Any) -> int:
        """Spendable points: the stored balance less points already past expiry that the
        expiry job (or the member's next debit) has not written off yet."""
        member = await LoyaltyAccount._member(root, info)
        return member.balance if member else 0

    @staticmethod
    async def resolve_tier(root: Member, info: Any) -> Any:
        account = await LoyaltyAccount._account(root, info)
        return await _tier(info, account.tier_id) if account and account.tier_id else None

    @staticmethod
    async def resolve_tier_since(root: Member, info: Any) -> dt.datetime | None:
        account = await LoyaltyAccount._account(root, info)
        return account.tier_since if account else None

    @staticmethod
    def resolve_points_to_next_tier(root: Member, info: Any) -> Any:
        return ctx(info).loader(PointsToNextTierByCustomerLoader).load(root.customer_id)

    @staticmethod
    def resolve_expiring_points(root: Member, info: Any, within_days: int | None = 30) -> Any:
        within_days = 30 if within_days is None else within_days  # an explicit null
        if not 0 <= within_days <= 3660:
            raise bad_input("withinDays must be between 0 and 3660.")
        return ctx(info).loader(ExpiringPointsByCustomerLoader,
                                within_days=within_days).load(root.customer_id)

    @staticmethod
    async def resolve_ledger(root: Member, info: Any, first: int | None = None,
                             after: str | None = None) -> Any:
        size = page_size(first)
        rows = await ctx(info).loader(LoyaltyLedgerByCustomerLoader, limit=size + 1,
                                      after=NEWEST_ENTRIES.decode(after)).load(root.customer_id)
        count = ctx(info).loader(LoyaltyLedgerCountByCustomerLoader)
        return NEWEST_ENTRIES.page(rows, size, after, lambda: count.load(root.customer_id))

    @staticmethod
    def resolve_tier_history(root: Member, info: Any) -> Any:
        return ctx(info).loader(TierHistoryByCustomerLoader).load(root.customer_id)



# --- Report --------------------------------------------------------------------------------


@domain("loyalty")
class LoyaltyMonthFlows(graphene.ObjectType):
    """Points moved in a month (or the whole period), each flow as a positive number."""

    month = graphene.String(required=True, description="YYYY-MM, or 'total'.")
    issued = graphene.Int(required=True, description="Earned, plus adjustments adding points.")
    redeemed = graphene.Int(required=True)
    expired = graphene.Int(required=True)
    reversed = graphene.Int(required=True, description="Taken back by refunds.")
    removed = graphene.Int(required=True, description="Adjustments removing points.")


@domain("loyalty")
class LoyaltyTierMembers(graphene.ObjectType):
    tier = graphene.Field(LoyaltyTier, description="Null: members without a tier.")
    members = graphene.Int(required=True)

    @staticmethod
    def resolve_tier(root: tuple[Tier | None, int], info: Any) -> Tier | None:
        return root[0]

    @staticmethod
    def resolve_members(root: tuple[Tier | None, int], info: Any) -> int:
        return root[1]


@domain("loyalty")
class LoyaltyPurchaseBehaviour(graphene.ObjectType):
    customers = graphene.Int(required=True, description="Customers who purchased in the period.")
    repeat_purchase_rate = graphene.Float(description="Share who purchased at least twice.")
    purchase_frequency = graphene.Float(description="Purchases per purchasing customer.")


@domain("loyalty")
class LoyaltyReport(graphene.ObjectType):
    """The programme over a period of whole days (RAPPORT_TIMEZONE), both ends included."""

    period_from = graphene.Date(required=True, name="from")
    period_to = graphene.Date(required=True, name="to")
    months = graphene.List(graphene.NonNull(LoyaltyMonthFlows), required=True)
    total = graphene.Field(LoyaltyMonthFlows, required=True)
    outstanding_points = graphene.Int(required=True, description=(
        "Points held by members at the end of the period: the liability."))
    outstanding_value = graphene.Field(Money, required=True, description=(
        "The liability in the base currency, at the configured point value."))
    breakage_rate = graphene.Float(description="Expired / issued in the period.")
    redemption_rate = graphene.Float(description="Redeemed / issued in the period.")
    members = graphene.Int(required=True, description="Members at the end of the period.")
    members_per_tier = graphene.List(graphene.NonNull(LoyaltyTierMembers), required=True,
                                     description="Current members per tier, lowest first.")
    member_purchases = graphene.Field(LoyaltyPurchaseBehaviour, required=True)
    non_member_purchases = graphene.Field(LoyaltyPurchaseBehaviour, required=True)

    @staticmethod
    def resolve_outstanding_value(root: report.LoyaltyReport, info: Any) -> Money:
        return Money(amount=root.outstanding_value, currency=root.currency)


def resolve_loyalty_report(root: Any, info: Any, **period: Any) -> report.LoyaltyReport:
    try:
        return report.loyalty_report({"from": period["from_"], "to": period["to"]})
    except UserError as exc:
        raise bad_input("; ".join(f"{e.field}: {e.message}" for e in exc.errors)) from None


# --- Mutations: the programme --------------------------------------------------------------


class EarnRuleFields:
    description = graphene.String()
    kind = graphene.String(description="An interaction kind (see interactionKinds); default "
                                       "purchase.")
    currency = graphene.String(description="Needed with pointsPerUnit or minimumAmount.")
    points_per_unit = graphene.Decimal(description="Points per unit of currency (purchases).")
    rounding = LoyaltyRounding(description="Default DOWN.")
    minimum_amount = graphene.Decimal(description="Smaller amounts earn nothing.")
    bonus_points = graphene.Int(description="Points per interaction (any kind).")
    cap_points = graphene.Int(description="At most this many points per capPeriod and member.")
    cap_period = LoyaltyCapPeriod()
    expiry_months = graphene.Int(description=(
        "Months before earned points expire; null: never; absent on create: the default."))
    valid_from = graphene.DateTime(description="Default: now.")
    valid_until = graphene.DateTime(description="Exclusive; null: open-ended.")


class CreateEarnRuleInput(EarnRuleFields, graphene.InputObjectType):
    name = graphene.String(required=True)


class UpdateEarnRuleInput(EarnRuleFields, graphene.InputObjectType):
    id = graphene.ID(required=True)
    name = graphene.String()


class RetireEarnRuleInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class CreateEarnRule(RapportMutation):
    class Arguments:
        input = CreateEarnRuleInput(required=True)

    earn_rule = graphene.Field(LoyaltyEarnRule)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateEarnRule:
        return cls(earn_rule=programme.create_earn_rule(input))


class UpdateEarnRule(RapportMutation):
    """Change a rule. When its terms change while it is in force, the rule ends now and
    the returned rule is a new version starting now (``supersedes`` the old one)."""

    class Arguments:
        input = UpdateEarnRuleInput(required=True)

    earn_rule = graphene.Field(LoyaltyEarnRule)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateEarnRule:
        rule_id = global_id(input, "id", "LoyaltyEarnRule")
        return cls(earn_rule=programme.update_earn_rule(rule_id, input))  # type: ignore[arg-type]


class RetireEarnRule(RapportMutation):
    """Stop a rule now; interactions dated earlier still earn under it."""

    class Arguments:
        input = RetireEarnRuleInput(required=True)

    earn_rule = graphene.Field(LoyaltyEarnRule)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RetireEarnRule:
        rule_id = global_id(input, "id", "LoyaltyEarnRule")
        return cls(earn_rule=programme.retire_earn_rule(rule_id))  # type: ignore[arg-type]


class TierFields:
    window_months = graphene.Int(description="Rolling window of qualifying points (default 12).")
    discount_percent = graphene.Decimal(description="Member discount, 0 to 100 (default 0).")
    earn_multiplier = graphene.Decimal(description="Multiplies points earned (default 1).")
    benefits = graphene.String(description="What members of the tier get, in words.")


class CreateTierInput(TierFields, graphene.InputObjectType):
    name = graphene.String(required=True)
    threshold_points = graphene.Int(required=True)


class UpdateTierInput(TierFields, graphene.InputObjectType):
    id = graphene.ID(required=True)
    name = graphene.String()
    threshold_points = graphene.Int()


class RetireTierInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class CreateTier(RapportMutation):
    class Arguments:
        input = CreateTierInput(required=True)

    tier = graphene.Field(LoyaltyTier)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateTier:
        return cls(tier=programme.create_tier(input))


class UpdateTier(RapportMutation):
    class Arguments:
        input = UpdateTierInput(required=True)

    tier = graphene.Field(LoyaltyTier)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateTier:
        tier_id = global_id(input, "id", "LoyaltyTier")
        return cls(tier=programme.update_tier(tier_id, input))  # type: ignore[arg-type]


class RetireTier(RapportMutation):
    """No one enters the tier any more; its members move at the next re-evaluation."""

    class Arguments:
        input = RetireTierInput(required=True)

    tier = graphene.Field(LoyaltyTier)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RetireTier:
        return cls(tier=programme.retire_tier(
            global_id(input, "id", "LoyaltyTier")))  # type: ignore[arg-type]


class RewardFields:
    description = graphene.String()
    stock = graphene.Int(description="Units available; null: unlimited.")
    valid_from = graphene.DateTime()
    valid_until = graphene.DateTime(description="Exclusive.")


class CreateRewardInput(RewardFields, graphene.InputObjectType):
    name = graphene.String(required=True)
    point_cost = graphene.Int(required=True)


class UpdateRewardInput(RewardFields, graphene.InputObjectType):
    id = graphene.ID(required=True)
    name = graphene.String()
    point_cost = graphene.Int()


class RetireRewardInput(graphene.InputObjectType):
    id = graphene.ID(required=True)


class CreateReward(RapportMutation):
    class Arguments:
        input = CreateRewardInput(required=True)

    reward = graphene.Field(LoyaltyReward)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> CreateReward:
        return cls(reward=programme.create_reward(input))


class UpdateReward(RapportMutation):
    class Arguments:
        input = UpdateRewardInput(required=True)

    reward = graphene.Field(LoyaltyReward)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> UpdateReward:
        reward_id = global_id(input, "id", "LoyaltyReward")
        return cls(reward=programme.update_reward(reward_id, input))  # type: ignore[arg-type]


class RetireReward(RapportMutation):
    class Arguments:
        input = RetireRewardInput(required=True)

    reward = graphene.Field(LoyaltyReward)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RetireReward:
        return cls(reward=programme.retire_reward(
            global_id(input, "id", "LoyaltyReward")))  # type: ignore[arg-type]


# --- Mutations: moving points --------------------------------------------------------------

_KEY_HELP = ("Unique per operation: a retry with the same key and input returns the first "
             "result; the same key with another input is IDEMPOTENCY_CONFLICT.")


class RedeemPointsInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    points = graphene.Int(required=True)
    reason = graphene.String()
    idempotency_key = graphene.String(required=True, description=_KEY_HELP)


class RedeemRewardInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    reward_id = graphene.ID(required=True)
    quantity = graphene.Int(description="Default 1.")
    reason = graphene.String()
    idempotency_key = graphene.String(required=True, description=_KEY_HELP)


class AdjustPointsInput(graphene.InputObjectType):
    customer_id = graphene.ID(required=True)
    points = graphene.Int(required=True, description="Positive adds, negative removes.")
    reason = graphene.String(required=True)
    expires_at = graphene.DateTime(description="When points added expire; default never.")
    idempotency_key = graphene.String(required=True, description=_KEY_HELP)


def _value_move(info: Any, input: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Service input (customer id decoded) and the acting agent."""
    customer_id = global_id(input, "customer_id", "Customer")
    return {**input, "customer_id": customer_id}, {"actor_id": ctx(info).principal.agent_id}


class RedeemPoints(RapportMutation):
    class Arguments:
        input = RedeemPointsInput(required=True)

    entry = graphene.Field(LoyaltyLedgerEntry)
    loyalty = graphene.Field(LoyaltyAccount)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RedeemPoints:
        data, actor = _value_move(info, input)
        entry = service.redeem_points(data, **actor)
        return cls(entry=entry, loyalty=Member(entry.customer_id))


class RedeemReward(RapportMutation):
    class Arguments:
        input = RedeemRewardInput(required=True)

    entry = graphene.Field(LoyaltyLedgerEntry)
    reward = graphene.Field(LoyaltyReward)
    loyalty = graphene.Field(LoyaltyAccount)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> RedeemReward:
        data, actor = _value_move(info, input)
        data["reward_id"] = global_id(data, "reward_id", "LoyaltyReward")
        entry = service.redeem_reward(data, **actor)
        return cls(entry=entry, reward=ctx(info).loader(LoyaltyRewardByIdLoader).load(
            entry.reward_id), loyalty=Member(entry.customer_id))


class AdjustPoints(RapportMutation):
    class Arguments:
        input = AdjustPointsInput(required=True)

    entry = graphene.Field(LoyaltyLedgerEntry)
    loyalty = graphene.Field(LoyaltyAccount)
    scope = WRITE
    error_type = LoyaltyError

    @classmethod
    def perform(cls, info: Any, input: dict[str, Any]) -> AdjustPoints:
        data, actor = _value_move(info, input)
        entry = service.adjust_points(data, **actor)
        return cls(entry=entry, loyalty=Member(entry.customer_id))


# --- What the plugin contributes -------------------------------------------------------------


def customer_fields() -> dict[str, graphene.Field]:
    return {"loyalty": scoped(graphene.Field(
        LoyaltyAccount, required=True, resolver=lambda root, info: Member(root.id),
        description="Points, tier and ledger (balance 0 and no tier before the first points)."),
        READ)}


def query_fields() -> dict[str, graphene.Field]:
    return {
        "loyaltyProgram": scoped(graphene.Field(
            LoyaltyProgram, required=True, resolver=lambda root, info: LoyaltyProgram()), READ),
        "loyaltyReport": costly(scoped(graphene.Field(
            LoyaltyReport, required=True, resolver=resolve_loyalty_report,
            args={"from_": graphene.Date(required=True, name="from"),
                  "to": graphene.Date(required=True)}), READ), REPORT_COST),
    }


MUTATIONS: dict[str, type[RapportMutation]] = {
    "createEarnRule": CreateEarnRule, "updateEarnRule": UpdateEarnRule,
    "retireEarnRule": RetireEarnRule,
    "createTier": CreateTier, "updateTier": UpdateTier, "retireTier": RetireTier,
    "createReward": CreateReward, "updateReward": UpdateReward, "retireReward": RetireReward,
    "redeemPoints": RedeemPoints, "redeemReward": RedeemReward, "adjustPoints": AdjustPoints,
}

NODE_TYPES = [LoyaltyTier, LoyaltyEarnRule, LoyaltyReward, LoyaltyLedgerEntry]
