"""The complaints domain's error codes (beyond core's INVALID, REQUIRED, NOT_FOUND, ...)."""

from __future__ import annotations


class ComplaintErrorCode:
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    STEP_DATA_REQUIRED = "STEP_DATA_REQUIRED"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
    CUSTOMER_ERASED = "CUSTOMER_ERASED"


CODES = [v for k, v in vars(ComplaintErrorCode).items() if k.isupper()]
