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
    notification, created = Notification.objects.get_or_create(
        order=order,
        kind=kind,
        defaults={"recipient": order.customer_email, "subject": SUBJECTS[kind].format(id=order.pk)},
    )
    if created:
        with tracing.span(f"email {kind}", kind=SpanKind.CLIENT, attributes={"backoffice.order_id": order.pk}):
            send_mail(
                notification.subject,
                body,
                settings.DEFAULT_FROM_EMAIL,
                [order.customer_email],
                fail_silently=False,
            )
    return notification
