"""Customer emails through Django's email framework, each sent at most once per order and kind.

The notification row and the email are sent in one transaction, after the row lock: a second
delivery finds the row and sends nothing. A crash after the mail server accepted the email and
before the commit is the one window in which the customer could get it twice.
"""

from django.conf import settings
from django.core.mail import send_mail
from opentelemetry.trace import SpanKind

from config import tracing
from orders.models import Notification, Order

SUBJECTS = {
    Notification.Kind.CONFIRMATION: "Your order {id} is confirmed",
    Notification.Kind.CANCELLATION: "Your order {id} was cancelled",
}


def notification_send(*, order: Order, kind: str, body: str) -> Notification:
    """Send the email unless this order's notification of this kind exists. The caller holds
    the order's row lock, so no other transaction can be inserting the same row meanwhile (the
    unique constraint would still refuse a second one)."""
    notification = Notification.objects.filter(order=order, kind=kind).first()
    if notification is not None:
        return notification
    notification = Notification.objects.create(
        order=order, kind=kind, recipient=order.customer_email, subject=SUBJECTS[kind].format(id=order.pk)
    )
    with tracing.span(f"email {kind}", kind=SpanKind.CLIENT, attributes={"backoffice.order_id": order.pk}):
        send_mail(notification.subject, body, settings.DEFAULT_FROM_EMAIL, [order.customer_email], fail_silently=False)
    return notification
