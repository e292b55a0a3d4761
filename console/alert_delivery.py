"""Sending the alerts that console.alerts wrote: a JSON POST to ALERT_WEBHOOK_URL, an email to
ALERT_EMAILS. Retried with exponential backoff while the receiver fails (a 5xx, a refused
connection, a timeout), given up after ALERT_MAX_ATTEMPTS and kept, marked failed with the last
error, on the "needs attention" view.

Each delivery is claimed in a short transaction (``SKIP LOCKED``, its next attempt moved past the
call's timeout, a lease) and sent outside it, so no row lock or transaction waits on a slow
receiver, and two senders never send the same alert at once. A sender that dies after the call
and before recording it sends again when the lease ends: at least once; the body carries its
``delivery_id`` for a receiver that deduplicates.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from console.models import AlertDelivery, Incident

logger = logging.getLogger(__name__)

BATCH = 50


class DeliveryFailed(Exception):
    pass


def alerts_send(*, now: datetime | None = None) -> int:
    """Send the alerts that are due; returns how many were delivered. Never raises for a
    receiver's failure: it is recorded on the delivery."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.ALERT_TIMEOUT_SECONDS * 2 + 1)
    with transaction.atomic():
        due = list(
            AlertDelivery.objects.select_for_update(skip_locked=True)
            .filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "id")[:BATCH]
        )
        for delivery in due:
            delivery.attempts += 1
            delivery.next_attempt_at = now + lease
            delivery.save(update_fields=["attempts", "next_attempt_at"])
    delivered = 0
    for delivery in due:
        try:
            _send(delivery)
        except DeliveryFailed as exc:
            _record_failure(delivery, str(exc), now=now)
        else:
            delivered += 1
            sent_at = timezone.now()
            AlertDelivery.objects.filter(pk=delivery.pk).update(status=AlertDelivery.Status.SENT, sent_at=sent_at)
            Incident.objects.filter(pk=delivery.incident_id).update(last_sent_at=sent_at)
    return delivered


def alert_failures() -> QuerySet[AlertDelivery]:
    """Alerts given up on, newest first, until the incident they announce closes: shown on the
    "needs attention" view, so a receiver that is down does not hide an incident."""
    return (
        AlertDelivery.objects.filter(status=AlertDelivery.Status.FAILED, incident__closed_at__isnull=True)
        .select_related("incident")
        .order_by("-id")
    )


def alert_retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: base, 2 x base, 4 x base ... capped."""
    seconds = min(settings.ALERT_RETRY_MAX_SECONDS, settings.ALERT_RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    return timedelta(seconds=seconds)


def _record_failure(delivery: AlertDelivery, error: str, *, now: datetime) -> None:
    gave_up = delivery.attempts >= settings.ALERT_MAX_ATTEMPTS
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        last_error=error[:2000],
        status=AlertDelivery.Status.FAILED if gave_up else AlertDelivery.Status.PENDING,
        next_attempt_at=now + alert_retry_delay(delivery.attempts),
    )
    log = logger.error if gave_up else logger.warning
    log(
        "alert not delivered" + ("; gave up" if gave_up else "; will retry"),
        extra={"delivery": delivery.pk, "channel": delivery.channel, "attempts": delivery.attempts, "error": error},
    )


def _send(delivery: AlertDelivery) -> None:
    body = {**delivery.payload, "delivery_id": delivery.pk, "attempt": delivery.attempts}
    if delivery.channel == AlertDelivery.Channel.EMAIL:
        try:
            send_mail(
                subject=f"[backoffice] {body['title']}",
                message=f"{body['detail']}\n\nOpened at {body['opened_at']}.\n{body['url']}\n\nAll that needs"
                f" attention: {body['console_url']}\n",
                from_email=settings.DEFAULT_FROM_EMAIL,
                recipient_list=delivery.target.split(","),
            )
        except Exception as exc:  # any mail failure is retried
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        return
    request = urllib.request.Request(
        delivery.target,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "backoffice-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.ALERT_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"the receiver answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
    if not 200 <= status < 300:
        raise DeliveryFailed(f"the receiver answered {status}")
