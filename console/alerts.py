"""Alerts: what is wrong now, as incidents, each alerted once when it opens.

An incident is one thing going wrong, however many sagas it touches: sagas stuck at a step,
sagas failed at a step, dead letters of a consumer, open violations of a kind, no live worker or
no live beat. Each check computes the open conditions from the selectors, opens an incident for a
new one (with its alert rows, in the same transaction: the outbox pattern, so an alert is never
lost and never sent from inside a path that could fail because of it), and closes the incidents
whose condition cleared. Twenty sagas stuck at ``create_shipment`` are one alert, not twenty.

The check runs on the worker (a timer of its own, console.alert_watch) and on beat (its tick),
not as a task that one of them schedules for the other: a dead worker runs no task, and a dead
beat schedules none, so each watches the other. Several checks at once are serialised by an
advisory lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from audit.selectors import violation_counts
from common.heartbeat import ROLES, liveness
from console.models import AlertDelivery, Incident
from outbox.models import DeadLetter
from sagas.selectors import FAILED, STUCK, sagas_needing_attention

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the check ("alerts" in ASCII).
_CHECK_LOCK = 0x616C65727473


@dataclass(frozen=True)
class Condition:
    key: str
    title: str
    detail: str
    count: int
    link: str


def alert_conditions(*, now: datetime | None = None) -> dict[str, Condition]:
    """Everything that should have an open incident now, by incident key."""
    now = now or timezone.now()
    sagas = reverse("admin:sagas_sagainstance_changelist")
    found: list[Condition] = []
    for kind, verb in ((STUCK, "stuck"), (FAILED, "failed")):
        rows = sagas_needing_attention(kind=kind, now=now).order_by().values("current_step").annotate(n=Count("id"))
        for row in rows:
            step = row["current_step"] or "-"
            found.append(
                Condition(
                    key=f"{verb}:{step}",
                    title=f"{row['n']} saga(s) {verb} at {step}",
                    detail=f"Sagas {verb} at {step}: an operator must look at them.",
                    count=row["n"],
                    link=f"{sagas}?{urlencode({'attention': kind, 'step': step})}",
                )
            )
    letters = reverse("admin:outbox_deadletter_changelist")
    rows = (
        DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).order_by().values("consumer").annotate(n=Count("id"))
    )
    for row in rows:
        found.append(
            Condition(
                key=f"dead_letters:{row['consumer']}",
                title=f"{row['n']} dead letter(s) of {row['consumer']}",
                detail=f"Messages to {row['consumer']} gave up after their retries and wait for a replay or a discard.",
                count=row["n"],
                link=f"{letters}?{urlencode({'status__exact': 'dead', 'consumer': row['consumer']})}",
            )
        )
    violations = reverse("admin:audit_violation_changelist")
    for kind, n in violation_counts().items():
        found.append(
            Condition(
                key=f"violations:{kind}",
                title=f"{n} open invariant violation(s): {kind}",
                detail="The consistency auditor found data that breaks an invariant.",
                count=n,
                link=f"{violations}?{urlencode({'resolved': 'no', 'kind__exact': kind})}",
            )
        )
    alive = liveness()
    for role in ROLES:
        if not alive.alive(role):
            found.append(
                Condition(
                    key=f"process:{role}",
                    title=f"No live {role}",
                    detail=alive.error
                    or f"No {role} has renewed its heartbeat in the last {settings.HEARTBEAT_TTL_SECONDS} s.",
                    count=1,
                    link=reverse("admin:sagas_attention"),
                )
            )
    return {condition.key: condition for condition in found}


def alerts_check(*, now: datetime | None = None) -> list[Incident]:
    """Open an incident, with its alerts, for each new condition; close those that cleared.
    Returns the incidents opened by this check."""
    now = now or timezone.now()
    opened: list[Incident] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHECK_LOCK])
        # Read under the lock: a check that read before another one committed could close the
        # incident that one just opened, and the next check would alert it a second time.
        conditions = alert_conditions(now=now)
        open_incidents = {incident.key: incident for incident in Incident.objects.filter(closed_at__isnull=True)}
        for key, condition in conditions.items():
            incident = open_incidents.get(key)
            if incident is None:
                incident = Incident.objects.create(
                    key=key,
                    title=condition.title,
                    detail=condition.detail,
                    link=condition.link,
                    count=condition.count,
                    opened_at=now,
                    last_seen_at=now,
                )
                _alerts_enqueue(incident, now=now)
                opened.append(incident)
            else:
                incident.count, incident.last_seen_at = condition.count, now
                incident.save(update_fields=["count", "last_seen_at"])
        for key, incident in open_incidents.items():
            if key not in conditions:
                incident.closed_at = now
                incident.save(update_fields=["closed_at"])
    for incident in opened:
        logger.warning("incident opened", extra={"incident": incident.key, "title": incident.title})
    return opened


def alert_payload(incident: Incident) -> dict:
    """The webhook's JSON body (and the email's content): what, since when, and where to look."""
    base = settings.CONSOLE_BASE_URL.rstrip("/")
    return {
        "incident": incident.key,
        "incident_id": incident.pk,
        "status": "opened",
        "title": incident.title,
        "detail": incident.detail,
        "count": incident.count,
        "opened_at": incident.opened_at.isoformat(),
        "url": base + incident.link,
        "console_url": base + reverse("admin:sagas_attention"),
    }


def _alerts_enqueue(incident: Incident, *, now: datetime) -> None:
    # Due from the check's clock, the one the sender compares it with (the database's may differ).
    payload = alert_payload(incident)
    if settings.ALERT_WEBHOOK_URL:
        AlertDelivery.objects.create(
            incident=incident,
            channel=AlertDelivery.Channel.WEBHOOK,
            target=settings.ALERT_WEBHOOK_URL,
            payload=payload,
            next_attempt_at=now,
        )
    if settings.ALERT_EMAILS:
        AlertDelivery.objects.create(
            incident=incident,
            channel=AlertDelivery.Channel.EMAIL,
            target=",".join(settings.ALERT_EMAILS),
            payload=payload,
            next_attempt_at=now,
        )
