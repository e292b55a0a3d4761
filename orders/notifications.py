"""Customer emails through Django's email framework, each sent at most once per order and kind.

The notification row and the email are sent in one transaction, after the row lock: a second
delivery finds the row and sends nothing. A crash after the mail server accepted the email and
before the commit is the one window in which the customer could get it twice.
"""

import re

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection
from opentelemetry.trace import SpanKind

from common import tracing
from common.rows import insert_statement, instance_values, mark_inserted
from orders.models import Notification, Order

SUBJECTS = {
    Notification.Kind.CONFIRMATION: "Your order {id} is confirmed",
    Notification.Kind.CANCELLATION: "Your order {id} was cancelled",
}


# A customer's name is the one thing a client writes that reaches an email, to any address: left
# as it is, "Your account is locked. Verify at https://evil.example/login" makes the shop a
# phishing relay. What is kept reads as a name: no markup, no link (a bare "evil.example" is
# made a link by mail readers too), no address, only letters, spaces, apostrophes, dots and
# hyphens, and at most NAME_MAX characters.
NAME_MAX = 40
_MARKUP = re.compile(r"<[^>]*>?|&[#\w]*;?")
_LINK = re.compile(r"(?i)\S*(?:://|www\.|@)\S*|\S*\w\.[a-z]{2,}\b\S*")
_NOT_NAME = re.compile(r"[^\w\s'’.-]|[\d_]")


def greeting(name: str) -> str:
    """``Hello <name>,`` with the name stripped of anything but a name, or ``Hello,``."""
    for pattern in (_MARKUP, _LINK, _NOT_NAME):
        name = pattern.sub(" ", name)
    name = " ".join(name.split())[:NAME_MAX].strip(" .-'’")
    return f"Hello {name}," if name else "Hello,"


# One statement on the common path: the row, unless this order's email of this kind exists.
_INSERT = insert_statement(
    Notification, on_conflict="ON CONFLICT (order_id, kind) DO NOTHING", returning=("id", "sent_at")
)


def notification_send(*, order: Order, kind: str, body: str, told_by_hand: str = "") -> Notification:
    """Send the email unless this order's notification of this kind exists. The caller holds
    the order's row lock, so no other transaction can be inserting the same row meanwhile (the
    unique constraint would still refuse a second one). ``told_by_hand``: an operator told the
    customer themselves; the row records their word instead of the email, and nothing is sent."""
    if told_by_hand:
        body = f"(told by an operator) {told_by_hand}"
    notification = Notification(
        order=order, kind=kind, recipient=order.customer_email, subject=SUBJECTS[kind].format(id=order.pk), body=body
    )
    with connection.cursor() as cursor:
        cursor.execute(_INSERT.sql, _INSERT.params(instance_values(notification)))
        row = cursor.fetchone()
    if row is None:
        return Notification.objects.get(order=order, kind=kind)
    mark_inserted(notification, _INSERT.returning, row)
    if told_by_hand:
        return notification
    with tracing.span(f"email {kind}", kind=SpanKind.CLIENT, attributes={"backoffice.order_id": order.pk}):
        send_mail(notification.subject, body, settings.DEFAULT_FROM_EMAIL, [order.customer_email], fail_silently=False)
    return notification
