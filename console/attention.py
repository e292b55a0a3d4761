"""The "needs attention" view's read model: what an operator must look at now, each count with
the first few of what it counts.

The liveness banner comes from the heartbeats the worker and beat write, never from the
sweeper: the sweeper runs on the worker, so with the worker down the sagas it would flag just
sit there, and a page built on its flags would look calm. Every count is served by an index
and every list is bounded, so the page costs the same with a hundred or a hundred thousand
sagas (see ``bench_dashboard``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from audit.selectors import open_violations, violation_counts
from common.heartbeat import Liveness, liveness
from outbox.models import DeadLetter
from outbox.selectors import dead_letter_count
from sagas.models import SagaInstance
from sagas.selectors import ATTENTION_KINDS, sagas_needing_attention

_ROW_FIELDS = (
    "id",
    "state",
    "aggregate",
    "aggregate_id",
    "current_step",
    "attempt",
    "stuck",
    "stuck_reason",
    "stuck_since",
    "failure_reason",
    "step_started_at",
    "step_deadline",
    "finished_at",
)


@dataclass(frozen=True)
class SagaGroup:
    kind: str
    label: str
    count: int
    sagas: list[SagaInstance]


@dataclass(frozen=True)
class NeedsAttention:
    generated_at: datetime
    liveness: Liveness
    groups: list[SagaGroup]
    dead_letters: list[DeadLetter]
    dead_letter_count: int
    violations: list[Any]
    violation_count: int

    @property
    def all_clear(self) -> bool:
        """Only when every process is alive and nothing is counted: "nothing to do" must never
        be said while the worker that would bring news is gone."""
        return (
            not self.liveness.missing
            and not any(group.count for group in self.groups)
            and not self.dead_letter_count
            and not self.violation_count
        )


def needs_attention(*, now: datetime | None = None, limit: int = 20) -> NeedsAttention:
    now = now or timezone.now()
    groups = []
    for kind, label in ATTENTION_KINDS.items():
        sagas = sagas_needing_attention(kind=kind, now=now)
        groups.append(
            SagaGroup(kind=kind, label=label, count=sagas.count(), sagas=list(sagas.only(*_ROW_FIELDS)[:limit]))
        )
    return NeedsAttention(
        generated_at=now,
        liveness=liveness(),
        groups=groups,
        dead_letters=list(
            DeadLetter.objects.filter(status=DeadLetter.Status.DEAD)
            .only("id", "consumer", "type", "correlation_id", "reason", "created_at")
            .order_by("-created_at")[:limit]
        ),
        dead_letter_count=dead_letter_count(),
        violations=open_violations(limit=limit),
        violation_count=sum(violation_counts().values()),
    )
