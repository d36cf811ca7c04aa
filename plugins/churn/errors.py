"""The churn domain's error codes (beyond core's INVALID, REQUIRED, NOT_FOUND, ...)."""

from __future__ import annotations


class ChurnErrorCode:
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    UNKNOWN_REASON = "UNKNOWN_REASON"
    BEFORE_CUSTOMER_EXISTED = "BEFORE_CUSTOMER_EXISTED"
    IN_THE_FUTURE = "IN_THE_FUTURE"
    ALREADY_CHURNED = "ALREADY_CHURNED"
    NOT_CHURNED = "NOT_CHURNED"
    CUSTOMER_ERASED = "CUSTOMER_ERASED"
    ALREADY_RESOLVED = "ALREADY_RESOLVED"
    CAMPAIGN_ENDED = "CAMPAIGN_ENDED"
    #: Scoring or reading scores needs a fitted model (``rapport churn fit``).
    NO_MODEL = "NO_MODEL"
    #: The installed plugins give other feature columns than the model was trained on.
    FEATURES_CHANGED = "FEATURES_CHANGED"
    #: Another scoring run is still open (one run at a time; its chunks run in parallel).
    SCORING_IN_PROGRESS = "SCORING_IN_PROGRESS"
    #: A chunk or the final step of a scoring run that was already failed or cancelled.
    SCORING_RUN_CLOSED = "SCORING_RUN_CLOSED"


CODES = [v for k, v in vars(ChurnErrorCode).items() if k.isupper()]
