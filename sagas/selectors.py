"""Reads of the saga engine's own tables: a saga with its step log, and the counts the
console's dashboard and /metrics show. Every query is served by an index (see
SagaInstance.Meta) and bounded by a time window, so it costs the same with a hundred or a
hundred thousand sagas."""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, Max, Prefetch, Q, QuerySet

from sagas.models import TERMINAL_STATES, SagaInstance, SagaState, SagaStep

ACTIVE_STATES = (SagaState.RUNNING, SagaState.COMPENSATING)


@dataclass(frozen=True)
class KeyRecord:
    """Something a step's idempotency key led to in a context or at a provider (a payment, a
    ledger entry, a gateway charge, a carrier shipment): each context answers for its own,
    keyed by the step key it was derived from, and the console's saga page lists them."""

    step_key: str
    what: str
    key: str
    reference: str


def saga_with_timeline(*, saga_id: object) -> SagaInstance | None:
    """The saga with its step log (every attempt, oldest first) prefetched, or None."""
    return (
        SagaInstance.objects.filter(pk=saga_id)
        .prefetch_related(Prefetch("steps", queryset=SagaStep.objects.order_by("id")))
        .first()
    )


@dataclass(frozen=True)
class StateCount:
    state: str
    label: str
    last_hour: int
    last_day: int


@dataclass(frozen=True)
class MinuteStats:
    minute: datetime
    completed: int
    p50_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class Throughput:
    """Sagas completed per minute over a window, and their durations (creation to finish)."""

    minutes: list[MinuteStats]
    window_minutes: int
    completed: int
    p50_seconds: float | None
    p95_seconds: float | None

    @property
    def per_minute(self) -> float:
        return self.completed / self.window_minutes if self.window_minutes else 0.0


def saga_state_counts(*, now: datetime) -> list[StateCount]:
    """Sagas created in the last hour and the last day, by their state now."""
    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
    rows = (
        SagaInstance.objects.filter(created_at__gte=day_ago)
        .values("state")
        # Only created_at and state are read: an index-only scan of saga_created_state_idx.
        .annotate(last_day=Count("created_at"), last_hour=Count("created_at", filter=Q(created_at__gte=hour_ago)))
        .order_by()
    )
    by_state = {row["state"]: row for row in rows}
    return [
        StateCount(
            state=state.value,
            label=state.label,
            last_hour=by_state.get(state.value, {}).get("last_hour", 0),
            last_day=by_state.get(state.value, {}).get("last_day", 0),
        )
        for state in SagaState
    ]


def saga_active_counts() -> dict[str, int]:
    """Sagas in flight now, however old (the state index serves the count)."""
    rows = SagaInstance.objects.filter(state__in=ACTIVE_STATES).values("state").annotate(n=Count("id")).order_by()
    counts = {state.value: 0 for state in ACTIVE_STATES}
    counts.update({row["state"]: row["n"] for row in rows})
    return counts


def saga_overdue_count(*, now: datetime) -> int:
    """Active sagas past their step deadline that the sweeper has not flagged yet: they are
    flagged stuck (or failed) at its next run, within one sweep."""
    return SagaInstance.objects.filter(state__in=ACTIVE_STATES, step_deadline__lt=now, stuck=False).count()


_THROUGHPUT_SQL = """
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) AS completed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration) AS p95
      FROM (SELECT finished_at,
                   -- created_at and finished_at come from different processes' clocks.
                   GREATEST(0, EXTRACT(EPOCH FROM finished_at - created_at)) AS duration
              FROM sagas_sagainstance
             WHERE finished_at >= %s AND finished_at < %s AND state = %s) AS done
  GROUP BY GROUPING SETS ((date_trunc('minute', finished_at)), ())
"""


def saga_throughput(*, now: datetime, minutes: int = 60) -> Throughput:
    """Completions per minute and their p50/p95 durations, per minute and over the window,
    in one query over the finished_at index."""
    start = now - timedelta(minutes=minutes)
    with connection.cursor() as cursor:
        cursor.execute(_THROUGHPUT_SQL, [start, now, SagaState.COMPLETED.value])
        rows = cursor.fetchall()
    total = next((row for row in rows if row[0] is None), None)
    by_minute = {row[0]: row for row in rows if row[0] is not None}
    first = start.replace(second=0, microsecond=0)
    series = []
    for offset in range(minutes + 1):
        minute = first + timedelta(minutes=offset)
        row = by_minute.get(minute)
        series.append(
            MinuteStats(
                minute=minute,
                completed=row[1] if row else 0,
                p50_seconds=float(row[2]) if row else None,
                p95_seconds=float(row[3]) if row else None,
            )
        )
    return Throughput(
        minutes=series,
        window_minutes=minutes,
        completed=total[1] if total else 0,
        p50_seconds=float(total[2]) if total and total[2] is not None else None,
        p95_seconds=float(total[3]) if total and total[3] is not None else None,
    )


