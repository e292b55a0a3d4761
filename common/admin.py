"""The read-only admin base: records that are evidence are read, never added, edited or deleted."""

from django.contrib import admin
from django.http import HttpRequest

from common.formatting import address_html, money_html


class ReadOnlyAdmin(admin.ModelAdmin):
    """Messages, ledgers and logs are evidence: operators read them (and replay messages from
    the console), never edit or delete them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def money_display(*, amount: str = "amount", currency: str = "currency", description: str = "amount"):
    """An admin column (or read-only field) showing ``amount`` minor units of ``currency`` as
    money (€4.99), with the minor units on hover: ``total = money_display(amount="total_amount")``."""

    @admin.display(description=description, ordering=amount)
    def display(model_admin, obj) -> str:
        return money_html(getattr(obj, amount), getattr(obj, currency))

    return display


def address_display(*, field: str, description: str = "shipping address"):
    """An admin read-only field showing a JSON address as the lines of a label."""

    @admin.display(description=description)
    def display(model_admin, obj) -> str:
        return address_html(getattr(obj, field))

    return display
