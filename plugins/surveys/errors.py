"""The surveys domain's error codes (beyond core's INVALID, REQUIRED, NOT_FOUND, ...)."""

from __future__ import annotations


class SurveyErrorCode:
    #: The operation needs another survey state (e.g. editing questions of an OPEN survey).
    WRONG_STATE = "WRONG_STATE"
    #: An answer names a question the survey does not have.
    UNKNOWN_QUESTION = "UNKNOWN_QUESTION"
    #: A choice answer names an option the question does not have.
    UNKNOWN_OPTION = "UNKNOWN_OPTION"
    #: A number outside the question's scale, or not on its integer steps.
    OUT_OF_SCALE = "OUT_OF_SCALE"
    #: Anonymous survey: missing or wrong collection token, or a customer was named.
    ANONYMITY = "ANONYMITY"
    CUSTOMER_ERASED = "CUSTOMER_ERASED"
    #: Too few usable responses for what was asked (e.g. saving clusters that could not be
    #: computed); the message carries the analysis's explanation.
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
    #: The question named must hold numbers (NPS or RATING), e.g. the loyalty matrix's
    #: attitude question.
    NOT_NUMERIC = "NOT_NUMERIC"


CODES = [v for k, v in vars(SurveyErrorCode).items() if k.isupper()]