def saga_stuck_counts() -> dict[str, int]:
    """Sagas flagged stuck now, by the step they are stuck at (served by the partial index)."""
    rows = SagaInstance.objects.filter(stuck=True).values("current_step").annotate(n=Count("id")).order_by()
    return {row["current_step"] or "-": row["n"] for row in rows}


# What an operator must look at, by kind. One definition serves the "needs attention" view and
# the saga list's filter, so the counts shown and the list a count links to always agree.
STUCK, FAILED, RETRYING, OVERDUE = "stuck", "failed", "retrying", "overdue"
ATTENTION_KINDS: dict[str, str] = {
    STUCK: "stuck (flagged for an operator)",
    FAILED: "failed (a compensation gave up)",
    RETRYING: "retrying (attempt 2 or later, not yet stuck)",
    OVERDUE: "past the step deadline, not yet flagged",
}


def saga_attention_condition(*, kind: str, now: datetime) -> Q:
    """What puts a saga in one kind of trouble; each is served by a partial index (see
    SagaInstance.Meta)."""
    if kind == STUCK:
        return Q(stuck=True, state__in=ACTIVE_STATES)
    if kind == FAILED:
        return Q(state=SagaState.FAILED)
    if kind == RETRYING:
        # The engine's own backoff at work: shown before it turns into "stuck", so a pile of
        # retries (and their dead letters) is seen while it builds up.
        return Q(state__in=ACTIVE_STATES, stuck=False, attempt__gt=1)
    if kind == OVERDUE:
        # Flagged by the sweeper at its next run; while no worker is alive that run never comes.
        return Q(state__in=ACTIVE_STATES, stuck=False, step_deadline__lt=now)
    raise ValueError(f"unknown kind of attention {kind!r}")


_ATTENTION_ORDER = {
    STUCK: ("stuck_since", "id"),
    FAILED: ("finished_at", "id"),
    RETRYING: ("step_started_at", "id"),
    OVERDUE: ("step_deadline", "id"),
}


def sagas_needing_attention(*, kind: str, now: datetime) -> QuerySet[SagaInstance]:
    """The sagas of one kind of trouble, the one that has waited longest first."""
    return SagaInstance.objects.filter(saga_attention_condition(kind=kind, now=now)).order_by(*_ATTENTION_ORDER[kind])


def saga_ids_of_idempotency_key(*, key: str, limit: int) -> list:
    """Sagas started under an idempotency key: the whole stored key, or the key as the API
    client sent it (stored as ``api:<client>:<key>``); the trigram index serves the suffix."""
    key = key.strip()
    if not key:
        return []
    match = Q(idempotency_key=key)
    if len(key) >= 3:
        match |= Q(idempotency_key__endswith=f":{key}")
    return list(SagaInstance.objects.filter(match).values_list("id", flat=True)[:limit])


@dataclass(frozen=True)
class SagaPosition:
    """Where a saga stands, and the last attempt it made of each step (and phase): enough to
    tell whether a message of one of its attempts is still the one it waits for."""

    saga_id: uuid.UUID
    state: str
    current_step: str
    phase: str
    attempt: int
    last_attempts: dict[tuple[str, str], int]

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def saga_positions(*, saga_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, SagaPosition]:
    """The positions of these sagas (those that exist), in two indexed queries."""
    ids = list(set(saga_ids))
    if not ids:
        return {}
    sagas = SagaInstance.objects.filter(pk__in=ids).only("id", "state", "current_step", "attempt")
    last: dict[uuid.UUID, dict[tuple[str, str], int]] = {}
    rows = (
        SagaStep.objects.filter(saga_id__in=ids)
        .values("saga_id", "step", "phase")
        .annotate(last=Max("attempt"))
        .order_by()
    )
    for row in rows:
        last.setdefault(row["saga_id"], {})[(row["step"], row["phase"])] = row["last"]
    return {
        saga.pk: SagaPosition(
            saga_id=saga.pk,
            state=saga.state,
            current_step=saga.current_step,
            phase=saga.phase,
            attempt=saga.attempt,
            last_attempts=last.get(saga.pk, {}),
        )
        for saga in sagas
    }
