"""How the console shows money, times and addresses: one function each, used by every page
and admin list, so that the same value never reads two ways."""

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# As config/formats/en/formats.py's DATETIME_FORMAT: UTC, to the second.
UTC_FORMAT = r"Y-m-d H:i:s \U\T\C"

# Digits after the decimal point of each currency's minor unit (ISO 4217), and its symbol.
_MINOR_DIGITS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}


def money_format(amount: int | None, currency: str) -> str:
    """``499, "EUR"`` -> ``€4.99``; a currency without a symbol reads ``4.99 CHF``."""
    if amount is None:
        return "-"
    currency = (currency or "").upper()
    digits = _MINOR_DIGITS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(int(amount)), 10**digits)
    number = f"{whole:,}" + (f".{minor:0{digits}d}" if digits else "")
    symbol = _SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency}".strip()


def money_html(amount: int | None, currency: str) -> SafeString:
    """The formatted amount, with the stored minor units on hover."""
    if amount is None:
        return format_html("{}", "-")
    return format_html(
        '<span class="money" title="{} {} (minor units)">{}</span>', amount, currency, money_format(amount, currency)
    )


def utc_format(value: datetime | None) -> str:
    if value is None:
        return "-"
    return date_format(timezone.localtime(value, UTC), UTC_FORMAT)


_ADDRESS_ORDER = ("name", "line1", "line2", "postal_code", "city", "region", "state", "country")


def address_lines(address: Any) -> list[str]:
    """A shipping address as the lines of a label: street, postal code and city, country."""
    if not isinstance(address, dict) or not address:
        return [str(address)] if address else []
    lines = [str(address[key]) for key in ("name", "line1", "line2") if address.get(key)]
    city = " ".join(str(address[key]) for key in ("postal_code", "city") if address.get(key))
    if city:
        lines.append(city)
    lines += [str(address[key]) for key in ("region", "state", "country") if address.get(key)]
    lines += [f"{key}: {value}" for key, value in address.items() if key not in _ADDRESS_ORDER and value]
    return lines


def address_html(address: Any) -> SafeString:
    lines = address_lines(address)
    if not lines:
        return format_html("{}", "-")
    return format_html(
        '<address class="shipping-address">{}</address>',
        format_html_join(mark_safe("<br>"), "{}", ((line,) for line in lines)),
    )
