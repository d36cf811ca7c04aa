"""Money is a Decimal with an ISO 4217 currency; never a float."""

from __future__ import annotations

from decimal import Decimal

#: ISO 4217 minor units where they differ from 2.
_CURRENCY_DECIMALS = {
    "BHD": 3, "CLP": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3,
    "LYD": 3, "OMR": 3, "PYG": 0, "TND": 3, "UGX": 0, "VND": 0, "XAF": 0, "XOF": 0,
}


def currency_decimals(code: str) -> int:
    return _CURRENCY_DECIMALS.get(code.upper(), 2)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """``amount`` written with the currency's minor units (``Decimal("120.00")`` for USD)."""
    return amount.quantize(Decimal(1).scaleb(-currency_decimals(currency)))
