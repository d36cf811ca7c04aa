"""The loyalty domain's error codes (beyond core's INVALID, REQUIRED, NOT_FOUND, ...)."""

from __future__ import annotations


class LoyaltyErrorCode:
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    REWARD_OUT_OF_STOCK = "REWARD_OUT_OF_STOCK"
    REWARD_RETIRED = "REWARD_RETIRED"
    REWARD_NOT_AVAILABLE = "REWARD_NOT_AVAILABLE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    RETIRED = "RETIRED"


CODES = [v for k, v in vars(LoyaltyErrorCode).items() if k.isupper()]
