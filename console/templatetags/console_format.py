"""Template filters for the console's one way to show money, times and addresses
(``common.formatting``)."""

from django import template

from common.formatting import address_html, money_html, utc_format

register = template.Library()


@register.filter
def money(amount, currency):
    """``{{ order.total_amount|money:order.currency }}`` -> €4.99, minor units on hover."""
    return money_html(amount, currency)


@register.filter
def utc(value):
    """``{{ saga.created_at|utc }}`` -> 2026-12-01 14:33:05 UTC."""
    return utc_format(value)


@register.filter
def address(value):
    return address_html(value)
